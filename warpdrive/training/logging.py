"""One directory per run, and what goes into it.

::

    runs/<env>-<algorithms>-<timestamp>/
        config.yaml          the resolved config (every default filled in)
        metrics.jsonl        one JSON object per iteration: iteration, env_steps, and the metrics
        tensorboard/         TensorBoard event files (x axis: env-steps)
        checkpoints/         see warpdrive.training.checkpoint
        learning_curve.png   mean episodic return per group, episode length and the env's metrics against
                             env-steps, written at the end

A tqdm progress bar (stderr) shows env-steps/s and the mean episodic return of each group. The first
iteration of a process compiles the kernels (or loads them from Numba's cache): it is announced, and kept
out of the bar's rate and ETA and out of ``charts/SPS`` (not logged for that row).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from warpdrive.core.device import set_numba_cache_dir
from warpdrive.core.env import Env
from warpdrive.core.targets import cache_name
from warpdrive.envs import label as label_of
from warpdrive.training.config import TrainConfig, config_to_dict

__all__ = ["MetricsFileError", "RunLogger", "new_run_dir", "plot_learning_curve", "read_metrics"]

RETURN_PREFIX = "charts/episodic_return/"
log = logging.getLogger(__name__)


def new_run_dir(config: TrainConfig) -> Path:
    """``<logging.root>/<env>-<algorithms>-<timestamp>`` (a suffix keeps it unique), or ``logging.run_dir``."""
    if config.logging.run_dir:
        return Path(config.logging.run_dir)
    algorithms = "+".join(dict.fromkeys(p.algorithm for p in config.policies.values()))
    base = Path(config.logging.root) / f"{label_of(config.env.name)}-{algorithms}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class MetricsFileError(ValueError):
    """A ``metrics.jsonl`` line other than the last is not a JSON object (the file was edited or damaged)."""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file. A last line cut short (its writer was killed mid-line) is left
    out, with a note (logged).

    Raises:
        MetricsFileError: any other line is not a JSON object (naming the file and line).
    """
    with open(path) as handle:
        lines = handle.read().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            if number == len(lines):  # no newline after it: a partial write
                log.info("%s:%d: left out a partial last line (%d characters), cut short when its run "
                            "was interrupted", path, number, len(line))
                break
            raise MetricsFileError(f"{path}:{number}: not a JSON object ({err}); only a last line cut short is "
                                   "left out: mend or delete that line") from None
        rows.append(row)
    return rows


def plot_learning_curve(rows: Iterable[dict[str, Any]], out: Path, title: str = "") -> Path | None:
    """Plot ``charts/episodic_return/<group>`` against ``env_steps`` to ``out`` (PNG), and beside it one panel
    per other episode statistic (``charts/episodic_length``, the env's ``env/<metric>``): returns alone can
    look flat while the env's own measures show the learning. ``None`` if no episode finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)
    groups = sorted({k[len(RETURN_PREFIX):] for r in rows for k in r if k.startswith(RETURN_PREFIX)})
    if not groups:
        return None
    others = ["charts/episodic_length", *sorted({k for r in rows for k in r if k.startswith("env/")})]
    others = [k for k in others if any(k in r for r in rows)]
    figure = Figure(figsize=(5 + 3.5 * len(others), 4), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 1 + len(others), squeeze=False)[0]

    def plot(axes: Any, key: str, label: str | None = None) -> None:
        points = [(r["env_steps"], r[key]) for r in rows if key in r]
        axes.plot([p[0] for p in points], [p[1] for p in points], label=label)
        axes.set_xlabel("env-steps")
        axes.grid(alpha=0.3)

    for group in groups:
        plot(panels[0], RETURN_PREFIX + group, group)
    panels[0].set_ylabel("mean episodic return")
    panels[0].legend()
    for axes, key in zip(panels[1:], others, strict=True):
        plot(axes, key)
        axes.set_title(key.split("/")[-1].replace("_", " "), fontsize=10)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out)
    return out


class RunLogger:
    """Writes a run's config, metrics (JSON lines and TensorBoard) and progress bar.

    Args:
        run_dir: the run directory (created if needed).
        config: the resolved config, written to ``config.yaml``.
        start_env_steps: where a resumed run starts; metrics rows logged after it by the interrupted run
            are dropped, so that the files read as one run.
        label: the progress bar's and messages' label (default: the env's).
        position: the progress bar's line, for runs that share the terminal (tqdm's ``position``).
    """

    def __init__(self, run_dir: Path, config: TrainConfig, start_env_steps: int = 0, label: str | None = None,
                 position: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.label = label_of(config.env.name) if label is None else label
        self.position = position
        self.closed = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = self.run_dir / "config.yaml"
        with open(self.config_path, "w") as handle:
            yaml.safe_dump(config_to_dict(config), handle, sort_keys=False)

        self.metrics_path = self.run_dir / "metrics.jsonl"
        kept = [r for r in read_metrics(self.metrics_path) if r["env_steps"] <= start_env_steps] \
            if start_env_steps and self.metrics_path.exists() else []
        with open(self.metrics_path, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)
        self._metrics = open(self.metrics_path, "a")  # noqa: SIM115 - open for the run's lifetime

        self.tensorboard_dir = self.run_dir / "tensorboard" if config.logging.tensorboard else None
        self._writer = None
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=start_env_steps or None)

        self.closed = False
        self._bar: Any = None  # created after the first iteration, which compiles
        self._compile_start: float | None = None
        self.learning_curve: Path | None = None

    def compiling(self, env: Env) -> None:
        """Say, before the first iteration, that it compiles the kernels (first run) or loads them."""
        cache = set_numba_cache_dir()
        # each compiled program is cached under its own name (see warpdrive.core.env.Env.program_name)
        first = not any(cache.glob(f"*/*{cache_name(env.program_name('step'))}*"))
        what = f"compiling kernels (first run; cached in {cache})" if first else f"loading kernels from {cache}"
        self._say(f"{self.label}: {what}, then the first iteration ...")
        self._compile_start = time.perf_counter()

    def _say(self, text: str) -> None:
        if self.config.logging.progress:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def log(self, iteration: int, env_steps: int, metrics: dict[str, float]) -> None:
        """Record one iteration's metrics."""
        first = self._bar is None
        if first:
            # its time is mostly compiling: no SPS, and the bar's rate and ETA start after it
            metrics = {k: v for k, v in metrics.items() if k != "charts/SPS"}
            if self._compile_start is not None:
                self._say(f"{self.label}: ready in {time.perf_counter() - self._compile_start:.1f} s")
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.config.total_env_steps, initial=env_steps, unit="step", unit_scale=True,
                             disable=not self.config.logging.progress, dynamic_ncols=True, desc=self.label,
                             position=self.position)
        row = {"iteration": iteration, "env_steps": env_steps, **metrics}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, env_steps)
        postfix = {} if first else {"SPS": f"{metrics['charts/SPS']:,.0f}"}
        for key, value in metrics.items():
            if key.startswith(RETURN_PREFIX):
                postfix[key[len(RETURN_PREFIX):]] = f"{value:.3g}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(env_steps - self._bar.n)

    def close(self) -> None:
        """Flush and close the writers; plot the learning curve if the config asks for it (once: closing
        again does nothing)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        self._metrics.close()
        if self._writer is not None:
            self._writer.close()
        if self.config.logging.learning_curve:
            title = f"{self.config.env.name}: {self.run_dir.name}"
            self.learning_curve = plot_learning_curve(read_metrics(self.metrics_path),
                                                      self.run_dir / "learning_curve.png", title)
