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

__all__ = ["RESUMABLE", "Run", "RunResult", "resume_changes", "train", "trainer_from_checkpoint"]

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
    run = Run(config, resume=resume)
    try:
        while not run.done:
            run.train_iteration()
        return run.finish()
    finally:
        run.close()


class Run:
    """One run taken an iteration at a time: :func:`train` loops over it, and
    :func:`~warpdrive.training.seeds.train_seeds` steps several at once.

    Construction builds the trainer (from ``resume``'s checkpoint if given), the run directory and its
    logger; :meth:`train_iteration` trains, logs and checkpoints one iteration; :meth:`finish` saves the
    final checkpoint and closes the run's files; :meth:`close` (also after an error) closes them.

    Args:
        resume: as :func:`train` takes it.
        progress_label: the progress bar's label (default: the env's), e.g. ``seed 3`` for runs that share
            the terminal; ``progress_position`` its line among theirs.
    """

    def __init__(self, config: TrainConfig, *, resume: str | Path | None = None, progress_label: str | None = None,
                 progress_position: int | None = None) -> None:
        self.ranks = ranks = setup(config.device)  # None in a one-process run
        checkpoint = None
        if resume is not None:  # before building anything: the checkpoint may not fit this config
            checkpoint, state = load_checkpoint(resume)
            changes = resume_changes(state["config"], config_to_dict(config))
            if ranks is None or ranks.is_main:
                if changes:
                    log.info("resuming %s with %s", checkpoint.name, "; ".join(changes))
                for path in remove_temporary_files(checkpoint.directory):
                    log.info("removed %s, left by a checkpoint save that was interrupted", path)
        self.trainer = trainer = Trainer(config, ranks)
        if checkpoint is not None:
            trainer.load_model_tensors(checkpoint.load_models(trainer.device))
            trainer.load_state_dict(state["trainer"])
        run_dir = checkpoint.run_dir if checkpoint is not None else new_run_dir(config)
        if ranks is not None:
            run_dir = ranks.from_main(run_dir)  # its name has rank 0's clock time
        self.run_dir = run_dir
        self.logger = RunLogger(run_dir, config, start_env_steps=trainer.env_steps, label=progress_label,
                                position=progress_position) if trainer.is_main else None
        self.config = config
        self._config_data = config_to_dict(config)
        self.checkpoint = checkpoint
        self._saved_at = trainer.iteration if checkpoint is not None else None
        self.metrics: dict[str, float] = {}
        if self.logger is not None:
            self.logger.compiling(trainer.env)

    @property
    def done(self) -> bool:
        """True once ``total_env_steps`` have been trained."""
        return self.trainer.done

    def train_iteration(self) -> dict[str, float]:
        """One iteration of the trainer, logged, and checkpointed where ``checkpoint.every`` says; returns
        its metrics."""
        trainer = self.trainer
        self.metrics = trainer.train_iteration()
        if self.logger is not None:
            self.logger.log(trainer.iteration, trainer.env_steps, self.metrics)
        every = self.config.checkpoint.every
        if every and trainer.iteration % every == 0:
            self.checkpoint, self._saved_at = self._save(), trainer.iteration
        return self.metrics

    def finish(self) -> RunResult:
        """Save the final checkpoint (where ``checkpoint.at_end`` asks and the last iteration has none), close
        the run (plotting its learning curve; see :meth:`close`) and return where its results are."""
        trainer = self.trainer
        if self.config.checkpoint.at_end and self._saved_at != trainer.iteration:
            self.checkpoint = self._save()
        env_steps = trainer.env_steps
        self.close()
        if self.ranks is not None:
            self.ranks.close()  # not after an error: torchrun stops the other ranks
        if self.logger is None:  # a rank other than 0: rank 0 wrote the run directory
            return RunResult(self.run_dir, self.run_dir / "config.yaml", self.run_dir / "metrics.jsonl", None, None,
                             None, env_steps, self.metrics, rank=0 if self.ranks is None else self.ranks.rank)
        return RunResult(self.run_dir, self.logger.config_path, self.logger.metrics_path, self.logger.tensorboard_dir,
                         self.logger.learning_curve, self.checkpoint, env_steps, self.metrics)

    def close(self) -> None:
        """Close the run's files and its trainer (:meth:`Trainer.close`); the run cannot train after. Again: a
        no-op."""
        if self.logger is not None:
            self.logger.close()
        self.trainer.close()

    def _save(self) -> Checkpoint | None:
        if not self.trainer.is_main:
            self.trainer.state_dict()  # take part in rank 0's gathering of every rank's own state
            return None
        spec = self.config.checkpoint
        return save_checkpoint(self.trainer, self.run_dir / "checkpoints", self._config_data, keep=spec.keep,
                               replay_buffer=spec.replay_buffer)


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
