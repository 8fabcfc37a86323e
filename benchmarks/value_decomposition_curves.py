"""Learning curves on simple_spread (3 agents, Discrete(5) actions): VDN and QMIX against independent PPO
and a uniformly random policy.

Each algorithm trains from its packaged config (``simple_spread/vdn``, ``simple_spread/qmix``, and
``simple_spread`` for PPO: one policy shared by the agents in every case) for the same number of env-steps.
Every ``--eval-every`` iterations, and at the end, the current networks are evaluated on
``--eval-episodes`` fresh episodes (one per replica of a separate env, the same seed each time):
``eval_return`` is the mean per-agent episodic return with the policies as they act in evaluation (VDN
and QMIX greedily, PPO sampling from its policy), ``eval_return_greedy`` with every policy's most likely
action. ``train_return`` is the mean return of the training episodes that ended in the iteration (VDN and
QMIX explore epsilon-greedily there).

    python benchmarks/value_decomposition_curves.py --out benchmarks/results            # GPU, full budget
    python benchmarks/value_decomposition_curves.py --device cpu --total-env-steps 20000 --seeds 0
    python benchmarks/value_decomposition_curves.py --algorithms qmix -- policies.shared.qmix.gradient_steps=50

Config overrides (``key.path=value``) apply to every run; after ``--`` when they follow ``--algorithms``.

Prints one JSON line per evaluation and one summary line per algorithm; writes them to
``<out>/value_decomposition_curves.jsonl`` and plots ``eval_return`` against env-steps (mean over seeds,
95% bootstrap interval) to ``<out>/value_decomposition_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from warpdrive.training.config import load_config
from warpdrive.training.evaluate import evaluate
from warpdrive.training.seeds import plot_seed_curves
from warpdrive.training.trainer import Trainer

#: algorithm -> its packaged config
CONFIGS = {"vdn": "simple_spread/vdn", "qmix": "simple_spread/qmix", "ppo": "simple_spread", "random": "simple_spread"}


def curve(algorithm: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train ``algorithm`` with ``seed``; its evaluations as rows."""
    overrides = [f"device={args.device}", *args.overrides]
    if algorithm == "random":
        overrides.append("policies.shared.algorithm=random")
    if args.total_env_steps is not None:
        overrides.append(f"total_env_steps={args.total_env_steps}")
    return evaluated_training(algorithm, CONFIGS[algorithm], overrides, seed, args.eval_every, args.eval_episodes,
                              random_policy=algorithm == "random")


def evaluated_training(label: str, source: Any, overrides: list[str], seed: int, eval_every: int,
                       eval_episodes: int, random_policy: bool = False, group: str = "agents") -> list[dict[str, Any]]:
    """Train the config ``source`` (a packaged name, a path or a dict; with ``overrides`` and ``seed``) and evaluate
    its policies before training, every ``eval_every`` iterations and at the end, each time on ``eval_episodes``
    fresh episodes (the same env seed every time); the evaluations as rows labelled ``label`` (``"algorithm"``).
    ``random_policy``: the config acts at random; evaluated once, as nothing learns."""
    overrides = [*overrides, f"seed={seed}"]
    trainer = Trainer(load_config(source, overrides))
    judge = Trainer(load_config(source, [*overrides, f"env.num_envs={eval_episodes}"]))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    train_returns: list[float] = []

    def record() -> None:
        judge.load_model_tensors(trainer.model_tensors())
        if random_policy:
            sampled = greedy = evaluate(judge, random_actions=True, seed=10_000 + seed)[f"return/{group}"]
        else:
            sampled = evaluate(judge, seed=10_000 + seed)[f"return/{group}"]
            greedy = evaluate(judge, deterministic=True, seed=10_000 + seed)[f"return/{group}"]
        row = {"algorithm": label, "seed": seed, "iteration": trainer.iteration, "env_steps": trainer.env_steps,
               "eval_return": round(sampled, 4), "eval_return_greedy": round(greedy, 4),
               "train_return": round(statistics.mean(train_returns), 4) if train_returns else None,
               "wall_s": round(time.perf_counter() - start, 2)}
        train_returns.clear()
        rows.append(row)
        print(json.dumps(row), flush=True)

    record()
    if random_policy:  # nothing learns: the same evaluation holds at every budget
        rows.append({**rows[0], "env_steps": trainer.num_iterations * trainer.batch_env_steps})
        return rows
    while not trainer.done:
        metrics = trainer.train_iteration()
        if f"charts/episodic_return/{group}" in metrics:  # absent when no episode ended in the iteration
            train_returns.append(metrics[f"charts/episodic_return/{group}"])
        if trainer.iteration % eval_every == 0 or trainer.done:
            record()
    return rows


def write_curves(rows: list[dict[str, Any]], path: Path, **fields: Any) -> None:
    """Print a summary line per label (the mean over seeds of its last evaluation, with ``fields``) and write the
    rows, then the summaries, to ``path`` as JSON lines."""
    summaries = []
    for label in dict.fromkeys(r["algorithm"] for r in rows):
        final = max(r["env_steps"] for r in rows if r["algorithm"] == label)
        last = [r for r in rows if r["algorithm"] == label and r["env_steps"] == final]
        summary = {"summary": label, "env_steps": final, "seeds": len(last), **fields,
                   "final_eval_return": round(statistics.mean(r["eval_return"] for r in last), 4),
                   "final_eval_return_greedy": round(statistics.mean(r["eval_return_greedy"] for r in last), 4),
                   "wall_s": round(statistics.mean(r["wall_s"] for r in last), 1)}
        summaries.append(summary)
        print(json.dumps(summary), flush=True)
    with open(path, "w") as handle:
        for row in rows + summaries:
            handle.write(json.dumps(row) + "\n")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Each algorithm's ``eval_return`` against env-steps: the mean over seeds and its 95% bootstrap interval."""
    curves: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        label = r["algorithm"].upper() if r["algorithm"] != "random" else "uniformly random"
        curves.setdefault(label, {}).setdefault(r["env_steps"], []).append(r["eval_return"])
    plot_seed_curves(curves, path, "simple_spread, 3 agents, discrete actions",
                     "mean episodic return per agent (evaluation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--total-env-steps", type=int, default=None, help="default: each packaged config's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-every", type=int, default=5, help="iterations between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and PNG")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (key.path=value)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = [row for algorithm in args.algorithms for seed in args.seeds for row in curve(algorithm, seed, args)]
    write_curves(rows, args.out / "value_decomposition_curves.jsonl")
    plot(rows, args.out / "value_decomposition_curves.png")


if __name__ == "__main__":
    main()
