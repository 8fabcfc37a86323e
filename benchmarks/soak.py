"""Soak: train one configuration for a long time and watch device memory and speed (issue 12, item 11).

    python benchmarks/soak.py [NAME] [--minutes 10] [--interval 30] [--algorithm a2c] [--out DIR]

Trains ``NAME`` (a configuration of train_throughput.py, default tc_mid: A2C, bf16, the reference's batch) for
``--minutes`` of wall time after setup, and every ``--interval`` seconds records the env-steps/s of the iterations
in that interval, the memory PyTorch has allocated and reserved on the device, its peak, and the process's
resident memory. Prints one JSON line per interval, then a summary line: the growth of allocated, reserved
and resident memory from the first interval to the last, and the spread of the interval rates (a steady run
grows by nothing and its rates stay within a few percent of their median). ``--out`` appends the lines to
``soak.jsonl`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

from train_throughput import CONFIGS, train_config


def resident_mib() -> float:
    """This process's resident memory now (Linux /proc), in MiB; the peak where /proc is absent."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="tc_mid", choices=list(CONFIGS))
    parser.add_argument("--algorithm", default="a2c", choices=["a2c", "ppo"])
    parser.add_argument("--precision", default="bf16", choices=["none", "tf32", "bf16"])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between records")
    parser.add_argument("--envs", type=int, help="env replicas instead of the configuration's (a quick check)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for soak.jsonl")
    args = parser.parse_args()

    import torch

    from warpdrive.training.config import load_config
    from warpdrive.training.trainer import Trainer

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    config = train_config(args.name, args.algorithm, args.precision)
    if args.envs:
        config["env"]["num_envs"] = args.envs
    trainer = Trainer(load_config(config))
    trainer.train_iteration()  # compilation, graph capture
    sync()
    steps_per_iteration = trainer.config.env.num_envs * trainer.config.rollout_length
    device = torch.cuda.get_device_name() if cuda else "cpu"

    rows = []
    start = time.perf_counter()
    while time.perf_counter() - start < args.minutes * 60:
        t0, iterations = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.interval:
            trainer.train_iteration()
            iterations += 1
        sync()
        elapsed = time.perf_counter() - t0
        row = {
            "name": args.name, "algorithm": args.algorithm, "mixed_precision": args.precision, "device": device,
            "minute": round((time.perf_counter() - start) / 60, 2),
            "train_env_steps_per_s": round(iterations * steps_per_iteration / elapsed),
            "allocated_mib": round(torch.cuda.memory_allocated() / 2**20, 1) if cuda else None,
            "reserved_mib": round(torch.cuda.memory_reserved() / 2**20, 1) if cuda else None,
            "peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            "resident_mib": round(resident_mib(), 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)

    rates = [row["train_env_steps_per_s"] for row in rows]
    median = statistics.median(rates)

    def growth(key: str) -> float | None:
        return None if rows[0][key] is None else round(rows[-1][key] - rows[0][key], 1)

    summary = {
        "name": args.name, "algorithm": args.algorithm, "device": device, "summary": True,
        "minutes": round((time.perf_counter() - start) / 60, 2), "intervals": len(rows),
        "median_train_env_steps_per_s": round(median),
        "rate_spread": round((max(rates) - min(rates)) / median, 4),
        "allocated_growth_mib": growth("allocated_mib"), "reserved_growth_mib": growth("reserved_mib"),
        "resident_growth_mib": growth("resident_mib"),
    }
    print(json.dumps(summary), flush=True)
    if args.out:
        with open(os.path.join(args.out, "soak.jsonl"), "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in [*rows, summary])


if __name__ == "__main__":
    main()
