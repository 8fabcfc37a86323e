"""``python killed_run.py POINT ARGS...``: the ``warpdrive`` command with ARGS, killed with SIGKILL at POINT of
its 4th iteration, for tests/training/test_checkpoint.py. The kill comes from the process itself, at one
exact point of the code, so the tests cannot race it.

POINT is one of:

- ``update``: after the 4th iteration's update changed the networks in memory, before anything is logged;
- ``metrics``: halfway through writing the 4th iteration's line of metrics.jsonl;
- ``checkpoint``: halfway through writing checkpoint ``iter_000004.safetensors`` (to its temporary file);
- ``pointer``: after checkpoint ``iter_000004`` and its manifest are written, before ``latest.json`` is.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

from warpdrive import cli
from warpdrive.training import checkpoint, logging, trainer

ITERATION = 4
CHECKPOINT = f"iter_{ITERATION:06d}"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_update() -> None:
    update = trainer.Trainer.update

    def patched(self: trainer.Trainer) -> Any:
        losses = update(self)
        if self.iteration == ITERATION - 1:  # counted after the update
            die()
        return losses

    trainer.Trainer.update = patched  # type: ignore[method-assign]


def kill_in_metrics() -> None:
    log = logging.RunLogger.log

    def patched(self: logging.RunLogger, iteration: int, env_steps: int, metrics: dict[str, float]) -> None:
        if iteration == ITERATION:
            write = self._metrics.write

            def half_write(text: str) -> int:
                written = write(text[: len(text) // 2])
                self._metrics.flush()
                die()
                return written

            self._metrics.write = half_write  # type: ignore[method-assign]
        log(self, iteration, env_steps, metrics)

    logging.RunLogger.log = patched  # type: ignore[method-assign]


def kill_in_checkpoint() -> None:
    atomic_write = checkpoint.atomic_write

    def patched(path: Path, write: Any) -> None:
        if path.name != f"{CHECKPOINT}.safetensors":
            return atomic_write(path, write)

        def half(handle: IO[bytes]) -> None:
            class Half:
                def write(self, data: bytes) -> None:
                    handle.write(bytes(data)[: len(data) // 2])
                    handle.flush()
                    die()

            write(Half())

        return atomic_write(path, half)

    checkpoint.atomic_write = patched  # type: ignore[assignment]


def kill_before_pointer() -> None:
    atomic_write = checkpoint.atomic_write

    def patched(path: Path, write: Any) -> None:
        if path.name == checkpoint.LATEST and (path.parent / f"{CHECKPOINT}.json").exists():
            die()
        return atomic_write(path, write)

    checkpoint.atomic_write = patched  # type: ignore[assignment]


POINTS = {"update": kill_in_update, "metrics": kill_in_metrics, "checkpoint": kill_in_checkpoint,
          "pointer": kill_before_pointer}

if __name__ == "__main__":
    point, *args = sys.argv[1:]
    POINTS[point]()
    cli.main(args)
    raise SystemExit("the run was not killed")
