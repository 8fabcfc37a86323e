"""Checkpoints: networks as safetensors, everything else for an exact resume in a torch file.

A checkpoint is a pair of files in ``<run_dir>/checkpoints/``, plus a pointer to the newest::

    iter_000040.safetensors   every policy's networks, keys ``<policy>/<module>.<parameter>``
    iter_000040.pt            config, counters, optimisers, env state, RNG states (torch.save; loaded with
                              ``weights_only=True``: plain data and tensors only)
    latest.json               {"name": "iter_000040", "iteration": 40, "env_steps": ...}

Every file is written atomically: to a temporary file in the same directory, flushed and fsync'ed, then
renamed over the target with ``os.replace``. ``latest.json`` is written last, so a crash at any point
leaves the previous checkpoint whole and still pointed to.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import safetensors.torch
import torch

__all__ = ["Checkpoint", "atomic_write", "find_checkpoint", "load_checkpoint", "restore_rng_state", "rng_state",
           "save_checkpoint"]

LATEST = "latest.json"


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(file)`` so that it is either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
    """A checkpoint on disk: ``<dir>/<name>.safetensors`` and ``<dir>/<name>.pt``."""

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
    def run_dir(self) -> Path:
        """The run directory this checkpoint belongs to (the parent of ``checkpoints/``)."""
        return self.directory.parent

    def load_models(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return safetensors.torch.load_file(str(self.models_path), device=str(device))

    def load_state(self) -> dict[str, Any]:
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
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

    atomic_write(checkpoint.models_path, lambda f: f.write(safetensors.torch.save(tensors)))
    atomic_write(checkpoint.state_path, lambda f: torch.save(state, f))
    pointer = {"name": checkpoint.name, "iteration": trainer.iteration, "env_steps": trainer.env_steps}
    atomic_write(directory / LATEST, lambda f: f.write(json.dumps(pointer).encode()))

    names = sorted(p.stem for p in directory.glob("iter_*.pt"))
    for old in names[:-keep]:
        if old != checkpoint.name:
            (directory / f"{old}.safetensors").unlink(missing_ok=True)
            (directory / f"{old}.pt").unlink(missing_ok=True)
    return checkpoint


def find_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint that ``path`` names: a run directory or its ``checkpoints/`` (the newest one), or one
    checkpoint's ``.pt`` or ``.safetensors`` file."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pt", ".safetensors"):
        checkpoint = Checkpoint(path.parent, path.stem)
    else:
        directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        pointer = directory / LATEST
        if not pointer.is_file():
            raise FileNotFoundError(f"no checkpoint found at {path}: expected a run directory, its checkpoints/ "
                                    f"directory (with {LATEST}), or a checkpoint's .pt or .safetensors file")
        checkpoint = Checkpoint(directory, json.loads(pointer.read_text())["name"])
    for file in (checkpoint.models_path, checkpoint.state_path):
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint.name} is incomplete: {file} is missing")
    return checkpoint


def load_checkpoint(path: str | Path) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint at ``path`` (see :func:`find_checkpoint`) and its state (``config``, ``trainer``)."""
    checkpoint = find_checkpoint(path)
    return checkpoint, checkpoint.load_state()
