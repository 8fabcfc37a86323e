"""What the step kernel's action checks cost (``check_actions``), on and off interleaved in one process.

    python benchmarks/action_check_cost.py gw_default tc_mid tc_default [--rounds 8] [--out DIR]

Per configuration: two envs, checks on and off; for each, two loops captured in CUDA graphs of ``--steps`` steps
with given actions (the loops that check): the last actions reused (``step_without_reset``, the reference's loose
protocol) and actions drawn by a separate sampling pass before each step (as a trainer gives them). The four graphs
are replayed in turn over ``--rounds`` rounds, so that on and off see the same machine state; medians. One JSON line
per (configuration, loop), also appended to DIR/action_check_cost.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from env_throughput import capture_steps, env_kwargs

from warpdrive.envs import make


def measure(name: str, steps: int, replays: int, rounds: int) -> list[dict]:
    """Env-steps/s of both loops with checks on and off, and the relative cost, for one configuration."""
    env_name, kwargs, num_envs = env_kwargs(name)
    graphs = {}
    for checks in (True, False):
        env = make(env_name, num_envs=num_envs, device="cuda", seed=0, check_actions=checks, **kwargs)
        env.reset(seed=0)
        env.sample_actions()

        def separate(env=env) -> None:
            env.sample_actions()
            env.step()

        for loop, step in (("loose", env.step_without_reset), ("separate", separate)):
            graphs[loop, checks] = capture_steps(step, steps)
    rates: dict[tuple[str, bool], list[float]] = {key: [] for key in graphs}
    for _ in range(rounds):
        for key, graph in graphs.items():
            graph.replay()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(replays):
                graph.replay()
            torch.cuda.synchronize()
            rates[key].append(replays * steps * num_envs / (time.perf_counter() - start))
    rows = []
    for loop in ("loose", "separate"):
        on, off = (statistics.median(rates[loop, checks]) for checks in (True, False))
        rows.append({"name": name, "loop": loop, "algorithm": "random", "device": torch.cuda.get_device_name(),
                     "env_steps_per_s_checks_on": round(on), "env_steps_per_s_checks_off": round(off),
                     "cost": round(1 - on / off, 4), "rounds": rounds,
                     "spread_on": round((max(rates[loop, True]) - min(rates[loop, True])) / on, 4),
                     "spread_off": round((max(rates[loop, False]) - min(rates[loop, False])) / off, 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="configurations of env_throughput.py")
    parser.add_argument("--steps", type=int, default=50, help="steps per captured graph")
    parser.add_argument("--replays", type=int, default=6, help="graph replays per timing")
    parser.add_argument("--rounds", type=int, default=8, help="timings of each graph, taken in turn")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for action_check_cost.jsonl")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("action_check_cost.py needs a CUDA GPU")
    for name in args.names:
        for row in measure(name, args.steps, args.replays, args.rounds):
            print(json.dumps(row), flush=True)
            if args.out:
                with open(os.path.join(args.out, "action_check_cost.jsonl"), "a") as f:
                    f.write(json.dumps(row) + "\n")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
