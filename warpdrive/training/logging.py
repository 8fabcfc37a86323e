"""One directory per run, and what goes into it.

::

    runs/<env>-<algorithms>-<timestamp>/
        config.yaml          the resolved config (every default filled in)
        metrics.jsonl        one JSON object per iteration: iteration, env_steps, and the metrics
        tensorboard/         TensorBoard event files (x axis: env-steps)
        checkpoints/         see warpdrive.training.checkpoint
        learning_curve.png   mean episodic return per group against env-steps, written at the end

A tqdm progress bar (stderr) shows env-steps/s and the mean episodic return of each group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from warpdrive.envs import label
from warpdrive.training.config import TrainConfig, config_to_dict

__all__ = ["RunLogger", "new_run_dir", "plot_learning_curve", "read_metrics"]

RETURN_PREFIX = "charts/episodic_return/"


def new_run_dir(config: TrainConfig) -> Path:
    """``<logging.root>/<env>-<algorithms>-<timestamp>`` (a suffix keeps it unique), or ``logging.run_dir``."""
    if config.logging.run_dir:
        return Path(config.logging.run_dir)
    algorithms = "+".join(dict.fromkeys(p.algorithm for p in config.policies.values()))
    base = Path(config.logging.root) / f"{label(config.env.name)}-{algorithms}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_learning_curve(rows: Iterable[dict[str, Any]], out: Path, title: str = "") -> Path | None:
    """Plot ``charts/episodic_return/<group>`` against ``env_steps`` to ``out`` (PNG); ``None`` if no
    episode finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)
    groups = sorted({k[len(RETURN_PREFIX):] for r in rows for k in r if k.startswith(RETURN_PREFIX)})
    if not groups:
        return None
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for group in groups:
        points = [(r["env_steps"], r[RETURN_PREFIX + group]) for r in rows if RETURN_PREFIX + group in r]
        axes.plot([p[0] for p in points], [p[1] for p in points], label=group)
    axes.set_xlabel("env-steps")
    axes.set_ylabel("mean episodic return")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
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
    """

    def __init__(self, run_dir: Path, config: TrainConfig, start_env_steps: int = 0) -> None:
        self.run_dir = Path(run_dir)
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

        from tqdm.auto import tqdm

        self._bar = tqdm(total=config.total_env_steps, initial=start_env_steps, unit="step", unit_scale=True,
                         disable=not config.logging.progress, dynamic_ncols=True, desc=label(config.env.name))
        self.learning_curve: Path | None = None

    def log(self, iteration: int, env_steps: int, metrics: dict[str, float]) -> None:
        """Record one iteration's metrics."""
        row = {"iteration": iteration, "env_steps": env_steps, **metrics}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, env_steps)
        postfix = {"SPS": f"{metrics.get('charts/SPS', 0.0):,.0f}"}
        for key, value in metrics.items():
            if key.startswith(RETURN_PREFIX):
                postfix[key[len(RETURN_PREFIX):]] = f"{value:.3g}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(env_steps - self._bar.n)

    def close(self) -> None:
        """Flush and close the writers; plot the learning curve if the config asks for it."""
        self._bar.close()
        self._metrics.close()
        if self._writer is not None:
            self._writer.close()
        if self.config.logging.learning_curve:
            title = f"{self.config.env.name}: {self.run_dir.name}"
            self.learning_curve = plot_learning_curve(read_metrics(self.metrics_path),
                                                      self.run_dir / "learning_curve.png", title)
