"""``warpdrive tune``: how many env replicas a training config fits in memory, and the fastest launch shape.

The reference WarpDrive's auto-scaler doubles the replica count until CUDA runs out of memory. Here the memory
of a training run is measured at two small replica counts and fitted by a line, ``fixed + per_env * E``
(the env's arrays, the rollout storage and, on CUDA, the update's activations grow with ``E``; the networks and
optimiser states do not), and the largest ``E`` whose run fits in a margin of the free memory is computed.
The launch shapes of the env's CUDA kernels are then timed at that size (random actions drawn in the step
kernel, replayed from a CUDA graph). Launch shapes never change results, only speed.

Without running anything, :func:`estimate_memory` adds up what a run allocates from its shapes alone (the env's
arrays, the rollout storage, the networks, optimiser moments and replay buffers; built on PyTorch's ``meta``
device, so nothing is allocated): a lower bound, as the activations of acting and of the update come on top.
When a run does run out of memory, :func:`out_of_memory_advice` says from it how many replicas fit at most
(``warpdrive train`` adds it to its error).
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from warpdrive.core.compile import LaunchShape
from warpdrive.core.env import Env
from warpdrive.core.store import DataStore
from warpdrive.core.targets import tensor_target
from warpdrive.training.config import TrainConfig
from warpdrive.training.graphs import new_stream
from warpdrive.training.trainer import Trainer, make_env, resolve_device

__all__ = ["MemoryEstimate", "MemoryFit", "available_memory", "estimate_memory", "fit_memory", "format_bytes",
           "launch_candidates", "out_of_memory_advice", "time_launch_shapes"]


@dataclasses.dataclass(frozen=True)
class MemoryFit:
    """A training run's memory as ``fixed + per_env * num_envs`` bytes, and what fits in ``free``."""

    per_env: float
    fixed: float
    free: int
    where: str
    measured_at: tuple[int, int]
    margin: float

    @property
    def num_envs(self) -> int:
        """The most replicas whose run takes at most ``margin`` of the free memory (0: not even one)."""
        return max(0, int((self.free * self.margin - self.fixed) // self.per_env))


def _tensor_bytes() -> int:
    """Bytes of every tensor storage alive in this process on the CPU (each storage counted once)."""
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on some of torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            # (type(), not isinstance: isinstance of a weak proxy whose object is gone raises)
            if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
                storage = obj.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _run_bytes(config: TrainConfig, num_envs: int, device: torch.device) -> int:
    """The memory one training run of ``config`` with ``num_envs`` replicas takes over two iterations: on CUDA
    the peak PyTorch allocates; on the CPU the tensors alive after them."""
    config = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=num_envs))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _tensor_bytes()
    trainer = Trainer(config)
    for _ in range(2):
        trainer.train_iteration()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        used = torch.cuda.max_memory_allocated(device) - before
    else:
        used = _tensor_bytes() - before
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return used


def fit_memory(config: TrainConfig, device: torch.device, margin: float = 0.9,
               smallest: int | None = None) -> MemoryFit:
    """Measure a training run of ``config`` at ``smallest`` and twice as many replicas (default: 256 on CUDA,
    8 on the CPU, or the config's count if smaller) and fit ``fixed + per_env * E``."""
    small = smallest or min(config.env.num_envs, 256 if device.type == "cuda" else 8)
    sizes = (small, 2 * small)
    used = [_run_bytes(config, size, device) for size in sizes]
    per_env = max((used[1] - used[0]) / (sizes[1] - sizes[0]), 1.0)
    fixed = max(used[0] - per_env * sizes[0], 0.0)
    free, where = tensor_target(device).free_memory(device)
    return MemoryFit(per_env, fixed, free, where, sizes, margin)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """What a training run allocates, from its shapes alone (:func:`estimate_memory`): ``fixed + per_env * E``
    bytes for ``E`` replicas. A lower bound: the activations of acting and of the update are not counted."""

    env_per_env: int
    """The env's arrays, per replica (what the env's own memory check counts)."""
    rollout_per_env: int
    """The rollout storage, per replica: ``rollout_length`` steps of observations, rewards, done flags and each
    trainable policy's actions (and log-probabilities and values, on-policy; recurrent states)."""
    fixed: int
    """What does not grow with the replicas: the env's constant arrays, the networks (with gradients and two
    optimiser moments per trainable parameter) and replay buffers."""
    rollout_length: int

    @property
    def per_env(self) -> int:
        return self.env_per_env + self.rollout_per_env

    def bytes(self, num_envs: int) -> int:
        """The estimated memory of a run with ``num_envs`` replicas."""
        return self.fixed + self.per_env * num_envs

    def num_envs(self, free: int) -> int:
        """The most replicas whose estimated memory fits in ``free`` bytes (0: not even one)."""
        return max(0, (free - self.fixed) // self.per_env)


class _MetaEnv:
    """``env`` (a one-replica CPU env of the same config) as :func:`build_policies` and :class:`RolloutCollector`
    see an env of ``num_envs`` replicas on PyTorch's ``meta`` device: shapes without memory."""

    def __init__(self, env: Env, num_envs: int) -> None:
        self._env = env
        self.num_envs = num_envs
        self.num_agents = env.num_agents
        self.device = torch.device("meta")
        mask = env.action_mask
        self.action_mask = None if mask is None else torch.empty(num_envs, *mask.shape[1:], dtype=mask.dtype,
                                                                 device=self.device)

    def __getattr__(self, name: str) -> Any:  # groups(), group_spaces(), observation_size(), ...
        return getattr(self._env, name)


def _reachable_tensors(root: object, skip: tuple[type, ...] = ()) -> Iterator[torch.Tensor]:
    """Every tensor held by ``root`` through attributes, containers, modules and optimisers (each once), not
    entering objects of the types ``skip``."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, skip):
            continue
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)) or \
                type(obj).__module__.startswith("warpdrive.training"):
            stack.extend(vars(obj).values())


def _meta_run_bytes(config: TrainConfig, env: Env, global_state_size: int) -> tuple[int, int, int]:
    """(the rollout storage at the config's ``E`` replicas, at ``2 E``, the policies' tensors) of ``config`` in
    bytes, built on the ``meta`` device (models created there too: no memory, no initialisation cost)."""
    from warpdrive.training.policies import build_policies
    from warpdrive.training.recurrent import RecurrentMemory
    from warpdrive.training.rollout import RolloutCollector
    from warpdrive.training.storage import RolloutStorage

    num_envs = config.env.num_envs
    with torch.device("meta"):
        policies = build_policies(config, _MetaEnv(env, num_envs), global_state_size)  # type: ignore[arg-type]
        rollout = []
        for n in (num_envs, 2 * num_envs):
            meta_env: Any = _MetaEnv(env, n)
            collector = RolloutCollector(meta_env, policies, config.rollout_length, global_state_size,
                                         cuda_graph=False)
            starts = torch.zeros(n, dtype=torch.bool)
            for policy in policies:
                memory = policy.algorithm.memory
                if memory is not None and policy.storage is not None:  # a recurrent policy's acting and stored state
                    memory.store_initial_state(policy.storage, starts)
            rollout.append(sum(t.nbytes for t in _reachable_tensors(
                [collector.env_rollout, [p.storage for p in policies], [p.algorithm.memory for p in policies]])))
    networks = 0
    for policy in policies:
        held = list(_reachable_tensors(policy.algorithm, skip=(RecurrentMemory, RolloutStorage)))  # (counted above)
        trainable = sum(t.nbytes for t in held if isinstance(t, torch.nn.Parameter) and t.requires_grad)
        networks += sum(t.nbytes for t in held) + 3 * trainable  # gradients, two optimiser moments (Adam)
    return rollout[0], rollout[1], networks


def estimate_memory(config: TrainConfig) -> MemoryEstimate:
    """What a training run of ``config`` allocates, from shapes alone: no GPU, no kernel compiled, nothing run
    (a one-replica CPU env for the env's arrays; the policies and rollout storage on the ``meta`` device).

    Raises what building the run raises (e.g. :class:`ConfigError` for a config that does not fit the env).
    """
    from warpdrive.training.policies import global_state_size

    one = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=1, launch=None), device="cpu")
    env = make_env(one, torch.device("cpu"), config.seed, validate=False)
    specs = list(env.store.specs.values())
    env_one, env_two = (DataStore.required_bytes(specs, n, env.num_agents) for n in (1, 2))
    rollout_e, rollout_2e, networks = _meta_run_bytes(config, env, global_state_size(env))
    e = config.env.num_envs
    rollout_per_env = (rollout_2e - rollout_e) // e
    return MemoryEstimate(env_per_env=env_two - env_one, rollout_per_env=rollout_per_env,
                          fixed=(2 * env_one - env_two) + (rollout_e - rollout_per_env * e) + networks,
                          rollout_length=config.rollout_length)


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a new run on ``device`` could allocate, and where (for messages): on CUDA the free device memory
    plus what this process's PyTorch allocator holds (a run that failed may still hold it until it is
    released); on the CPU the available host memory."""
    free, where = tensor_target(device).free_memory(device)
    if device.type == "cuda":
        free += torch.cuda.memory_reserved(device)
    return free, where


def format_bytes(n: float) -> str:
    """``n`` bytes in GiB, MiB or KiB (two decimals), or in bytes below one KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} bytes"


def out_of_memory_advice(config: TrainConfig, free: int | None = None, where: str = "") -> str:
    """One line for a run of ``config`` that ran out of memory: how many env replicas fit at most by
    :func:`estimate_memory` in ``free`` bytes (default: :func:`available_memory` of the config's device), or,
    when the config's count fits by that estimate, that the rest of the run (the update's activations) did not.
    """
    if free is None:
        free, where = available_memory(resolve_device(config.device))
    estimate = estimate_memory(config)
    fits, asked = estimate.num_envs(free), config.env.num_envs
    size = format_bytes
    counted = (f"{size(estimate.per_env)} per env replica ({size(estimate.env_per_env)} the env's arrays, "
               f"{size(estimate.rollout_per_env)} the rollout storage of rollout_length={estimate.rollout_length}) "
               f"and {size(estimate.fixed)} for the networks and replay buffers, against {size(free)} {where}")
    measure = "warpdrive tune CONFIG measures the whole run"
    if fits < 1:
        return f"not even one env replica fits: {counted}"
    if fits < asked:
        return (f"at most {fits} env replicas fit, so env.num_envs={asked} does not: {counted}; the update's "
                f"activations need more on top ({measure})")
    return (f"env.num_envs={asked} fits by an estimate of its arrays, rollout storage, networks and replay buffers "
            f"({size(estimate.bytes(asked))} of {size(free)} {where}; at most {fits} replicas would), so the rest "
            f"ran out, likely the update's activations: fewer replicas, a shorter rollout_length or more "
            f"minibatches need less ({measure})")


def launch_candidates(default: LaunchShape) -> list[LaunchShape]:
    """Shapes around ``default``: a quarter to four times its threads per env, blocks of 32 to 1024 threads."""
    shapes = []
    for lanes in sorted({max(1, default.lanes // 4), max(1, default.lanes // 2), default.lanes,
                         min(1024, default.lanes * 2), min(1024, default.lanes * 4)}):
        for block in (32, 64, 128, 256, 512, 1024):
            if block >= lanes and block % lanes == 0:
                shapes.append(LaunchShape(lanes, block // lanes, default.max_registers))
    return shapes


def time_launch_shapes(config: TrainConfig, device: torch.device, num_envs: int, steps: int = 50,
                       repeats: int = 3) -> list[dict[str, Any]]:
    """Env-steps/s of ``random_step`` at each candidate shape (CUDA only), the default first; a shape the kernels
    cannot launch (too many threads for their registers) is reported with its error."""
    config = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=num_envs, launch=None))
    env = make_env(config, device, config.seed, validate=False)
    default = env.shape
    rows = []
    for shape in [default, *(s for s in launch_candidates(default) if s != default)]:
        env.shape = shape
        env.reset(seed=0)
        try:
            side = new_stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    env.random_step()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(steps):
                    env.random_step()
            rates = []
            for _ in range(repeats):
                torch.cuda.synchronize(device)
                start = time.perf_counter()
                graph.replay()
                torch.cuda.synchronize(device)
                rates.append(steps * num_envs / (time.perf_counter() - start))
            rows.append({"launch": [shape.lanes, shape.envs_per_block], "default": shape == default,
                         "env_steps_per_s": statistics.median(rates)})
        except Exception as error:  # a shape the kernels cannot launch: reported, the next one tried
            torch.cuda.synchronize(device)
            rows.append({"launch": [shape.lanes, shape.envs_per_block], "default": shape == default,
                         "error": str(error).splitlines()[0][:100]})
    return rows
