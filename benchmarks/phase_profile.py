"""Where an env's step spends its time: each phase of the step program as a CUDA kernel of its own, timed.

    python benchmarks/phase_profile.py tc_default gw_1000_agents [--steps 20] [--out DIR]

The env's own step phases are separated by launch boundaries (the core's phases stay with their neighbours:
drawing the actions and beginning the step with the env's first phase, ending it with its last, the gated
autoreset as launches of its own), so that the profiler (torch.profiler, CUPTI) gives each its kernel time.
Separate kernels add launch gaps and lose the L1 contents between phases, so the parts add up to more than
the fused step; the fused step's time (a CUDA graph of the same steps, events) is printed beside them. The
results of both programs are the same (launch boundaries never change results).

Prints a table per configuration and one JSON line each (``phase_profile.jsonl`` under ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

import torch
from env_throughput import CONFIGS, capture_steps, env_kwargs

from warpdrive.core.compile import NEW_LAUNCH, LaunchBoundary, Phase
from warpdrive.core.targets import cache_name
from warpdrive.envs import make


def describe(phase: Phase) -> str:
    names = "+".join(getattr(fn, "__name__", "?").split(".")[-1] for fn in phase.fns)
    return f"{phase.over}:{names}"


def split_every_phase(env: Any) -> list[str]:
    """Make every env step phase a launch of its own; returns the step stages' descriptions, in order."""
    step_phases, reset_phases = env.program_phases()
    phases = [ph for ph in step_phases if not isinstance(ph, LaunchBoundary)]
    split: list[Any] = []
    for phase in phases:
        split += [phase, NEW_LAUNCH]
    split.pop()
    env.program_phases = lambda: (tuple(split), reset_phases)
    labels = [describe(ph) for ph in phases]
    labels[0] = "actions, begin + " + labels[0]
    labels[-1] += " + end, autoreset (first reset stage)"
    return labels


def step_time(env: Any, steps: int, replays: int) -> float:
    """Seconds per random_step of the fused program, from a CUDA graph of ``steps`` steps."""
    graph = capture_steps(env.random_step, steps)
    graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / steps)
    return statistics.median(times)


def profile(name: str, steps: int) -> dict[str, Any]:
    env_name, kwargs, num_envs = env_kwargs(name)
    fused = make(env_name, num_envs=num_envs, device="cuda", seed=0, **kwargs)
    fused.reset(seed=0)
    fused_s = step_time(fused, 50, 10)

    env = make(env_name, num_envs=num_envs, device="cuda", seed=0, **kwargs)
    labels = split_every_phase(env)
    env.reset(seed=0)
    for _ in range(5):
        env.random_step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            env.random_step()
        torch.cuda.synchronize()
    prefix = cache_name(env.program_name("step"))  # each stage's kernel name holds it (Numba mangles the rest)
    kernels = sorted((e for e in prof.events() if prefix in e.name), key=lambda e: e.time_range.start)
    stages = len(env._program("step").kernels(env.shape))
    per_stage: list[list[float]] = [[] for _ in range(stages)]
    for i, event in enumerate(kernels):
        per_stage[i % stages].append(event.time_range.elapsed_us())
    labels += [f"autoreset stage {i}" for i in range(1, stages - len(labels) + 1)]
    rows = [(label, statistics.median(times) if times else float("nan"))
            for label, times in zip(labels, per_stage, strict=True)]
    return {"name": name, "env": env_name, "agents": env.num_agents, "envs": num_envs,
            "fused_step_us": fused_s * 1e6, "env_steps_per_s": num_envs / fused_s,
            "kernels_seen": len(kernels), "phases": [{"phase": label, "us": us} for label, us in rows],
            "device": torch.cuda.get_device_name()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="+", choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    for name in args.names:
        result = profile(name, args.steps)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(os.path.join(args.out, "phase_profile.jsonl"), "a") as f:
                f.write(line + "\n")
        total = sum(r["us"] for r in result["phases"])
        print(f"\n{name}: fused step {result['fused_step_us']:.1f} us ({result['env_steps_per_s'] / 1e6:.2f}M "
              f"env-steps/s); phases as separate kernels {total:.1f} us")
        for row in result["phases"]:
            print(f"  {row['us']:8.1f} us  {100 * row['us'] / total:5.1f}%  {row['phase']}")


if __name__ == "__main__":
    main()
