"""Scaling over GPUs: training env-steps/s with 1 and 2 ranks (torchrun, NCCL), and env-only per GPU.

The configurations and their training setups are train_throughput.py's (A2C and PPO, bf16), with the same
per-rank env count at every world size, so that an iteration of W ranks consumes W times the env-steps:
ideal scaling is W times the one-rank rate. The one-rank run is a plain one-process run (torchrun with
one process has no process group). Per world size, one torchrun launch runs every configuration:

- env-only: every rank at once steps its own env on its own GPU (env_throughput.py's strict protocol,
  one CUDA graph per rank); one line per rank, to show that the ranks do not slow each other down;
- training: a warm-up iteration, then the median wall time of ``--iterations`` iterations (synchronised);
  ``train_env_steps_per_s`` counts every rank's env-steps. Beside it, what the gradient all-reduce costs:
  its size per optimiser step and its time, measured alone (``allreduce_ms``, median of 20), times the
  optimiser steps of an iteration (``allreduce_ms_per_iteration``).

On the lent 2-GPU machine, in one call (with the wheels of benchmarks/device_bench.sh carried)::

    bash benchmarks/device_bench.sh multi        # runs: python3 benchmarks/multi_gpu.py --out $OUT

or, where warpdrive and its dependencies are installed::

    python benchmarks/multi_gpu.py [NAME ...] [--algorithms a2c ppo] [--world-sizes 1 2] [--iterations 5]

Prints one JSON line per measurement ("name", "algorithm", "device", "world_size", ...), then a table of
the speed-ups. ``--envs N --rollout T`` shrink every configuration (a quick check of this script on the CPU,
where the ranks use gloo).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

from env_throughput import measure as env_only
from train_throughput import CONFIGS, train_config

NAMES = ["tc_default", "tc_mid", "tc_many_envs", "gw_default"]


def worker(args: argparse.Namespace) -> None:
    """One rank of a torchrun launch: every configuration's measurements; rank 0 prints them."""
    import torch
    import torch.distributed as dist

    from warpdrive.training.config import load_config
    from warpdrive.training.distributed import setup
    from warpdrive.training.trainer import Trainer

    ranks = setup("auto")  # None with one process
    world_size, rank = (1, 0) if ranks is None else (ranks.world_size, ranks.rank)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "cpu"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def emit(row: dict) -> None:
        if rank == 0:
            print(json.dumps({**row, "device": device, "world_size": world_size}), flush=True)

    def every_rank(row: dict) -> list[dict]:
        if ranks is None:
            return [row]
        rows = [None] * world_size
        dist.all_gather_object(rows, row)
        return rows

    for name in args.names:
        result = env_only(name, steps_per_graph=50, replays=20 if cuda else 1, repeats=3)
        for r, row in enumerate(every_rank(result)):
            emit({"name": name, "bench": "env", "rank": r, "env_steps_per_s": row["env_steps_per_s"]})

    for name in args.names:
        for algorithm in args.algorithms:
            data = train_config(name, algorithm, "bf16")
            if args.envs:
                data["env"]["num_envs"], data["rollout_length"] = args.envs, args.rollout
            t0 = time.perf_counter()
            trainer = Trainer(load_config(data), ranks)
            trainer.train_iteration()  # warm-up: compilation from the cache, lazy init, graph capture
            sync()
            setup_s = time.perf_counter() - t0
            seconds, rollout_s, update_s = [], [], []
            for _ in range(args.iterations):
                sync()
                start = time.perf_counter()
                metrics = trainer.train_iteration()
                sync()
                seconds.append(time.perf_counter() - start)
                rollout_s.append(metrics["time/rollout_s"])
                update_s.append(metrics["time/update_s"])
            row = {"name": name, "bench": "train", "algorithm": algorithm, "mixed_precision": "bf16",
                   "envs_per_rank": trainer.num_envs, "batch_env_steps": trainer.batch_env_steps,
                   "train_env_steps_per_s": round(trainer.batch_env_steps / statistics.median(seconds)),
                   "rollout_s": round(statistics.median(rollout_s), 4),
                   "update_s": round(statistics.median(update_s), 4), "setup_s": round(setup_s, 2),
                   "cuda_graph": trainer.uses_cuda_graph}
            if ranks is not None:
                row.update(allreduce_cost(trainer, ranks, sync))
            emit(row)
            del trainer
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    if ranks is not None:
        ranks.close()


def allreduce_cost(trainer, ranks, sync) -> dict:
    """Bytes of each policy's gradient all-reduce, and its time alone; the all-reduces of one iteration."""
    import torch
    import torch.distributed as dist

    total_ms, sizes, times = 0.0, {}, {}
    for policy in trainer.policies:
        if policy.storage is None:
            continue
        numel = sum(p.numel() for p in policy.algorithm.model.parameters())
        flat = torch.zeros(numel, device=ranks.device)
        for _ in range(3):
            dist.all_reduce(flat)
        timed = []
        for _ in range(20):
            sync()
            start = time.perf_counter()
            dist.all_reduce(flat)
            sync()
            timed.append((time.perf_counter() - start) * 1e3)
        spec = trainer.config.policies[policy.name]
        steps = spec.ppo.update_epochs * spec.ppo.num_minibatches if spec.algorithm == "ppo" else 1
        sizes[policy.name], times[policy.name] = numel * 4, round(statistics.median(timed), 4)
        total_ms += steps * statistics.median(timed)
    return {"allreduce_bytes": sizes, "allreduce_ms": times, "allreduce_ms_per_iteration": round(total_ms, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=NAMES, help=f"configurations (default: {NAMES})")
    parser.add_argument("--algorithms", nargs="+", default=["a2c", "ppo"], choices=["a2c", "ppo"])
    parser.add_argument("--world-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--envs", type=int, help="env replicas per rank instead of the configuration's")
    parser.add_argument("--rollout", type=int, default=8, help="rollout length with --envs")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for multi_gpu.jsonl")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    if args.worker:
        worker(args)
        return

    rows = []
    forwarded = [*args.names, "--algorithms", *args.algorithms, f"--iterations={args.iterations}"]
    forwarded += [f"--envs={args.envs}", f"--rollout={args.rollout}"] if args.envs else []
    for world_size in args.world_sizes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
                   __file__, "--worker", *forwarded]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if line.startswith("{"):
                print(line, end="", flush=True)
                rows.append(json.loads(line))
        if proc.wait() != 0:
            print(f"world size {world_size}: torchrun failed with status {proc.returncode}", file=sys.stderr)
    if args.out:
        with open(os.path.join(args.out, "multi_gpu.jsonl"), "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)

    train = {(r["name"], r["algorithm"], r["world_size"]): r for r in rows if r["bench"] == "train"}
    print(f"\n{'config':14s} {'algo':5s} {'W':>2s} {'env-steps/s':>14s} {'speed-up':>9s} {'rollout s':>9s} "
          f"{'update s':>9s} {'all-reduce ms/it':>16s}")
    for (name, algorithm, world_size), r in train.items():
        one = train.get((name, algorithm, 1))
        speedup = f"{r['train_env_steps_per_s'] / one['train_env_steps_per_s']:.2f}x" if one else "-"
        print(f"{name:14s} {algorithm:5s} {world_size:>2d} {r['train_env_steps_per_s']:>14,d} {speedup:>9s} "
              f"{r['rollout_s']:>9.3f} {r['update_s']:>9.3f} {r.get('allreduce_ms_per_iteration', 0.0):>16.3f}")


if __name__ == "__main__":
    main()
