"""Several seeds at once on one GPU against the same seeds one after another.

For each configuration, ``train_seeds(config, N, concurrent=1)`` and ``train_seeds(config, N, concurrent=N)``
are timed over the whole call, as a user waits for ``warpdrive train CONFIG --seeds N``: the runs built
(kernels from the warm cache), trained (graphs captured), their files written. The speed-up is the ratio
of the two wall times. Each run's metrics are compared between the two ways (the largest relative
difference over every logged number but the clock's): runs at once learn what they learn alone.

    python benchmarks/seeds_throughput.py [NAME ...] [--seeds 8] [--iterations 100] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from warpdrive.training.config import load_config
from warpdrive.training.logging import read_metrics
from warpdrive.training.seeds import train_seeds

# name: (packaged config, overrides); every config is a packaged one with more envs, as on a GPU
CONFIGS = {
    "cartpole_ppo": ("cartpole", ["env.num_envs=512"]),
    "simple_spread_ppo": ("simple_spread", ["env.num_envs=512"]),
    "simple_spread_maddpg": ("simple_spread/maddpg", ["env.num_envs=512", "policies.shared.maddpg.learning_starts=0"]),
    "tag_gridworld_ppo": ("tag_gridworld", ["env.num_envs=512"]),
}
QUIET = ["logging.progress=false", "logging.tensorboard=false", "logging.learning_curve=false",
         "checkpoint.at_end=false", "checkpoint.every=0", "device=cuda"]


def _learned(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "charts/SPS" and not k.startswith("time/")} for row in rows]


def largest_difference(first: list[dict], second: list[dict]) -> float:
    """The largest relative difference between two runs' logged numbers (inf if they logged other keys)."""
    worst = 0.0
    for a, b in zip(_learned(first), _learned(second), strict=True):
        if a.keys() != b.keys():
            return float("inf")
        for key, value in a.items():
            worst = max(worst, abs(b[key] - value) / max(abs(value), 1e-6))
    return worst


def measure(name: str, seeds: int, iterations: int, root: Path) -> list[dict]:
    source, overrides = CONFIGS[name]
    config = load_config(source, [*overrides, *QUIET])
    batch = config.env.num_envs * config.rollout_length
    overrides = [*overrides, *QUIET, f"total_env_steps={batch * iterations}"]
    # compile (or load) the kernels and warm the GPU outside the timing
    train_seeds(load_config(source, [*overrides, f"total_env_steps={batch}", f"logging.root={root / 'warm'}"]), 1)
    timed = {}
    lines = []
    for at_once in (1, seeds):
        config = load_config(source, [*overrides, f"logging.root={root / f'{name}_{at_once}'}"])
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = train_seeds(config, seeds, concurrent=at_once)
        wall = time.perf_counter() - start
        timed[at_once] = result
        algorithm = "+".join(dict.fromkeys(p.algorithm for p in config.policies.values()))
        lines.append({"name": f"seeds_{name}", "algorithm": algorithm, "env": config.env.name,
                      "envs": config.env.num_envs, "seeds": seeds, "concurrent": at_once,
                      "iterations": iterations, "wall_s": round(wall, 2),
                      "train_env_steps_per_s": round(seeds * config.total_env_steps / wall),
                      "device": torch.cuda.get_device_name()})
    differences = [largest_difference(read_metrics(a.metrics_path), read_metrics(b.metrics_path))
                   for a, b in zip(timed[1].runs, timed[seeds].runs, strict=True)]
    lines[-1]["speedup"] = round(lines[0]["wall_s"] / lines[-1]["wall_s"], 2)
    lines[-1]["largest_relative_difference"] = max(differences)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"configurations (default: all of {list(CONFIGS)})")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100, help="iterations per run")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for seeds_throughput.jsonl")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'config':24} {'one at a time':>14} {'all at once':>12} {'speed-up':>9} {'max rel. diff':>14}")
    with tempfile.TemporaryDirectory() as tmp, open(args.out / "seeds_throughput.jsonl", "a") as out:
        for name in args.names or CONFIGS:
            try:
                lines = measure(name, args.seeds, args.iterations, Path(tmp))
            except Exception as err:  # report it and measure the next configuration
                print(f"{name:24} failed: {type(err).__name__}: {err}", flush=True)
                continue
            out.writelines(json.dumps(line) + "\n" for line in lines)
            out.flush()
            print(f"{name:24} {lines[0]['wall_s']:>12.1f} s {lines[1]['wall_s']:>10.1f} s "
                  f"{lines[1]['speedup']:>8.2f}x {lines[1]['largest_relative_difference']:>14.2e}", flush=True)


if __name__ == "__main__":
    main()
