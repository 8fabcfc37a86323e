"""Env-only throughput of warpdrive's Tag and MPE envs, by the protocol of shared/bench/README.md.

Every step draws fresh random actions on the device (from the env's action space, inside the step kernel),
keeps every output a trainer reads (observations, rewards, terminated/truncated, final observations), and
resets finished envs in place inside the timed loop (the fused step kernel does that). Beside it: the same
with a separate sampling pass, and the reference's looser protocol (actions reused, no resets).
Compilation happens in a warm-up process; each configuration then runs in a fresh process so that its
setup time is what a user sees with the compiled code cached. Timing: CUDA synchronised around the timed
region, median of ``--repeats`` runs.

    python benchmarks/env_throughput.py                 # every configuration, one JSON line each
    python benchmarks/env_throughput.py gw_default      # some of them

Prints one JSON line per configuration, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# name: (env, env kwargs, num_envs)
CONFIGS: dict[str, tuple[str, dict, int]] = {
    "tc_default": ("tag_continuous", {"num_taggers": 10, "num_runners": 100}, 100),
    "tc_readme": ("tag_continuous", {"num_taggers": 5, "num_runners": 100}, 60),
    "tc_mid": ("tag_continuous", {"num_taggers": 10, "num_runners": 90}, 1000),
    "tc_many_envs": ("tag_continuous", {"num_taggers": 2, "num_runners": 8}, 2000),
    "tc_1000_agents": ("tag_continuous", {"num_taggers": 100, "num_runners": 900}, 2000),
    "gw_default": ("tag_gridworld", {"num_taggers": 4}, 2000),
    "gw_1000_agents": ("tag_gridworld", {"num_taggers": 999, "use_full_observation": False}, 2000),
}
# The peers' simple_tag sizes (shared/bench/reference_peers.py: JaxMARL and VMAS), mpe2's defaults otherwise:
# (good agents, adversaries, obstacles) = (1, 3, 2), (10, 30, 5), (25, 75, 10), each at 1,000 / 10,000 / 30,000 envs.
for _good, _adversaries, _obstacles in ((1, 3, 2), (10, 30, 5), (25, 75, 10)):
    for _envs in (1000, 10000, 30000):
        CONFIGS[f"st_{_good + _adversaries}_{_envs}"] = (
            "simple_tag", {"num_good": _good, "num_adversaries": _adversaries, "num_obstacles": _obstacles}, _envs)

# The reference's shipped training configs (shared/specs): the env parameters every tc_* run uses.
TAG_CONTINUOUS_TRAINING = {
    "grid_length": 20.0, "episode_length": 500, "max_acceleration": 0.1, "min_acceleration": -0.1,
    "max_turn": 2.356, "min_turn": -2.356, "num_acceleration_levels": 20, "num_turn_levels": 20,
    "edge_hit_penalty": 0.0, "use_full_observation": False, "num_other_agents_observed": 10,
    "tagging_distance": 0.02, "tag_reward_for_tagger": 10.0, "step_penalty_for_tagger": 0.0,
    "tag_penalty_for_runner": -10.0, "step_reward_for_runner": 0.0,
}
TAG_GRIDWORLD_TRAINING = {"grid_length": 100, "episode_length": 100, "tag_penalty_for_runner": 5.0}


def env_kwargs(name: str) -> tuple[str, dict, int]:
    env_name, kwargs, num_envs = CONFIGS[name]
    base = {"tag_continuous": TAG_CONTINUOUS_TRAINING, "tag_gridworld": TAG_GRIDWORLD_TRAINING}.get(env_name, {})
    return env_name, {**base, **kwargs}, num_envs


def kernel_resources(env) -> dict:
    """Registers and local memory per thread of each compiled CUDA kernel of the step (one per launch stage)."""
    kernels = [next(iter(k.overloads.values())) for k in env._program("step").kernels(env.shape) if k.overloads]
    return {"regs": [k.regs_per_thread for k in kernels], "local_bytes": [k.local_mem_per_thread for k in kernels]}


def parse_settings(settings: list[str]) -> dict:
    """``["key=value", ...]`` (values parsed as YAML scalars) as env keyword arguments."""
    import yaml

    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {setting!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed


def capture_steps(step: Callable[[], object], steps: int) -> torch.cuda.CUDAGraph:
    """``steps`` calls of ``step`` captured in one CUDA graph, after three warm-up calls on a side stream (what
    lazy initialisation there is happens before the capture, as torch asks)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(steps):
            step()
    return graph


def measure(name: str, steps_per_graph: int, replays: int, repeats: int, tune: bool = False,
            settings: dict | None = None, register_caps: list[int] | None = None) -> dict:
    """Env-steps/s of one configuration by three loops, each replayed from a CUDA graph on a GPU:

    - ``env_steps_per_s`` (the strict protocol): fresh uniformly random actions every step, drawn inside the
      step kernel (``env.random_step()``), autoresets inside the loop;
    - ``env_steps_per_s_separate_sampling``: the same with a separate sampling pass before each step
      (``env.sample_actions(); env.step()``: torch's generator);
    - ``env_steps_per_s_loose`` (the reference's own protocol): the last actions reused, no resets
      (``env.step_without_reset()``).
    """
    import torch

    from warpdrive.core.compile import LaunchShape
    from warpdrive.envs import make
    from warpdrive.training.tune import launch_candidates

    env_name, kwargs, num_envs = env_kwargs(name)
    kwargs = {**kwargs, **(settings or {})}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.zeros(1, device=device)  # CUDA context, outside setup
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    env = make(env_name, num_envs=num_envs, device=device, seed=0, **kwargs)
    env.reset(seed=0)
    env.random_step()
    sync()
    setup_s = time.perf_counter() - t0

    def separate_sampling() -> None:
        env.sample_actions()
        env.step()

    loops = {"env_steps_per_s": env.random_step, "env_steps_per_s_separate_sampling": separate_sampling,
             "env_steps_per_s_loose": env.step_without_reset}

    def run_eager(n: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            env.random_step()
        sync()
        return time.perf_counter() - start

    eager_steps = steps_per_graph * max(1, replays // 4)
    run_eager(5)
    eager = statistics.median(eager_steps * num_envs / run_eager(eager_steps) for _ in range(repeats))
    result = {
        "name": name, "algorithm": "random", "env": env_name, "agents": env.num_agents, "envs": num_envs,
        "setup_s": round(setup_s, 2), "env_steps_per_s_eager": round(eager),
    }
    if device != "cuda":
        result.update(env_steps_per_s=round(eager), device="cpu", agent_steps_per_s=round(eager * env.num_agents))
        return result

    def rate(graph: torch.cuda.CUDAGraph, n_replays: int, n_repeats: int) -> float:
        def timed() -> float:
            sync()
            start = time.perf_counter()
            for _ in range(n_replays):
                graph.replay()
            sync()
            return n_replays * steps_per_graph * num_envs / (time.perf_counter() - start)

        timed()
        return statistics.median(timed() for _ in range(n_repeats))

    for key, step in loops.items():
        env.reset(seed=0)
        result[key] = round(rate(capture_steps(step, steps_per_graph), replays, repeats))
    result["launch"] = [env.shape.lanes, env.shape.envs_per_block]
    result.update(kernel_resources(env))
    if tune:
        tuned = {}
        default = env.shape
        registers = max([1, *result.get("regs", [])])
        for cap in register_caps or [None]:
            for candidate in launch_candidates(default):
                lanes, per_block = candidate.lanes, candidate.envs_per_block
                if lanes * per_block * (cap or registers) > 65536:  # the register file of one multiprocessor
                    continue
                env.shape = LaunchShape(lanes, per_block, cap)
                env.reset(seed=0)
                label = f"{lanes}x{per_block}" + (f"r{cap}" if cap else "")
                try:
                    tuned[label] = round(rate(capture_steps(env.random_step, steps_per_graph), max(2, replays // 4), 1))
                except Exception as error:  # e.g. more threads per block than the kernel's registers allow
                    tuned[label] = repr(error)[:60]
                    torch.cuda.synchronize()
            if cap:
                tuned[f"r{cap}"] = kernel_resources(env)
        env.shape = default
        result["tuned"] = tuned
    result["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    result["device"] = torch.cuda.get_device_name()
    result["agent_steps_per_s"] = round(result["env_steps_per_s"] * env.num_agents)
    result["mean_episodes_started"] = round(float(env.store["episode"].double().mean()), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"configurations (default: all of {list(CONFIGS)})")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-graph", type=int, default=50)
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for env_throughput.jsonl")
    parser.add_argument("--tune", action="store_true", help="also time launch shapes around the default")
    parser.add_argument("--max-registers", default="", metavar="N,M,...",
                        help="with --tune: also time each shape under these register caps (0: no cap)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an env parameter for every configuration, e.g. a speed knob (repeatable)")
    args = parser.parse_args()
    settings = parse_settings(args.set)
    register_caps = [int(n) or None for n in args.max_registers.split(",") if n]

    if args.one:
        try:
            result = measure(args.one, args.steps_per_graph, args.replays, args.repeats, args.tune, settings,
                             register_caps)
            if settings:
                result["settings"] = settings
        except Exception as error:  # report and keep the other configurations going
            traceback.print_exc()
            result = {"name": args.one, "error": repr(error)[:400]}
        print(json.dumps(result), flush=True)
        return

    names = args.names or list(CONFIGS)
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    common = [f"--steps-per-graph={args.steps_per_graph}", f"--replays={args.replays}", f"--repeats={args.repeats}"]
    common += ["--tune"] if args.tune else []
    common += [f"--max-registers={args.max_registers}"] if args.max_registers else []
    common += [f"--set={setting}" for setting in args.set]
    # Warm-up: compile (or load) every kernel once, so that the measured processes see a warm cache.
    for name in names:
        subprocess.run([sys.executable, __file__, "--one", name, "--steps-per-graph=2", "--replays=1", "--repeats=1",
                        *(f"--set={setting}" for setting in args.set)], check=False, capture_output=True)
    results = []
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--one", name, *common], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"name": name, "error": proc.stderr[-400:]}
        if "error" in result:
            print(proc.stderr[-3000:], file=sys.stderr)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        with open(os.path.join(args.out, "env_throughput.jsonl"), "a") as handle:
            for result in results:
                handle.write(json.dumps(result) + "\n")
    print(f"\n{'config':16s} {'env-steps/s':>14s} {'sep. sampling':>14s} {'loose':>14s} {'eager':>12s} "
          f"{'setup s':>8s} {'regs':>5s} {'best shape':>22s}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:16s} ERROR {r['error'][:90]}")
            continue
        timed = {shape: rate for shape, rate in r.get("tuned", {}).items() if isinstance(rate, int)}
        best = max(timed.items(), key=lambda item: item[1]) if timed else ("", 0)
        print(f"{r['name']:16s} {r['env_steps_per_s']:>14,d} {r.get('env_steps_per_s_separate_sampling', 0):>14,d} "
              f"{r.get('env_steps_per_s_loose', 0):>14,d} {r['env_steps_per_s_eager']:>12,d} {r['setup_s']:>8.2f} "
              f"{'/'.join(map(str, r.get('regs', []))):>5s} {best[0]:>10s} {best[1]:>11,d}")


if __name__ == "__main__":
    main()
