"""Steps one benchmark configuration a few times and exits: a short program for ncu or compute-sanitizer.

    ncu --clock-control none --kernel-name regex:launch_ --launch-skip 5 --launch-count 1 \\
        python3 benchmarks/step_for_profiler.py gw_1000_agents [LANES ENVS_PER_BLOCK MAX_REGISTERS]

The first kernel launched is the reset, then eight steps (``random_step``: actions drawn in the kernel).
"""

from __future__ import annotations

import sys

import torch
from env_throughput import env_kwargs

from warpdrive.core.compile import LaunchShape
from warpdrive.envs import make


def main() -> None:
    env_name, kwargs, num_envs = env_kwargs(sys.argv[1])
    env = make(env_name, num_envs=num_envs, device="cuda", seed=0, **kwargs)
    if len(sys.argv) > 2:
        lanes, per_block, cap = map(int, sys.argv[2:5])
        env.shape = LaunchShape(lanes, per_block, cap or None)
    env.reset(seed=0)
    for _ in range(8):
        env.random_step()
    torch.cuda.synchronize()
    print("launch shape:", env.shape)


if __name__ == "__main__":
    main()
