"""Checkpoints: networks as safetensors, everything else for an exact resume in a torch file.

A checkpoint is a pair of files in ``<run_dir>/checkpoints/`` with a manifest of their checksums, plus a
pointer to the newest::

    iter_000040.safetensors   every policy's networks, keys ``<policy>/<module>.<parameter>``
    iter_000040.pt            config, counters, optimisers, env state, RNG states (torch.save; loaded with
                              ``weights_only=True``: plain data and tensors only)
    iter_000040.json          {"name": ..., "iteration": 40, "env_steps": ..., "sha256": {file name: digest}}
    latest.json               {"name": "iter_000040", "iteration": 40, "env_steps": ...}

Every file is written atomically: to a temporary file in the same directory, flushed and fsync'ed, then
renamed over the target with ``os.replace``. The manifest follows the files it lists and ``latest.json``
comes last, so a crash at any point leaves the previous checkpoint whole and still pointed to. Loading
checks each file against its manifest's SHA-256 (a damaged disk, a truncated copy, zeroed bytes); a run
directory whose newest checkpoint (or ``latest.json``) is damaged falls back to the newest good one, of
the ``checkpoint.keep`` kept, with a warning naming the damaged file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import safetensors.torch
import torch

__all__ = ["Checkpoint", "CheckpointError", "atomic_write", "find_checkpoint", "load_checkpoint",
           "remove_temporary_files", "restore_rng_state", "rng_state", "save_checkpoint"]

LATEST = "latest.json"
_NAME = re.compile(r"iter_(\d+)")
_TMP = ".tmp-"  # temporary files are .<name>.tmp-<process id>
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: a file missing, damaged (not the bytes its manifest records) or
    unreadable. The message is one line and names the file."""


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP}{os.getpid()}")


def _atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(file)`` so that it is either the old file or the whole new one."""
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # make the rename itself durable
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporary_files(directory: Path) -> list[Path]:
    """Remove the temporary files left in ``directory`` by writes (:func:`atomic_write`) of processes killed
    mid-write; call it where no other process writes there, e.g. when a run resumes. Returns those removed."""
    mine = f"{_TMP}{os.getpid()}"
    removed = []
    for path in sorted(Path(directory).glob(f".*{_TMP}*")):
        if path.is_file() and not path.name.endswith(mine):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def rng_state() -> dict[str, Any]:
    """The state of every random generator the trainer draws from: torch's (CPU, and each CUDA device's
    where CUDA is available), NumPy's and Python's."""
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng_state(rng: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states as tensors and plain values, loadable with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss_next = state["python"]
    return {**state,
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def _native_rng(state: dict[str, Any]) -> dict[str, Any]:
    n, p = state["numpy"], state["python"]
    return {**state,
            "numpy": (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]),
            "python": (p["version"], tuple(p["internal"]), p["gauss_next"])}


class Checkpoint:
    """A checkpoint on disk: ``<dir>/<name>.safetensors`` and ``<dir>/<name>.pt``, with their checksums in
    ``<dir>/<name>.json``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = Path(directory)
        self.name = name

    @property
    def models_path(self) -> Path:
        return self.directory / f"{self.name}.safetensors"

    @property
    def state_path(self) -> Path:
        return self.directory / f"{self.name}.pt"

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"{self.name}.json"

    @property
    def run_dir(self) -> Path:
        """The run directory this checkpoint belongs to (the parent of ``checkpoints/``)."""
        return self.directory.parent

    def _digests(self) -> dict[str, str]:
        """The manifest's SHA-256 of each file, by file name."""
        try:
            digests = json.loads(self.manifest_path.read_text())["sha256"]
            if not all(isinstance(digests[p.name], str) for p in (self.models_path, self.state_path)):
                raise TypeError("a digest is not a string")
        except FileNotFoundError:
            raise CheckpointError(f"{self.manifest_path} is missing: checkpoint {self.name} was not completely "
                                  "written (or was saved by a version without checksums)") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.manifest_path} is damaged ({type(err).__name__}: {err})") from None
        return digests

    def read_verified(self, path: Path) -> bytes:
        """The bytes of ``path`` (:attr:`models_path` or :attr:`state_path`), checked against the manifest.

        Raises:
            CheckpointError: the file or the manifest is missing or damaged.
        """
        expected = self._digests()[path.name]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{path} cannot be read: {err.strerror or err}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CheckpointError(f"{path} is damaged: its SHA-256 is {actual[:16]}..., its manifest "
                                  f"{self.manifest_path.name} records {expected[:16]}... ({len(data)} bytes)")
        return data

    def verify(self) -> None:
        """Check both files against the manifest (raises :class:`CheckpointError`)."""
        for path in (self.models_path, self.state_path):
            self.read_verified(path)

    def load_models(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        data = self.read_verified(self.models_path)
        try:
            tensors = safetensors.torch.load(data)
        except Exception as err:  # the checksum matched: written damaged, which only a bug does
            raise CheckpointError(f"{self.models_path} cannot be loaded: {type(err).__name__}: {err}") from None
        return {key: value.to(device) for key, value in tensors.items()}

    def load_state(self) -> dict[str, Any]:
        data = self.read_verified(self.state_path)
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # as in load_models
            raise CheckpointError(f"{self.state_path} cannot be loaded: {type(err).__name__}: {err}") from None
        for own in _own_states(state["trainer"]):
            own["rng"] = _native_rng(own["rng"])
        return state

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory / self.name)!r})"


def _own_states(trainer_state: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-process parts of a trainer's state: itself, or each rank's of a multi-process run."""
    return trainer_state.get("ranks", [trainer_state])


def save_checkpoint(trainer: Any, directory: Path, config: dict[str, Any], *, keep: int = 2,
                    replay_buffer: bool = True) -> Checkpoint:
    """Save ``trainer``'s networks and state as ``iter_<iteration>`` in ``directory``; keep the newest
    ``keep`` checkpoints. In a multi-process run, call it on rank 0 while the other ranks call
    ``trainer.state_dict()`` (which gathers every rank's own state at rank 0).

    Args:
        trainer: a :class:`~warpdrive.training.trainer.Trainer`.
        config: the resolved config as plain data (stored so that the checkpoint is self-contained).
        replay_buffer: include off-policy replay buffers.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(directory, f"iter_{trainer.iteration:06d}")
    tensors = {k: v.contiguous().cpu() for k, v in trainer.model_tensors().items()}
    trainer_state = trainer.state_dict()
    for own in _own_states(trainer_state):
        own["rng"] = _plain_rng(own["rng"])
        if not replay_buffer:
            for policy_state in own["policies"].values():
                policy_state.pop("replay", None)
    state = {"config": config, "trainer": trainer_state}
    buffer = io.BytesIO()
    torch.save(state, buffer)

    pointer = {"name": checkpoint.name, "iteration": trainer.iteration, "env_steps": trainer.env_steps}
    digests = {}
    for path, data in ((checkpoint.models_path, safetensors.torch.save(tensors)),
                       (checkpoint.state_path, buffer.getbuffer())):
        digests[path.name] = hashlib.sha256(data).hexdigest()
        _atomic_write_bytes(path, data)
    _atomic_write_bytes(checkpoint.manifest_path, json.dumps({**pointer, "sha256": digests}, indent=1).encode())
    _atomic_write_bytes(directory / LATEST, json.dumps(pointer).encode())

    for old in _names(directory)[keep:]:
        if old != checkpoint.name:
            old_checkpoint = Checkpoint(directory, old)
            # the manifest first: a checkpoint half deleted is one without a manifest, never loaded
            for path in (old_checkpoint.manifest_path, old_checkpoint.models_path, old_checkpoint.state_path):
                path.unlink(missing_ok=True)
    return checkpoint


def _names(directory: Path) -> list[str]:
    """The names of the checkpoints (whole or not) in ``directory``, newest first."""
    names = {p.stem for p in directory.glob("iter_*") if _NAME.fullmatch(p.stem)}
    return sorted(names, key=lambda name: int(name[5:]), reverse=True)


def find_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint that ``path`` names, its files verified against its manifest: one checkpoint's
    ``.pt``, ``.safetensors`` or ``.json`` file; or a run directory or its ``checkpoints/``, for the one
    ``latest.json`` names, else (``latest.json`` or that checkpoint damaged: a warning names the file) the
    newest older one that is whole.

    Raises:
        FileNotFoundError: ``path`` holds no checkpoint.
        CheckpointError: the checkpoint named is damaged, or every checkpoint of the directory is.
    """
    path = Path(path)
    if path.is_file() and path.suffix in (".pt", ".safetensors", ".json") and _NAME.fullmatch(path.stem):
        checkpoint = Checkpoint(path.parent, path.stem)
        checkpoint.verify()
        return checkpoint
    if path.name == LATEST:
        path = path.parent
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    names = _names(directory) if directory.is_dir() else []
    pointer = directory / LATEST
    if not pointer.is_file() and not names:
        raise FileNotFoundError(f"no checkpoint found at {path}: expected a run directory, its checkpoints/ "
                                f"directory (with {LATEST}), or a checkpoint's .pt or .safetensors file")
    try:
        newest = json.loads(pointer.read_text())["name"]
        if not isinstance(newest, str) or not _NAME.fullmatch(newest):
            raise ValueError(f"'name' is {newest!r}")
        # checkpoints newer than the pointer are ones whose save did not finish
        names = [newest, *(n for n in names if int(n[5:]) < int(newest[5:]))]
    except FileNotFoundError:
        log.warning("%s is missing; looking for the newest whole checkpoint", pointer)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s is damaged (%s: %s); looking for the newest whole checkpoint", pointer,
                    type(err).__name__, err)
    problems = []
    for name in names:
        checkpoint = Checkpoint(directory, name)
        try:
            checkpoint.verify()
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("%s; trying the checkpoint before it", err)
            continue
        if problems:
            log.warning("using checkpoint %s (iteration %d) instead", name, int(name[5:]))
        return checkpoint
    raise CheckpointError(f"no whole checkpoint in {directory}: {'; '.join(problems) or 'none was saved'}")


def load_checkpoint(path: str | Path) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint at ``path`` (see :func:`find_checkpoint`) and its state (``config``, ``trainer``)."""
    checkpoint = find_checkpoint(path)
    return checkpoint, checkpoint.load_state()
