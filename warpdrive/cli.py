"""The ``warpdrive`` command: train, eval, render, bench, envs, check, tune.

::

    warpdrive train CONFIG [key.path=value ...] [--resume RUN_DIR_OR_CHECKPOINT] [--seeds N [--concurrent K]]
    warpdrive eval CHECKPOINT [--episodes N] [--deterministic]
    warpdrive render CHECKPOINT --out FILE.gif|FILE.mp4
    warpdrive render CONFIG_OR_ENV --random --out FILE.gif|FILE.mp4
    warpdrive bench [ENV] [--envs N ...]
    warpdrive envs [ENV]
    warpdrive check ENV [key=value ...] [--steps N] [--no-ptx]
    warpdrive tune CONFIG [key.path=value ...] [--margin 0.9]

CONFIG is a YAML file, the name of an env with a packaged config (``tag_gridworld``, ``cartpole``, ...), or
any other env name (``path/to/file.py:Class``, ``package.module:Class``, an installed entry point), which
trains that env with the default config (give ``total_env_steps=N``).
CHECKPOINT is a run directory (its newest checkpoint) or a checkpoint file.
The current directory is on the import path, as with ``python -m``, so ``module:Class`` finds ``./module.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="warpdrive", description="Multi-agent RL with envs and training on the GPU.")
    parser.add_argument("--version", action="version", version=f"warpdrive {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="full tracebacks of errors in an env's code (also WARPDRIVE_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train policies from a config",
                                description=f"Train policies. Example: {TRAIN_EXAMPLE}")
    train.add_argument("config", nargs="?", help="YAML file, packaged env config name, or env name such as "
                                                 "path/to/file.py:Class (optional with --resume)")
    train.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides (YAML values)")
    train.add_argument("--resume", metavar="RUN_DIR_OR_CKPT",
                       help="continue a run from its newest checkpoint (or the one given)")
    train.add_argument("--seeds", type=int, metavar="N",
                       help="train N runs, with seeds seed .. seed+N-1, each in <run>/seed_<s> (at once on "
                            "a GPU, one after another on the CPU), and aggregate their returns (mean, 95%% "
                            "bootstrap interval)")
    train.add_argument("--concurrent", type=int, metavar="K",
                       help="with --seeds on a GPU: train at most K runs at once (default: all N)")

    evaluate = commands.add_parser("eval", help="mean return per group of a checkpoint vs a random policy")
    evaluate.add_argument("checkpoint", help="run directory or checkpoint file")
    evaluate.add_argument("--episodes", type=int, default=100, help="episodes (one per env replica; default 100)")
    evaluate.add_argument("--deterministic", action="store_true", help="most likely actions instead of samples")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:N (default: the checkpoint's config)")
    evaluate.add_argument("--seed", type=int, default=12345, help="env seed of the evaluation episodes")

    render = commands.add_parser("render", help="animate one episode of a checkpoint's policies (or of random "
                                                "actions: --random)")
    render.add_argument("checkpoint", help="run directory or checkpoint file; with --random, a config or env name "
                                           "as train takes it")
    render.add_argument("--random", action="store_true",
                        help="uniformly random actions in the env of CHECKPOINT, here a config or env name: no "
                             "training needed")
    render.add_argument("--out", required=True, help="output file, .gif or .mp4")
    render.add_argument("--fps", type=int, default=10)
    render.add_argument("--deterministic", action="store_true", help="most likely actions instead of samples")
    render.add_argument("--device", help="cpu, cuda, cuda:N (default: cpu)", default="cpu")
    render.add_argument("--seed", type=int, default=0, help="env seed of the episode")

    bench = commands.add_parser("bench", help="env-only and training env-steps/s, as JSON lines")
    bench.add_argument("env", nargs="?", default="tag_gridworld", help="env name (default tag_gridworld)")
    bench.add_argument("--envs", type=int, nargs="+", default=[1000], metavar="N", help="numbers of env replicas")
    bench.add_argument("--steps", type=int, default=200, help="env steps per timed repeat (env-only)")
    bench.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    bench.add_argument("--iterations", type=int, default=3, help="timed training iterations (0: skip training)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    bench.add_argument("--config", help="training config for the training benchmark (default: the env's packaged one, "
                                        "else the default config)")
    bench.add_argument("overrides", nargs="*", metavar="key.path=value", help="overrides of the training config")

    envs = commands.add_parser("envs", help="the available envs: groups, spaces and parameters",
                               description="List the envs available by name (registered, and installed packages' "
                                           "entry points of group warpdrive.envs), or describe one env.")
    envs.add_argument("env", nargs="?", help="one env: a name, package.module:Class or path/to/file.py:Class")

    check = commands.add_parser(
        "check", help="run the env contract on an env: CPU vs CUDA, seeding, bad input, finite outputs, PTX",
        description="Check that an env meets the contract every env meets (warpdrive.core.contract): parameters "
                    "and actions refused by name, seeding, finite outputs, batch invariance at several replica and "
                    "agent counts, rendering, the CPU and CUDA "
                    "compilations step by step (the GPU, else Numba's simulator), and compilation for the GPU. "
                    f"Exit status 0: every check passes; 1: a check fails; 2: bad input. Example: {CHECK_EXAMPLE}")
    check.add_argument("env", help="a name, package.module:Class or path/to/file.py:Class")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="env parameters (YAML values)")
    check.add_argument("--steps", type=int, help="steps per run (default: two episodes and one step)")
    check.add_argument("--no-ptx", action="store_true", help="skip compiling for the GPU")

    tune = commands.add_parser(
        "tune", help="the most env replicas a training config fits in memory, and the fastest launch shape",
        description="Measure a training run of CONFIG at two small replica counts, fit its memory as fixed + "
                    "per replica, and print the largest env.num_envs that fits in --margin of the free memory "
                    "(device memory on CUDA; on the CPU, the env's arrays and rollout storage against available "
                    "host memory); on CUDA, then time the env's launch shapes at that size (env.launch). "
                    f"Example: {TUNE_EXAMPLE}")
    tune.add_argument("config", help="YAML file, packaged env config name, or env name")
    tune.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides (YAML values)")
    tune.add_argument("--margin", type=float, default=0.9, help="fraction of the free memory to fill (default 0.9)")
    tune.add_argument("--steps", type=int, default=50, help="steps per timed launch shape (CUDA)")
    return parser


#: The example of ``warpdrive tune --help`` (tests/test_cli.py runs it).
TUNE_EXAMPLE = "warpdrive tune cartpole"
#: The example of ``warpdrive train --help`` (tests/test_cli.py runs it).
TRAIN_EXAMPLE = "warpdrive train tag_gridworld total_env_steps=200000 policies.taggers.optimizer.lr=3e-4"
#: The example of ``warpdrive check --help`` (tests/test_cli.py runs it).
CHECK_EXAMPLE = "warpdrive check examples/rendezvous.py:Rendezvous num_agents=4 episode_length=10"


def _version() -> str:
    try:
        return importlib.metadata.version("warpdrive")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        from warpdrive import __version__

        return __version__


def _split_config(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``warpdrive train key=value --resume X`` has no CONFIG: argparse put the first override there."""
    if config is not None and "=" in config and not Path(config).is_file():
        return None, [config, *overrides]
    return config, overrides


def _train(args: argparse.Namespace) -> int:
    from warpdrive.core.actions import InvalidActionError
    from warpdrive.training.checkpoint import load_checkpoint
    from warpdrive.training.config import ConfigError, load_config
    from warpdrive.training.guard import NonFiniteError
    from warpdrive.training.run import train

    source, overrides = _split_config(args.config, args.overrides)
    if args.concurrent is not None:
        if args.seeds is None:
            raise ConfigError("--concurrent", "applies to several seeds: add --seeds N")
        _at_least("--concurrent", args.concurrent, 1)
    if args.seeds is not None:
        _at_least("--seeds", args.seeds, 1)
        if args.resume is not None:
            raise ConfigError("--seeds", "starts new runs: resume each seed's run (<run>/seed_<s>) with --resume")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("--seeds", "runs the seeds in one process: start it without torchrun")
    resume = None
    if args.resume is not None:
        # found once (a damaged newest checkpoint falls back to an older one, with a warning), then named
        checkpoint, state = load_checkpoint(args.resume)
        resume = checkpoint.state_path
    if source is None:
        if args.resume is None:
            raise ConfigError("CONFIG", "missing: give a YAML file, a packaged name such as tag_gridworld, or "
                                        "--resume RUN_DIR")
        config = load_config(state["config"], overrides)
    else:
        config = load_config(source, overrides)
    args.training_config = config  # for the advice of an out-of-memory error (main)
    if args.seeds is not None:
        return _train_seeds(args, config)
    start = time.perf_counter()
    try:
        result = train(config, resume=resume)
    except (NonFiniteError, InvalidActionError) as err:  # the run diverged: status 1 (2 is for bad input)
        print(f"warpdrive train: error: {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    if result.rank != 0:  # one of several processes (torchrun): rank 0 reports
        return 0
    print(f"Trained {result.env_steps:,} env-steps in {seconds:.1f} s ({config.env.name}).")
    returns = {k.split("/")[-1]: v for k, v in result.last_metrics.items() if k.startswith("charts/episodic_return/")}
    if returns:
        print("Mean episodic return (last iteration): " + ", ".join(f"{g} {v:.3f}" for g, v in returns.items()))
    print(f"  run directory:  {result.run_dir}")
    print(f"  config:         {result.config_path}")
    print(f"  metrics:        {result.metrics_path}")
    if result.tensorboard_dir is not None:
        print(f"  TensorBoard:    tensorboard --logdir {result.tensorboard_dir}")
    if result.learning_curve is not None:
        print(f"  learning curve: {result.learning_curve}")
    if result.checkpoint is not None:
        print(f"  checkpoint:     {result.checkpoint.state_path}")
        print(f"  evaluate:       warpdrive eval {result.run_dir}")
        print(f"  render:         warpdrive render {result.run_dir} --out {result.run_dir / 'episode.gif'}")
        command = "warpdrive" if int(os.environ.get("WORLD_SIZE", "1")) == 1 else \
            "torchrun <the same flags> -m warpdrive"  # the checkpoint resumes with as many ranks
        print(f"  resume:         {command} train --resume {result.run_dir} total_env_steps=<more>")
    return 0


def _train_seeds(args: argparse.Namespace, config: Any) -> int:
    from warpdrive.core.actions import InvalidActionError
    from warpdrive.training.guard import NonFiniteError
    from warpdrive.training.seeds import train_seeds

    start = time.perf_counter()
    try:
        result = train_seeds(config, args.seeds, args.concurrent)
    except (NonFiniteError, InvalidActionError) as err:  # a run diverged: status 1
        print(f"warpdrive train: error: {err}", file=sys.stderr)
        return 1
    seeds = result.summary["seeds"]
    at_once = result.summary["concurrent"]
    print(f"Trained {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}) of {config.env.name} in "
          f"{time.perf_counter() - start:.1f} s ({'one at a time' if at_once == 1 else f'{at_once} at a time'}).")
    for group, final in result.summary["final_return"].items():
        per_seed = ", ".join("-" if v is None else f"{v:.3f}" for v in final["per_seed"])
        print(f"Final mean episodic return, {group}: {final['mean']:.3f} (95% bootstrap interval "
              f"{final['ci_low']:.3f} .. {final['ci_high']:.3f}; per seed {per_seed})")
    print(f"  runs:           {result.group_dir}/seed_<s>")
    print(f"  aggregate:      {result.aggregate_path}")
    print(f"  summary:        {result.summary_path}")
    if result.curve is not None:
        print(f"  learning curve: {result.curve}")
    return 0


def _eval_overrides(args: argparse.Namespace, num_envs: int) -> list[str]:
    overrides = [f"env.num_envs={num_envs}", "logging.progress=false"]
    if args.device:
        overrides.append(f"device={args.device}")
    return overrides


def _eval(args: argparse.Namespace) -> int:
    from warpdrive.envs import label
    from warpdrive.training.evaluate import evaluate
    from warpdrive.training.run import trainer_from_checkpoint

    _at_least("--episodes", args.episodes, 1)
    trainer, checkpoint = trainer_from_checkpoint(args.checkpoint, _eval_overrides(args, args.episodes))
    trained = evaluate(trainer, deterministic=args.deterministic, seed=args.seed)
    random = evaluate(trainer, random_actions=True, seed=args.seed)
    print(f"{label(trainer.config.env.name)}, checkpoint {checkpoint.name}, {args.episodes} episodes per policy:")
    print(f"  {'':24}{'trained':>12}{'random':>12}")
    for key in trained:
        if key != "episodes":
            print(f"  {key:24}{trained[key]:12.3f}{random[key]:12.3f}")
    print(json.dumps({"checkpoint": str(checkpoint.state_path), "trained": trained, "random": random}))
    return 0


def _render(args: argparse.Namespace) -> int:
    from warpdrive.training.config import ConfigError, load_config
    from warpdrive.training.render import output_path, render_episode, render_random_episode
    from warpdrive.training.run import trainer_from_checkpoint
    from warpdrive.training.trainer import make_env, resolve_device

    try:  # before the checkpoint is loaded and its env built
        output_path(args.out)
    except ValueError as err:
        raise ConfigError("--out", str(err)) from None
    _at_least("--fps", args.fps, 1)
    if args.random:
        if args.deterministic:
            raise ConfigError("--deterministic", "picks a trained policy's most likely actions; --random has none")
        # (an env without a config file needs total_env_steps to make a config; nothing is trained here)
        config = load_config(args.checkpoint, [*_eval_overrides(args, 1), "total_env_steps=1"])
        env = make_env(config, resolve_device(config.device), args.seed)
        print(f"wrote {render_random_episode(env, args.out, fps=args.fps, seed=args.seed)}")
        return 0
    trainer, _ = trainer_from_checkpoint(args.checkpoint, _eval_overrides(args, 1))
    out = render_episode(trainer, args.out, deterministic=args.deterministic, fps=args.fps, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from warpdrive.training.config import load_config
    from warpdrive.training.trainer import Trainer, make_env, resolve_device

    for option, values, least in (("--envs", args.envs, 1), ("--steps", [args.steps], 1),
                                  ("--repeats", [args.repeats], 1), ("--iterations", [args.iterations], 0)):
        for value in values:
            _at_least(option, value, least)
    device = resolve_device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for num_envs in args.envs:
        # one config for both rows: the env-only row runs the env the training row trains (its config's
        # parameters); an env without a packaged config trains with the defaults (give total_env_steps=N)
        config = load_config(args.config or args.env, [*args.overrides, f"env.num_envs={num_envs}", f"device={device}"])
        args.training_config = config  # for the advice of an out-of-memory error (main)
        start = time.perf_counter()
        env = make_env(config, device, config.seed, validate=False)  # sampled actions are valid
        env.reset(seed=0)
        for _ in range(3):  # compile and warm up
            env.sample_actions()
            env.step()
        sync()
        setup = time.perf_counter() - start
        rates = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                env.sample_actions()
                env.step()
            sync()
            rates.append(num_envs * args.steps / (time.perf_counter() - t0))
        _emit({"bench": "env", "env": args.env, "num_envs": num_envs, "num_agents": env.num_agents,
               "device": str(device), "env_steps_per_s": statistics.median(rates), "setup_s": setup,
               "actions": "uniform random, drawn on the device every step; resets inside the loop"})
        del env

        if args.iterations < 1:
            continue
        start = time.perf_counter()
        trainer = Trainer(config)
        trainer.train_iteration()  # compilation, graph capture
        setup = time.perf_counter() - start
        rates = [trainer.train_iteration()["charts/SPS"] for _ in range(args.iterations)]
        policies = {p.name: {"algorithm": p.algorithm.name, "agents": len(p.agent_ids),
                             "hidden_sizes": config.policies[p.name].model.hidden_sizes} for p in trainer.policies}
        _emit({"bench": "train", "env": args.env, "num_envs": num_envs, "num_agents": trainer.env.num_agents,
               "device": str(device),
               "env_steps_per_s": statistics.median(rates), "setup_s": setup, "rollout_length": config.rollout_length,
               "policies": policies, "cuda_graph": trainer.uses_cuda_graph,
               "mixed_precision": config.mixed_precision})
        del trainer
    return 0


def _tune(args: argparse.Namespace) -> int:
    from warpdrive.training.config import ConfigError, load_config
    from warpdrive.training.trainer import resolve_device
    from warpdrive.training.tune import fit_memory, time_launch_shapes

    if not 0 < args.margin <= 1:
        raise ConfigError("--margin", f"expected a fraction in (0, 1], got {args.margin}")
    _at_least("--steps", args.steps, 1)
    config = load_config(args.config, args.overrides)
    device = resolve_device(config.device)
    fit = fit_memory(config, device, args.margin)
    mib = 2**20
    print(f"memory: {fit.per_env / mib:.3f} MiB per env replica, {fit.fixed / mib:.1f} MiB besides (measured with "
          f"{fit.measured_at[0]} and {fit.measured_at[1]} replicas); {fit.free / 2**30:.2f} GiB {fit.where}")
    if fit.num_envs < 1:
        print(f"not even one env replica fits in {args.margin:.0%} of it")
        return 1
    print(f"fits: env.num_envs={fit.num_envs} (in {args.margin:.0%} of it; the config has {config.env.num_envs})")
    if device.type != "cuda":
        print("launch shapes: CUDA only (the CPU runs one thread per env replica)")
        return 0
    num_envs = min(fit.num_envs, config.env.num_envs)  # the config's size, where it fits
    rows = time_launch_shapes(config, device, num_envs, args.steps)
    print(f"launch shapes at env.num_envs={num_envs} (env-steps/s, random actions drawn in the step kernel):")
    for row in rows:
        rate = f"{row['env_steps_per_s']:>16,.0f}" if "env_steps_per_s" in row else f"  {row['error']}"
        print(f"  {row['launch'][0]:>5d} x {row['launch'][1]:<3d} {rate}{'  (default)' if row['default'] else ''}")
    timed = [row for row in rows if "env_steps_per_s" in row]
    best, default = max(timed, key=lambda row: row["env_steps_per_s"]), rows[0]
    gain = best["env_steps_per_s"] / default["env_steps_per_s"] - 1 if "env_steps_per_s" in default else 0.0
    print(f"fastest: env.launch=[{best['launch'][0]},{best['launch'][1]}] ({gain:+.0%} against the default)")
    return 0


#: what PyTorch's CPU allocator says when an allocation fails (a RuntimeError, not a MemoryError)
_CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"


def _out_of_memory(err: BaseException) -> bool:
    """A CUDA or CPU allocation that failed (PyTorch's, or Python's ``MemoryError``)."""
    import torch

    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or _CPU_ALLOCATION_FAILED in str(err)


def _out_of_memory_hint(args: argparse.Namespace, err: BaseException) -> str:
    """After an out-of-memory error: how many env replicas fit at most, estimated from the training config's
    shapes (:func:`~warpdrive.training.tune.out_of_memory_advice`, no GPU run), where the command ran one;
    else a pointer to ``warpdrive tune``."""
    import torch

    if args.command == "tune":  # tune's own measurement ran out: its error is the answer
        return ""
    config = getattr(args, "training_config", None)
    if config is not None:
        from warpdrive.training.tune import out_of_memory_advice

        try:
            return f" ({_one_line(out_of_memory_advice(config))})"
        except Exception:  # the estimate is a courtesy: it must never replace the error it explains
            pass
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return " (warpdrive tune CONFIG prints how many env replicas fit)"
    return ""


def _envs(args: argparse.Namespace) -> int:
    from warpdrive.envs import UnknownEnvError, available

    if args.env is not None:
        try:
            print("\n".join(_describe_env(args.env)))
        except UnknownEnvError as err:
            print(f"warpdrive envs: error: {err}", file=sys.stderr)
            return 2
        return 0
    for name in available():
        try:
            print("\n".join(_describe_env(name)))
        except UnknownEnvError as err:  # one broken package's env does not hide the others
            print(f"{name}: {err}")
    return 0


def _check(args: argparse.Namespace) -> int:
    import warnings

    from warpdrive.core.contract import check_env
    from warpdrive.core.device import cuda_available, simulator_enabled
    from warpdrive.envs import UnknownEnvError
    from warpdrive.training.config import apply_overrides

    if args.steps is not None:
        _at_least("--steps", args.steps, 1)
    kwargs = apply_overrides({}, args.overrides)
    if not cuda_available() and not simulator_enabled():
        # the simulator must be chosen before Numba is imported, which importing warpdrive did: run anew
        print("no CUDA GPU here: the CUDA kernels run in Numba's simulator", flush=True)
        argv = ["check", args.env, *args.overrides, *(["--steps", str(args.steps)] if args.steps else []),
                *(["--no-ptx"] if args.no_ptx else [])]
        environment = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
        return subprocess.call([sys.executable, "-m", "warpdrive", *argv], env=environment)
    # the simulator runs the kernels' integer hashing in NumPy, which warns where CUDA silently wraps around
    warnings.filterwarnings("ignore", "overflow", RuntimeWarning, "warpdrive.core.random")
    try:
        report = check_env(args.env, kwargs, steps=args.steps, ptx=not args.no_ptx)
    except (UnknownEnvError, ValueError, TypeError) as err:
        print(f"warpdrive check: error: {err}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


def _at_least(option: str, value: int, least: int) -> None:
    """Refuse ``option``'s ``value`` below ``least`` (a :class:`ConfigError`: one line, exit status 2)."""
    from warpdrive.training.config import ConfigError

    if value < least:
        raise ConfigError(option, f"expected an integer >= {least}, got {value}")


def _describe_env(name: str) -> list[str]:
    """Lines describing env ``name`` as built with its default config: agents, groups, spaces, parameters."""
    from warpdrive.envs import available, canonical_name, env_class

    cls = env_class(name)
    target = available().get(name, canonical_name(name))
    parameters = ", ".join(f"{f.name}={_default(f)}" for f in dataclasses.fields(cls.Config))
    try:
        env = cls(num_envs=1, backend="cpu", validate=False)
    except Exception as err:  # a user's env whose defaults do not build: reported, the listing goes on
        body = [f"cannot be built with its default config: {type(err).__name__}: {err}"]
        header = f"{name} ({target})"
    else:
        header = f"{name} ({target}): {env.num_agents} agent{'s' * (env.num_agents != 1)}"
        groups = env.groups()
        width = max(len(g) for g in groups)
        body = [f"{group:{width}}  {len(groups[group]):>4} x  observation {_space(obs)}, action {_space(action)}"
                for group, (obs, action) in env.group_spaces().items()]
    body += textwrap.wrap(f"parameters: {parameters}", width=116, subsequent_indent="  ")
    return [header, *(f"  {line}" for line in body)]


def _space(space: Any) -> str:
    """``repr`` of a space, with a Box's bounds shown only where one number bounds every dimension."""
    import gymnasium as gym
    import numpy as np

    if not isinstance(space, gym.spaces.Box):
        return repr(space)
    low, high = np.unique(space.low), np.unique(space.high)
    if len(low) == 1 and len(high) == 1:
        return f"Box({low[0]:g}, {high[0]:g}, {space.shape}, {space.dtype})"
    return f"Box({space.shape}, {space.dtype}, bounds per dimension)"


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "(required)"


def _emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


class _NoteFormatter(logging.Formatter):
    """The library's log records as the command's notes and warnings: ``warpdrive train: note: ...``."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        kind = "note" if record.levelno < logging.WARNING else record.levelname.lower()
        return f"warpdrive {self.command}: {kind}: {_one_line(record.getMessage())}"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``warpdrive`` command; returns the exit status (2: a user error, in one line on
    stderr)."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    from warpdrive.core.device import debug_requested

    debug = "--debug" in argv or debug_requested()
    argv = [a for a in argv if a != "--debug"]
    try:
        # overrides may follow options (train CONFIG --resume RUN key=value): argparse leaves those over
        args, extra = parser.parse_known_args(argv)
        if extra and (not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help, --version, or an argument error (printed)
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 2
    if extra:
        args.overrides = [*args.overrides, *extra]
    from numba.core.errors import TypingError

    from warpdrive.core.errors import typing_error_summary
    from warpdrive.core.typed import ConfigError
    from warpdrive.envs import UnknownEnvError
    from warpdrive.training.checkpoint import CheckpointError
    from warpdrive.training.logging import MetricsFileError

    if str(Path.cwd()) not in sys.path:  # module:Class env names find modules here, as under python -m
        sys.path.insert(0, str(Path.cwd()))
    commands = {"train": _train, "eval": _eval, "render": _render, "bench": _bench, "envs": _envs, "check": _check,
                "tune": _tune}
    notes = logging.StreamHandler(sys.stderr)
    notes.setFormatter(_NoteFormatter(args.command))
    library = logging.getLogger("warpdrive")
    level = library.level
    library.addHandler(notes)
    library.setLevel(logging.INFO)
    try:
        return commands[args.command](args)
    except (ConfigError, CheckpointError, MetricsFileError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as err:
        print(f"warpdrive {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except UnknownEnvError as err:  # a KeyError: its str() is the repr of its message
        print(f"warpdrive {args.command}: error: {_one_line(str(err.args[0]))}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:  # too many env replicas, or too large models
        if not _out_of_memory(err):
            raise
        print(f"warpdrive {args.command}: error: out of memory: {_one_line(str(err))}{_out_of_memory_hint(args, err)}",
              file=sys.stderr)
        return 2
    except TypingError as err:  # the env's code does not compile: where, in one line
        if debug:
            raise
        print(f"warpdrive {args.command}: error: {typing_error_summary(err)}\n"
              "  (the full Numba error: add --debug, or set WARPDRIVE_DEBUG=1)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped early (warpdrive envs | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    finally:
        library.removeHandler(notes)
        library.setLevel(level)
