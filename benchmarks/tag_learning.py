"""A longer Tag-continuous training run and its curve: fraction of runners tagged per episode, trained
policies against uniformly random ones.

Runs the packaged ``tag_continuous`` config (10 taggers, 100 runners, the reference's shipped env and A2C
settings) with ``--episode-length``-step episodes for ``--steps`` env-steps twice: both groups learning
(the reference's setup), and learning taggers against runners that act uniformly at random; then both
groups at random for a baseline. Plots ``env/tag_rate`` (runners tagged / runners, per finished episode)
against env-steps.

The packaged 500-step episodes leave nothing to learn by this measure: random taggers already tag 95% of
the runners in 500 steps (measured on the H100). In 100-step episodes they tag about half.

    python benchmarks/tag_learning.py --steps 20000000 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from warpdrive.training.config import load_config
from warpdrive.training.logging import read_metrics
from warpdrive.training.run import train

METRIC = "env/tag_rate"


def run(overrides: list[str], root: Path) -> list[dict]:
    config = load_config("tag_continuous", [*overrides, f"logging.root={root}", "logging.progress=false",
                                            "checkpoint.every=0"])
    result = train(config)
    return read_metrics(result.metrics_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000_000, help="env-steps of the trained run")
    parser.add_argument("--algorithm", default="a2c", choices=["a2c", "ppo"])
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the curve and JSON")
    parser.add_argument("--runs", type=Path, default=Path("runs/tag_learning"), help="folder for the runs' logs")
    parser.add_argument("overrides", nargs="*", help="more config overrides (key.path=value)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.runs

    runs = {
        "both groups learn": [f"policies.{g}.algorithm={args.algorithm}" for g in ("taggers", "runners")],
        "taggers learn, runners random": [f"policies.taggers.algorithm={args.algorithm}",
                                          "policies.runners.algorithm=random"],
    }
    env = [f"env.kwargs.episode_length={args.episode_length}"]
    curves = {label: run([f"total_env_steps={args.steps}", *env, *algo, *args.overrides], root)
              for label, algo in runs.items()}
    random_rows = run(["total_env_steps=2000000", *env, "policies.taggers.algorithm=random",
                       "policies.runners.algorithm=random", *args.overrides], root)
    baseline = statistics.mean(r[METRIC] for r in random_rows if METRIC in r)
    points = {label: [(r["env_steps"], r[METRIC]) for r in rows if METRIC in r] for label, rows in curves.items()}
    summary = {"algorithm": args.algorithm, "env_steps": args.steps, "episode_length": args.episode_length,
               "random_tag_rate": round(baseline, 4)}
    for label, rows in curves.items():
        summary[label] = {
            "first_tag_rate": round(points[label][0][1], 4),
            "last_tag_rate": round(statistics.mean(v for _, v in points[label][-5:]), 4),
            "train_env_steps_per_s": round(statistics.median(r["charts/SPS"] for r in rows if "charts/SPS" in r)),
        }
    print(json.dumps(summary), flush=True)
    (args.out / f"tag_learning_{args.algorithm}.json").write_text(json.dumps({"summary": summary, "curves": points}))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, curve in points.items():
        ax.plot([p[0] for p in curve], [p[1] for p in curve], label=f"{label} ({args.algorithm.upper()})")
    ax.axhline(baseline, color="grey", linestyle="--", label="uniformly random policies")
    ax.set_xlabel("env-steps")
    ax.set_ylabel("fraction of runners tagged per episode")
    ax.set_title(f"Tag-continuous, 10 taggers vs 100 runners, {args.episode_length}-step episodes, 100 envs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"tag_learning_{args.algorithm}.png", dpi=120)


if __name__ == "__main__":
    main()
