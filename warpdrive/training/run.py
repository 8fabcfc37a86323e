"""A whole run: trainer, run directory, metrics, checkpoints, resume; and loading a trained run back."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warpdrive.core.typed import ConfigError
from warpdrive.training.checkpoint import Checkpoint, load_checkpoint, remove_temporary_files, save_checkpoint
from warpdrive.training.config import TrainConfig, config_to_dict, load_config
from warpdrive.training.distributed import setup
from warpdrive.training.logging import RunLogger, new_run_dir
from warpdrive.training.trainer import Trainer

__all__ = ["RESUMABLE", "RunResult", "resume_changes", "train", "trainer_from_checkpoint"]

log = logging.getLogger(__name__)

#: The config keys (``fnmatch`` patterns) that a resumed run may change: none changes what the checkpoint
#: holds (the env and its replicas, the policies, their networks, optimiser states and buffers, the seed).
#: The optimiser's settings are applied at each update (``--resume RUN policies.shared.optimizer.lr=1e-4``).
RESUMABLE = ("total_env_steps", "logging.*", "checkpoint.*", "policies.*.optimizer.*", "torch_threads",
             "guard_nonfinite", "cuda_graph", "mixed_precision", "env.launch")
#: Keys a resumed run ignores: it goes on in the checkpoint's run directory.
_IGNORED_ON_RESUME = ("logging.root", "logging.run_dir")


@dataclass
class RunResult:
    """Where a finished run's results are."""

    run_dir: Path
    config_path: Path
    metrics_path: Path
    tensorboard_dir: Path | None
    learning_curve: Path | None
    checkpoint: Checkpoint | None
    env_steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    rank: int = 0
    """This process's rank in a multi-process run (torchrun); only rank 0 writes the files above."""


def train(config: TrainConfig, *, resume: str | Path | None = None) -> RunResult:
    """Train to ``config.total_env_steps``, logging and checkpointing into a run directory.

    Args:
        resume: a run directory or checkpoint (see :func:`~warpdrive.training.checkpoint.find_checkpoint`):
            restore its networks, optimisers, env state and random generators and go on in its run
            directory. Where the run is deterministic (the CPU), the result is bit-identical to an
            uninterrupted run with the same config (and the same number of processes).

    Started by ``torchrun`` with several processes, this is one of them (see
    :mod:`~warpdrive.training.distributed`): every process trains ``env.num_envs`` replicas of its own; rank
    0 alone writes the run directory (metrics, progress bar, checkpoints) and returns its metrics.
    """
    ranks = setup(config.device)  # None in a one-process run
    checkpoint = None
    if resume is not None:  # before building anything: the checkpoint may not fit this config
        checkpoint, state = load_checkpoint(resume)
        changes = resume_changes(state["config"], config_to_dict(config))
        if ranks is None or ranks.is_main:
            if changes:
                log.info("resuming %s with %s", checkpoint.name, "; ".join(changes))
            for path in remove_temporary_files(checkpoint.directory):
                log.info("removed %s, left by a checkpoint save that was interrupted", path)
    trainer = Trainer(config, ranks)
    if checkpoint is not None:
        trainer.load_model_tensors(checkpoint.load_models(trainer.device))
        trainer.load_state_dict(state["trainer"])
    run_dir = checkpoint.run_dir if checkpoint is not None else new_run_dir(config)
    if ranks is not None:
        run_dir = ranks.from_main(run_dir)  # its name has rank 0's clock time
    logger = RunLogger(run_dir, config, start_env_steps=trainer.env_steps) if trainer.is_main else None
    config_data = config_to_dict(config)
    spec = config.checkpoint
    saved_at = trainer.iteration if checkpoint is not None else None
    metrics: dict[str, float] = {}

    def save() -> Checkpoint | None:
        if not trainer.is_main:
            trainer.state_dict()  # take part in rank 0's gathering of every rank's own state
            return None
        return save_checkpoint(trainer, run_dir / "checkpoints", config_data, keep=spec.keep,
                               replay_buffer=spec.replay_buffer)

    if logger is not None:
        logger.compiling(trainer.env)
    try:
        while not trainer.done:
            metrics = trainer.train_iteration()
            if logger is not None:
                logger.log(trainer.iteration, trainer.env_steps, metrics)
            if spec.every and trainer.iteration % spec.every == 0:
                checkpoint, saved_at = save(), trainer.iteration
        if spec.at_end and saved_at != trainer.iteration:
            checkpoint = save()
    finally:
        if logger is not None:
            logger.close()
    if ranks is not None:
        ranks.close()  # not after an error: torchrun stops the other ranks
    if logger is None:  # a rank other than 0: rank 0 wrote the run directory
        return RunResult(run_dir, run_dir / "config.yaml", run_dir / "metrics.jsonl", None, None, None,
                         trainer.env_steps, metrics, rank=0 if ranks is None else ranks.rank)
    return RunResult(run_dir, logger.config_path, logger.metrics_path, logger.tensorboard_dir,
                     logger.learning_curve, checkpoint, trainer.env_steps, metrics)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def resume_changes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The changes ``new`` makes to ``saved`` (resolved configs as plain data), as ``key: old -> new``.

    Raises:
        ConfigError: a change that a resumed run cannot make (any key outside :data:`RESUMABLE`), naming
            every such key with its two values.
    """
    old_flat, new_flat = _flatten(saved), _flatten(new)
    changed = [key for key in dict.fromkeys([*old_flat, *new_flat])
               if (key in old_flat, old_flat.get(key)) != (key in new_flat, new_flat.get(key))
               and key not in _IGNORED_ON_RESUME]

    def show(flat: dict[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "(unset)"

    describe = [f"{key}: {show(old_flat, key)} -> {show(new_flat, key)}" for key in changed]
    refused = [text for key, text in zip(changed, describe, strict=True)
               if not any(fnmatch.fnmatchcase(key, allowed) for allowed in RESUMABLE)]
    if refused:
        raise ConfigError("--resume", f"the checkpoint was saved with another config ({'; '.join(refused)}); a "
                          f"resumed run may change only {', '.join(RESUMABLE)}: start a new run for the others")
    return describe


def trainer_from_checkpoint(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Trainer, Checkpoint]:
    """A fresh trainer built from a checkpoint's config (with ``overrides``, e.g. ``env.num_envs=16``),
    holding the checkpoint's networks (for evaluation and rendering; the env starts anew)."""
    checkpoint, state = load_checkpoint(path)
    config = load_config(state["config"], list(overrides))
    trainer = Trainer(config)
    trainer.load_model_tensors(checkpoint.load_models(trainer.device))
    return trainer, checkpoint
