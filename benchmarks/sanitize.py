"""What compute-sanitizer runs: every env's step and reset kernels, the action samplers and the return scans, at
sizes that are and are not multiples of a warp or a block, and more agents than threads in a block.

    python benchmarks/sanitize.py run [ENV ...]          # the workload (exit 0 when it ran)
    python benchmarks/sanitize.py planted-race           # a shared-memory race: racecheck must report it
    python benchmarks/sanitize.py planted-out-of-bounds  # a write past an array: memcheck must report it
    bash benchmarks/sanitize.sh                          # every tool over `run`, then the planted bugs

The planted kernels show that the same tools, run the same way, report what they are meant to find, so that a
clean `run` means something. Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` runs the workload in Numba's simulator (a
smoke test of this script: the simulator checks every array index itself).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch
from numba import cuda

from warpdrive.core.device import simulator_enabled
from warpdrive.core.targets import numpy_compatibility
from warpdrive.envs import REGISTRY, env_class, make
from warpdrive.training.returns import discounted_returns, gae

#: above 64 agents, the envs that can observe their k nearest do so, so that the neighbour search's kernels run too
PARTIAL_OBSERVATION: dict[str, dict[str, Any]] = {
    "tag_continuous": {"use_full_observation": False},
    "simple_tag": {"k_nearest": 4}, "simple_spread": {"k_nearest": 4}, "simple_adversary": {"k_nearest": 4},
}
#: (envs, agents): one env, a prime, more envs than a block's threads; agents below, at and above a warp, a hundred
#: (partial observation in a grid of one cell), and more than a block's 256 threads (the simulator: small sizes only,
#: each thread a Python thread)
SIZES = [(1, 2), (7, 31), (3, 33), (257, 5), (3, 100), (2, 300)]
SIM_SIZES = [(1, 2), (3, 5), (2, 17)]


def run(names: list[str]) -> None:
    backend, device = ("cudasim", "cpu") if simulator_enabled() else ("cuda", "cuda")
    for name in names or sorted(REGISTRY):
        for num_envs, agents in SIM_SIZES if backend == "cudasim" else SIZES:
            kwargs = env_class(name).config_for_agents(agents)
            if kwargs is None:  # a fixed agent count: each replica count at that
                kwargs = {}
            if agents > 64:
                kwargs.update(PARTIAL_OBSERVATION.get(name, {}))
            env = make(name, num_envs=num_envs, backend=backend, device=device, episode_length=4, **kwargs)
            env.reset(seed=1)
            for _ in range(5):  # two episodes: autoresets included
                env.random_step()
            generator = torch.Generator(device=device).manual_seed(2) if device == "cuda" else None
            env.step(env.sample_actions(generator))
            env.step_without_reset()
            env.reset(mask=torch.arange(num_envs, device=device) % 2 == 0)
            env.raise_action_faults()
            print(f"{name}: {num_envs} envs x {env.num_agents} agents", flush=True)
    steps, envs, agents = 9, 5, 33
    rewards = torch.rand(steps, envs, agents, device=device)
    values = torch.rand(steps, envs, agents, device=device)
    done = torch.rand(steps, envs, device=device) < 0.2
    gae(rewards, values, values, done, 0.99, 0.95)
    discounted_returns(rewards, values, done, 0.99)
    if device == "cuda":
        torch.cuda.synchronize()
    print("return scans", flush=True)


@cuda.jit
def _racy(out):
    shared = cuda.shared.array(32, np.float32)
    i = cuda.threadIdx.x
    shared[i % 32] = np.float32(i)  # threads i and i + 32 write one slot, no barrier: a race
    out[i] = shared[(i + 1) % 32]


@cuda.jit
def _past_the_end(out, n):
    i = cuda.threadIdx.x
    out[i + n] = np.float32(1.0)  # n floats past the start of every thread's slot


def planted(kind: str) -> None:
    numpy_compatibility()  # what warpdrive's own kernels get before their first CUDA compilation
    out = cuda.device_array(64, np.float32)
    if kind == "planted-race":
        _racy[1, 64](out)
    else:
        _past_the_end[1, 64](out, 64)
    cuda.synchronize()
    print(kind, "ran", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "planted-race", "planted-out-of-bounds"])
    parser.add_argument("names", nargs="*", help="envs (default: every registered one)")
    args = parser.parse_args()
    if args.what == "run":
        run(args.names)
    else:
        planted(args.what)


if __name__ == "__main__":
    sys.exit(main())
