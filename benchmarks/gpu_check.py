"""CPU vs CUDA consistency of every example env on a real GPU: bit-identical (atol=0) over whole episodes.

    python benchmarks/gpu_check.py [ENV ...] [--jobs N] [--shapes]

Each case runs two full episodes plus one step (every replica autoresets at least once) from random and from
identical starts, with the same random actions on both sides, and compares observations, rewards, done
flags and final observations exactly. Tag-continuous runs the reference's training parameters with
500-step episodes at 110 and at 1000 agents. Prints one line per (env, configuration, start). With
``--shapes``, every env runs instead at the contract's shape sweep (``warpdrive.core.contract.shape_sweep``: one
replica, a prime number of them, more than a CUDA block's threads; one agent, 31, 33 and 300 where the env allows
that many, :meth:`Env.config_for_agents`), from its default parameters.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from env_throughput import TAG_CONTINUOUS_TRAINING, TAG_GRIDWORLD_TRAINING

from warpdrive.core.checker import check_consistency
from warpdrive.core.contract import shape_sweep
from warpdrive.envs import REGISTRY, env_class, make

CASES = {
    "tag_gridworld": [
        {"num_taggers": 3, "episode_length": 20},
        {"num_taggers": 3, "episode_length": 20, "use_full_observation": False},
        {"num_taggers": 300, "grid_length": 20, "episode_length": 10, "use_full_observation": False},
        dict(TAG_GRIDWORLD_TRAINING, num_taggers=999, use_full_observation=False),
    ],
    "tag_continuous": [
        {"num_taggers": 2, "num_runners": 5, "episode_length": 30},
        {"num_taggers": 2, "num_runners": 5, "episode_length": 30, "use_full_observation": False},
        dict(TAG_CONTINUOUS_TRAINING, num_taggers=10, num_runners=100),
        dict(TAG_CONTINUOUS_TRAINING, num_taggers=100, num_runners=900),
    ],
}
CASES.update({name: [{}] for name in REGISTRY if name not in CASES})
# An env that is not bit-identical on the GPU by design (Env.bit_identical_on_gpu False: it calls the targets' own
# transcendental functions) is compared with the tolerance the CI consistency tests use; every packaged env is.
TOLERANCE = 1e-5


def check(case: tuple[str, dict, str, int | None]) -> tuple[bool, str]:
    """One (env, parameters, start mode, replicas or None for the default): (consistent, a line to print)."""
    name, kwargs, start, num_envs = case
    t0 = time.perf_counter()
    try:
        if num_envs is None:
            # 4 replicas of the 1000-agent envs: 16 took ~115 ms per CPU step on 2 cores (1001-step runs)
            num_envs = 16 if env_class(name).num_agents_of(env_class(name).Config(**kwargs)) <= 200 else 4
        cpu = make(name, num_envs=num_envs, device="cpu", start=start, **kwargs)
        gpu = make(name, num_envs=num_envs, device="cuda", start=start, validate=True, **kwargs)
        tolerance = 0.0 if env_class(name).bit_identical_on_gpu else TOLERANCE
        report = check_consistency(cpu, gpu, seed=3, atol=tolerance, rtol=0.0)
        ok, status = report.ok, str(report)
    except Exception as error:  # keep checking the others
        ok, status = False, f"ERROR {error!r}"[:300]
    shown = {k: v for k, v in kwargs.items() if k not in TAG_CONTINUOUS_TRAINING or k.startswith("num_")}
    return ok, f"{name} {start} {num_envs} x {shown}: {status} [{time.perf_counter() - t0:.1f}s]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"envs (default: all of {list(CASES)})")
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                        help="cases checked at once, each in its own process (compilation dominates)")
    parser.add_argument("--min-agents", type=int, default=0, help="only the cases with at least this many agents")
    parser.add_argument("--min-envs", type=int, default=0,
                        help="with --shapes: only the cases with at least this many replicas")
    parser.add_argument("--shapes", action="store_true",
                        help="check every env at the contract's shape sweep instead of the cases above")
    parser.add_argument("--in-process", action="store_true",
                        help="check the cases one after another in this process: cases that share a program compile "
                             "it once (worker processes each compile their own while the disk cache is empty)")
    args = parser.parse_args()

    def agents(case: tuple[str, dict, str, int | None]) -> int:
        return env_class(case[0]).num_agents_of(env_class(case[0]).Config(**case[1]))

    names = args.names or list(CASES)
    if args.shapes:
        cases = [(name, kwargs, start, num_envs) for name in names
                 for num_envs, _, kwargs in shape_sweep(env_class(name), {}) for start in env_class(name).start_modes]
    else:
        cases = [(name, kwargs, start, None) for name in names for kwargs in CASES[name]
                 for start in env_class(name).start_modes]
    cases = [case for case in cases if agents(case) >= args.min_agents and (case[3] or 0) >= args.min_envs]
    # the largest first: they take longest (the CPU side), and the small ones fill the workers meanwhile
    cases.sort(key=lambda case: -agents(case))
    results = []
    if args.in_process:
        for case in cases:
            results.append(check(case))
            print(results[-1][1], flush=True)
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in as_completed([pool.submit(check, case) for case in cases]):  # each line once known
                results.append(done.result())
                print(results[-1][1], flush=True)
    failures = sum(not ok for ok, _ in results)
    print(f"{len(results) - failures} consistent, {failures} not")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
