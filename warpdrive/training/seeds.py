"""Several seeds of one config: independent runs in this process, at once on a GPU, and their aggregate.

``warpdrive train CONFIG --seeds N`` trains the config with seeds ``seed, seed + 1, ..., seed + N - 1``, each a
whole run of its own (networks, optimisers, env replicas, random generator, checkpoints) in
``<group>/seed_<s>``. Each run draws from its own generator (:attr:`Trainer.generator`), so a seed's run is the
run ``warpdrive train CONFIG seed=<s>`` would make (bit for bit on the CPU).

On a GPU the runs train at once (``--concurrent K``: at most K at a time, default all): one thread and one
CUDA stream per run, so that one run's kernels fill the GPU while another's host code launches the next (a
small env's rollout step or update leaves most of an H200 idle). Their CUDA graphs are captured one at a
time (:func:`~warpdrive.training.graphs.capture`). On the CPU they run one after another: Numba's CPU
kernels already use every core and cannot be called from several threads at once.

Then it writes beside them what a paper reports (as rliable and marl-eval do, with the mean as the point
estimate):

- ``aggregate.jsonl``: per logged env-step count that every run logged, the mean over the seeds of each
  group's mean episodic return and its 95% percentile-bootstrap interval (resampling the seeds);
- ``summary.json``: each seed's final return per group (its last logged one) and their mean and interval;
- ``aggregate.png``: the mean curves with their intervals as bands (:func:`plot_seed_curves` draws the same
  for curves gathered otherwise, as the benchmark scripts do).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warpdrive.core.typed import ConfigError
from warpdrive.training.config import TrainConfig
from warpdrive.training.graphs import new_stream
from warpdrive.training.logging import RETURN_PREFIX, new_run_dir, read_metrics
from warpdrive.training.run import Run, RunResult, train
from warpdrive.training.trainer import resolve_device

__all__ = ["SeedsResult", "aggregate_runs", "bootstrap_interval", "plot_seed_curves", "train_seeds", "train_together"]

#: bootstrap resamples of the seeds per estimate
RESAMPLES = 10_000
_RETURN_AXIS = "mean episodic return (95% bootstrap interval)"


@dataclasses.dataclass
class SeedsResult:
    """Where the runs of :func:`train_seeds` and their aggregate are."""

    group_dir: Path
    runs: list[RunResult]
    aggregate_path: Path
    summary_path: Path
    curve: Path | None
    summary: dict[str, Any]


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of ``values`` (the seeds resampled with replacement);
    ``(v, v)`` for a single value. Deterministic for a given ``seed``."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _estimate(values: list[float]) -> dict[str, float]:
    low, high = bootstrap_interval(values)
    return {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high}


def aggregate_runs(runs: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(rows, finals)`` of several runs' metrics rows: per env-step count logged by every run, each group's
    return estimated over the runs that have one there; and per group, the estimate of the runs' last
    returns with each run's own (``per_seed``)."""
    by_steps = [{row["env_steps"]: row for row in rows} for rows in runs]
    common = sorted(set.intersection(*(set(steps) for steps in by_steps))) if by_steps else []
    keys = sorted({key for rows in runs for row in rows for key in row if key.startswith(RETURN_PREFIX)})
    aggregate = []
    for steps in common:
        row: dict[str, Any] = {"env_steps": steps}
        for key in keys:
            values = [float(run[steps][key]) for run in by_steps if key in run[steps]]
            if values:
                row[key[len(RETURN_PREFIX):]] = {**_estimate(values), "seeds": len(values)}
        aggregate.append(row)
    finals: dict[str, Any] = {}
    for key in keys:
        last = [next((float(r[key]) for r in reversed(rows) if key in r), None) for rows in runs]
        values = [v for v in last if v is not None]
        if values:
            finals[key[len(RETURN_PREFIX):]] = {**_estimate(values), "per_seed": last}
    return aggregate, finals


def plot_seed_curves(curves: Mapping[str, Mapping[int, Sequence[float]]], out: Path, title: str,
                     ylabel: str = _RETURN_AXIS,
                     baseline: tuple[str, float] | None = None) -> Path:
    """Plot learning curves over seeds: for each label, ``curves[label][env_steps]`` holds one value per seed,
    drawn as their mean with its 95% percentile-bootstrap interval as a band (the estimate of
    :func:`aggregate_runs`); ``baseline``: a ``(label, value)`` drawn as a dashed line (random actions' return)."""
    estimates = {}
    for label, by_steps in curves.items():
        seeds = max(len(values) for values in by_steps.values())
        estimates[f"{label} ({seeds} seeds)" if seeds > 1 else label] = [
            (steps, _estimate(list(by_steps[steps]))) for steps in sorted(by_steps)]
    return _plot_estimates(estimates, out, title, ylabel, baseline)


def _plot_estimates(curves: Mapping[str, Sequence[tuple[int, dict[str, float]]]], out: Path, title: str,
                    ylabel: str, baseline: tuple[str, float] | None = None) -> Path:
    """Each label's ``(env_steps, {"mean", "ci_low", "ci_high"})`` points as a line and a band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, points in curves.items():
        steps = [p[0] for p in points]
        (line,) = axes.plot(steps, [p[1]["mean"] for p in points], label=label)
        axes.fill_between(steps, [p[1]["ci_low"] for p in points], [p[1]["ci_high"] for p in points],
                          color=line.get_color(), alpha=0.25)
    if baseline is not None:
        axes.axhline(baseline[1], color="gray", linestyle="--", label=baseline[0])
    axes.set_xlabel("env-steps")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out)
    return out


def train_seeds(config: TrainConfig, count: int, concurrent: int | None = None) -> SeedsResult:
    """Train ``config`` with ``count`` seeds (``config.seed`` and the ``count - 1`` after it), each in
    ``<group>/seed_<s>``, then aggregate their returns (see the module docstring).

    Args:
        concurrent: how many runs train at once on a CUDA device (default: all ``count``); 1 on the CPU.

    Raises:
        ConfigError: ``concurrent`` below 1, or above 1 on the CPU.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    device = resolve_device(config.device)
    if concurrent is None:
        concurrent = count if device.type == "cuda" else 1
    if concurrent < 1:
        raise ConfigError("--concurrent", f"expected at least 1 run at a time, got {concurrent}")
    if concurrent > 1 and device.type != "cuda":
        raise ConfigError("--concurrent", f"{concurrent} runs at once need a CUDA device (this run's is {device}): "
                                          "on the CPU the seeds run one after another")
    group_dir = new_run_dir(config)
    seeds = [config.seed + i for i in range(count)]

    def seed_config(seed: int) -> TrainConfig:
        logging_spec = dataclasses.replace(config.logging, run_dir=str(group_dir / f"seed_{seed}"))
        return dataclasses.replace(config, seed=seed, logging=logging_spec)

    if concurrent == 1:
        runs = [train(seed_config(seed)) for seed in seeds]
    else:
        runs = []
        for first in range(0, count, concurrent):
            batch = seeds[first:first + concurrent]
            runs += train_together([seed_config(seed) for seed in batch], [f"seed {seed}" for seed in batch])
    rows, finals = aggregate_runs([read_metrics(run.metrics_path) for run in runs])
    aggregate_path = group_dir / "aggregate.jsonl"
    aggregate_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {"env": config.env.name, "seeds": seeds, "env_steps": [run.env_steps for run in runs],
               "concurrent": concurrent, "final_return": finals, "confidence": 0.95,
               "bootstrap_resamples": RESAMPLES}
    summary_path = group_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    groups = sorted({key for row in rows for key in row if key != "env_steps"})
    curve = _plot_estimates({group: [(row["env_steps"], row[group]) for row in rows if group in row]
                             for group in groups}, group_dir / "aggregate.png", f"{config.env.name}, {count} seeds",
                            _RETURN_AXIS) if groups else None
    return SeedsResult(group_dir, runs, aggregate_path, summary_path, curve, summary)


def train_together(configs: Sequence[TrainConfig], labels: Sequence[str]) -> list[RunResult]:
    """Train one run per config at once on their CUDA device: one thread and one stream each.

    The runs are built one after another (compiling, seeding and initialising their networks from torch's
    default generator, which construction alone uses), then step in their threads; each waits only for its
    own stream. The first error stops the others at the end of their iteration (their files are closed,
    their checkpoints kept) and is raised.
    """
    runs: list[Run] = []
    try:
        for position, (config, label) in enumerate(zip(configs, labels, strict=True)):
            runs.append(Run(config, progress_label=label, progress_position=position))
        device = runs[0].trainer.device
        if device.type != "cuda":
            raise ValueError(f"train_together needs runs on a CUDA device, got {device}")
        torch.cuda.synchronize(device)  # what construction queued on the default stream is done
        failed = threading.Event()

        def train_run(run: Run) -> None:
            with torch.cuda.stream(new_stream(device)):
                try:
                    while not run.done and not failed.is_set():
                        run.train_iteration()
                except BaseException:
                    failed.set()
                    raise

        with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="seed") as pool:
            futures = [pool.submit(train_run, run) for run in runs]
        torch.cuda.synchronize(device)
        for future in futures:
            future.result()  # the first error, in seed order
        return [run.finish() for run in runs]
    finally:
        for run in runs:
            run.close()
