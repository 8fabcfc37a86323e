"""Where a training iteration's time goes: kernels per rollout step and the update's heaviest operations.

    python benchmarks/train_profile.py [NAME ...] [--algorithm a2c] [--precision tf32]

For each configuration of ``train_throughput.py``: the CUDA kernels one (eager) rollout step launches and
their total GPU time, the rollout's time per step when replayed from the CUDA graph, and the update's
operations ranked by GPU time (torch.profiler). A development tool: nothing here is a benchmark result.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from train_throughput import CONFIGS, train_config

from warpdrive.training.config import load_config
from warpdrive.training.trainer import Trainer


def kernels(prof: profile) -> list:
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(CONFIGS))
    parser.add_argument("--algorithm", default="a2c", choices=["a2c", "ppo"])
    parser.add_argument("--precision", default="tf32", choices=["none", "tf32", "bf16"])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for name in args.names:
        trainer = Trainer(load_config(train_config(name, args.algorithm, args.precision)))
        trainer.train_iteration()
        metrics = trainer.train_iteration()
        steps = trainer.num_steps
        trainer.collector.step_index.zero_()
        with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            trainer.collector.step()
            torch.cuda.synchronize()
        step_kernels = kernels(prof)
        by_name: dict[str, list[float]] = {}
        for e in step_kernels:
            by_name.setdefault(e.name[:70], []).append(e.device_time)
        gpu_us = sum(e.device_time for e in step_kernels)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.rollout()
        torch.cuda.synchronize()
        replay_us = (time.perf_counter() - t0) / steps * 1e6
        print(f"== {name} {args.algorithm} {args.precision}: rollout {metrics['time/rollout_s']:.4f} s, update "
              f"{metrics['time/update_s']:.4f} s; one step: {len(step_kernels)} kernels, {gpu_us:.0f} us of "
              f"kernel time (eager), {replay_us:.0f} us per step replayed", flush=True)
        for kernel, times in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
            print(f"   {len(times):3d} x {sum(times) / len(times):7.1f} us  {kernel}")
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            trainer.update()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="device_time_total", row_limit=args.top, max_name_column_width=60),
              flush=True)
        del trainer
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
