"""CPU vs CUDA consistency of every example env on a real GPU (the tests do the same in the simulator).

    python benchmarks/gpu_check.py [ENV ...]

Prints one line per (env, configuration): steps compared, episodes finished, first divergence if any.
"""

from __future__ import annotations

import sys
import time

from warpdrive.core.checker import check_consistency
from warpdrive.envs import make

CASES = {
    "tag_gridworld": [
        {"num_taggers": 3, "episode_length": 20},
        {"num_taggers": 3, "episode_length": 20, "use_full_observation": False},
        {"num_taggers": 300, "grid_length": 20, "episode_length": 10, "use_full_observation": False},
    ],
    "tag_continuous": [
        {"num_taggers": 2, "num_runners": 5, "episode_length": 30},
        {"num_taggers": 2, "num_runners": 5, "episode_length": 30, "use_full_observation": False},
        {"num_taggers": 10, "num_runners": 100, "grid_length": 20.0, "episode_length": 40,
         "use_full_observation": False, "num_other_agents_observed": 10, "tagging_distance": 0.02,
         "max_acceleration": 0.1, "min_acceleration": -0.1, "num_acceleration_levels": 20, "num_turn_levels": 20},
        {"num_taggers": 100, "num_runners": 900, "grid_length": 20.0, "episode_length": 5,
         "use_full_observation": False, "num_other_agents_observed": 10, "tagging_distance": 0.02},
    ],
    "cartpole": [{}],
    "pendulum": [{}],
}


def main() -> int:
    names = sys.argv[1:] or list(CASES)
    failures = 0
    for name in names:
        for kwargs in CASES[name]:
            for start in ("random", "identical"):
                t0 = time.perf_counter()
                try:
                    cpu = make(name, num_envs=16, device="cpu", start=start, **kwargs)
                    gpu = make(name, num_envs=16, device="cuda", start=start, validate=True, **kwargs)
                    report = check_consistency(cpu, gpu, seed=3)
                    status = str(report)
                    failures += not report.ok
                except Exception as error:  # keep checking the others
                    status = f"ERROR {error!r}"[:300]
                    failures += 1
                print(f"{name} {start} {kwargs}: {status} [{time.perf_counter() - t0:.1f}s]", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
