"""Several seeds at once on one GPU against the same seeds one after another.

For each configuration, ``train_seeds(config, N, concurrent=1)`` and ``train_seeds(config, N, concurrent=N)``
are timed over the whole call, as a user waits for ``warpdrive train CONFIG --seeds N``: the runs built
(kernels from the warm cache), trained (graphs captured), their files written. The speed-up is the ratio
of the two wall times. Each run's metrics are compared between the two ways (the largest relative
difference over every logged number but the clock's): runs at once learn what they learn alone. The
sequential runs are made twice and compared too: the GPU's own nondeterminism (atomics in some backward
passes) is the yardstick for the first comparison.

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


def largest_difference(first: list[dict], second: list[dict]) -> tuple[float, str]:
    """The largest difference between two runs' logged numbers, each relative to the larger of the two
    magnitudes and 1e-3 (so that numbers near zero, such as PPO's approx_kl, count by their absolute
    difference), with the key and iteration where it is; inf if they logged other keys."""
    worst, where = 0.0, ""
    for a, b in zip(_learned(first), _learned(second), strict=True):
        if a.keys() != b.keys():
            return float("inf"), "keys"
        for key, value in a.items():
            difference = abs(b[key] - value) / max(abs(value), abs(b[key]), 1e-3)
            if difference > worst:
                worst, where = difference, f"{key}@{a['iteration']}"
    return worst, where


def measure(name: str, seeds: int, iterations: int, root: Path, extra: list[str]) -> list[dict]:
    source, overrides = CONFIGS[name]
    overrides = [*overrides, *extra]
    config = load_config(source, [*overrides, *QUIET])
    batch = config.env.num_envs * config.rollout_length
    overrides = [*overrides, *QUIET, f"total_env_steps={batch * iterations}"]
    # compile (or load) the kernels and warm the GPU outside the timing
    train_seeds(load_config(source, [*overrides, f"total_env_steps={batch}", f"logging.root={root / 'warm'}"]), 1)
    timed = {}
    lines = []
    # one at a time twice: how far the GPU's own nondeterminism takes two identical runs apart
    for label, at_once in (("again", 1), ("sequential", 1), ("together", seeds)):
        config = load_config(source, [*overrides, f"logging.root={root / f'{name}_{label}'}"])
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = train_seeds(config, seeds, concurrent=at_once)
        wall = time.perf_counter() - start
        timed[label] = result
        algorithm = "+".join(dict.fromkeys(p.algorithm for p in config.policies.values()))
        lines.append({"name": f"seeds_{name}", "algorithm": algorithm, "env": config.env.name,
                      "envs": config.env.num_envs, "seeds": seeds, "concurrent": at_once,
                      "iterations": iterations, "overrides": extra, "wall_s": round(wall, 2),
                      "train_env_steps_per_s": round(seeds * config.total_env_steps / wall),
                      "device": torch.cuda.get_device_name()})
    def difference(label: str) -> tuple[float, str]:
        return max(largest_difference(read_metrics(a.metrics_path), read_metrics(b.metrics_path))
                   for a, b in zip(timed["sequential"].runs, timed[label].runs, strict=True))

    lines = lines[1:]  # the first sequential pass is the control's
    lines[-1]["speedup"] = round(lines[0]["wall_s"] / lines[-1]["wall_s"], 2)
    lines[-1]["largest_relative_difference"], lines[-1]["largest_difference_at"] = difference("together")
    lines[0]["largest_relative_difference"], lines[0]["largest_difference_at"] = difference("again")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100, help="iterations per run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (e.g. cuda_graph=false)")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for seeds_throughput.jsonl")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'config':24} {'one at a time':>14} {'all at once':>12} {'speed-up':>9} {'max rel. diff (where)':>40} "
          f"{'same, run again':>40}")
    with tempfile.TemporaryDirectory() as tmp, open(args.out / "seeds_throughput.jsonl", "a") as out:
        for name in args.names:
            try:
                lines = measure(name, args.seeds, args.iterations, Path(tmp), args.set)
            except Exception as err:  # report it and measure the next configuration
                print(f"{name:24} failed: {type(err).__name__}: {err}", flush=True)
                continue
            out.writelines(json.dumps(line) + "\n" for line in lines)
            out.flush()
            sequential, together = lines
            print(f"{name:24} {sequential['wall_s']:>12.1f} s {together['wall_s']:>10.1f} s "
                  f"{together['speedup']:>8.2f}x {together['largest_relative_difference']:>10.2e} "
                  f"({together['largest_difference_at']:>26}) {sequential['largest_relative_difference']:>10.2e} "
                  f"({sequential['largest_difference_at']:>26})", flush=True)


if __name__ == "__main__":
    main()
