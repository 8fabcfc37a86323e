"""Phases: env logic written once, compiled for the CPU (``njit``) and the GPU (``cuda.jit``).

An env step is a short sequence of *phases*. A phase is a :func:`~warpdrive.core.device.kernel_function`
applied to every agent of an env (:func:`per_agent`), once per env (:func:`per_env`), or to every index of
an env-sized range such as the cells of a grid (:func:`per_index`). Between two phases every agent of an
env sees the others' results. That maps onto both targets without a second implementation:

- GPU: an env is a group of ``lanes`` threads of one block (one env per block when agents are many,
  several envs per block when they are few); agents are visited with the strided loop
  ``for i in range(lane, num_agents, lanes)``; phases are separated by ``cuda.syncthreads()``.
- CPU: ``njit(nogil=True)`` over a range of envs, the ranges run on threads
  (:func:`~warpdrive.core.targets.run_in_chunks`); each phase is a plain loop over the agents of one env, so the
  barrier is implicit.

Phase signatures (``p``: the env's parameters, a named tuple of scalars; ``s``: its arrays, a named tuple
of arrays shaped ``[envs, agents, ...]``, ``[envs, ...]`` or, for constants, without the env axis)::

    per_agent:  fn(env, agent, p, s)
    per_env:    fn(env, p, s)
    per_index:  fn(env, index, p, s), for index in range(count(p, s))

Programs are composed from phases with :func:`sequence` and compiled with :class:`Program`, which
caches the compiled code on disk (Numba's cache, in a user cache directory). Sizes are run-time
arguments, so changing the number of envs or agents never recompiles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from warpdrive.core.device import barrier, kernel_function, set_numba_cache_dir
from warpdrive.core.fingerprint import closure_digest, source_fingerprint
from warpdrive.core.targets import Dispatcher, KernelTarget, tensor_target


@dataclass(frozen=True)
class Phase:
    """One step of env logic: one or more functions applied over the same domain, back to back.

    Several functions in one phase run one after the other for the same agent (or env, or index) with
    no barrier between them: use that when a function reads only what the previous one wrote for the same
    agent. Separate phases are separated by a barrier.
    """

    fns: tuple[Callable[..., Any], ...]
    over: Literal["agent", "env", "index"]
    count: Callable[..., Any] | None = None
    needs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Arrays the functions index by compile-time sizes: ``(name, trailing shape)``; an env whose declaration
    differs is refused at construction (a mismatch would index past the array)."""


def per_agent(*fns: Callable[..., Any]) -> Phase:
    """Run ``fn(env, agent, p, s)`` for every agent of every env (each ``fn`` in turn, per agent)."""
    return Phase(_check_fns(fns), "agent")


def per_env(*fns: Callable[..., Any]) -> Phase:
    """Run ``fn(env, p, s)`` once per env (each ``fn`` in turn)."""
    return Phase(_check_fns(fns), "env")


def per_index(fn: Callable[..., Any], count: Callable[..., Any],
              needs: tuple[tuple[str, tuple[int, ...]], ...] = ()) -> Phase:
    """Run ``fn(env, index, p, s)`` for ``index in range(count(p, s))`` in every env (``needs``: see
    :attr:`Phase.needs`)."""
    return Phase(_check_fns((fn,)), "index", count, needs)


def _check_fns(fns: tuple[Callable[..., Any], ...]) -> tuple[Callable[..., Any], ...]:
    if not fns:
        raise ValueError("a phase needs at least one function")
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"a phase function must be a kernel_function, got {fn!r}")
    return fns


# A *runner* is a kernel_function ``run(env, lane, lanes, active, p, s)`` executed by every thread of
# an env: ``lane`` in ``range(lanes)`` is the thread's rank within its env; ``active`` is False for
# padding threads (envs past the last one) and for envs a gated runner skips. Every thread calls every
# runner, so that barriers inside are reached by the whole block.


def sequence(*parts: Phase | Callable[..., Any]) -> Callable[..., Any]:
    """Compose phases (or runners made by this module) into one runner, with barriers between them.

    The runner is one generated function whose loops call the phases' functions directly: nesting a closure per
    phase and per barrier would do the same, but Numba compiles and finalizes each function on its own, and for a
    program of a dozen phases those closures took most of its compile time.
    """
    if not parts:
        raise ValueError("sequence() needs at least one phase")
    merged: list[Phase | Callable[..., Any]] = []
    for part in parts:
        previous = merged[-1] if merged else None
        # Consecutive per-env phases run on the same thread (lane 0): no barrier is needed between them.
        if isinstance(part, Phase) and isinstance(previous, Phase) and part.over == previous.over == "env":
            merged[-1] = Phase(previous.fns + part.fns, "env")
        else:
            merged.append(part)
    called: dict[str, Callable[..., Any]] = {}

    def name(fn: Callable[..., Any]) -> str:
        called[f"f{len(called)}"] = fn
        return f"f{len(called) - 1}"

    lines: list[str] = []
    for i, part in enumerate(merged):
        if i:
            lines.append("barrier()")
        if not isinstance(part, Phase):  # a runner
            lines.append(f"{name(part)}(env, lane, lanes, active, p, s)")
        elif part.over == "env":
            lines.append("if active and lane == 0:")
            lines += [f"    {name(fn)}(env, p, s)" for fn in part.fns]
        else:
            count = "p.num_agents"
            if part.over == "index":
                assert part.count is not None  # per_index gives one
                count = f"{name(part.count)}(p, s)"
            lines += ["if active:", f"    for i in range(lane, {count}, lanes):"]
            lines += [f"        {name(fn)}(env, i, p, s)" for fn in part.fns]
    source = "def run(env, lane, lanes, active, p, s):\n" + "".join(f"    {line}\n" for line in lines)
    namespace: dict[str, Any] = {"__name__": __name__, "barrier": barrier, **called}
    exec(compile(source, "<warpdrive.core.compile.sequence>", "exec"), namespace)
    run = namespace["run"]
    # a name of its own per content (see kernel_function): one name means one code in Numba's cache
    run.__qualname__ = f"sequence_{closure_digest(run)}"
    return kernel_function(run)


def only_where_done(runner: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``runner`` only in envs whose episode ended this step (``s.done[env]``)."""

    @kernel_function
    def run(env, lane, lanes, active, p, s):
        runner(env, lane, lanes, active and s.done[env], p, s)

    return run


@dataclass(frozen=True)
class LaunchBoundary:
    """Between two phases of an env's program: on CUDA the phases before and after it run as separate
    kernels, one after the other on the same stream; the CPU runs them as before.

    Each kernel is then allocated the registers it needs, so that a heavy phase (a k-nearest search with a
    register list) no longer sets the register count, and with it the occupancy, of the light phases around
    it. It costs one kernel launch (about a microsecond inside a CUDA graph), so envs put one only where
    agents are many. Results never depend on it: phases communicate only through the env's arrays.
    """


#: the launch boundary envs put in their phase lists
NEW_LAUNCH = LaunchBoundary()


def split_at_launches(parts: Sequence[Phase | LaunchBoundary | Callable[..., Any]]
                      ) -> list[list[Phase | Callable[..., Any]]]:
    """The parts between launch boundaries, in order (empty runs dropped)."""
    stages: list[list[Phase | Callable[..., Any]]] = [[]]
    for part in parts:
        if isinstance(part, LaunchBoundary):
            stages.append([])
        else:
            stages[-1].append(part)
    return [stage for stage in stages if stage]


# --------------------------------------------------------------------------------------------------
# compilation


@dataclass(frozen=True)
class LaunchShape:
    """How envs map onto CUDA threads: ``lanes`` threads per env, ``envs_per_block`` envs per block.

    ``max_registers`` caps the registers per thread of the env's kernels (``None``: as many as the compiler
    wants). Fewer registers let more threads stay resident (a block of 1024 threads needs <= 64), at the
    cost of spills to local memory; each value compiles the kernels once more. Results never depend on it.
    """

    lanes: int
    envs_per_block: int
    max_registers: int | None = None

    @property
    def block(self) -> int:
        return self.lanes * self.envs_per_block

    def grid(self, num_envs: int) -> int:
        return -(-num_envs // self.envs_per_block)


def launch_shape(num_agents: int, num_envs: int = 1, *, threads_per_agent: int = 1, max_lanes: int = 256,
                 block_threads: int = 32, max_registers: int | None = None) -> LaunchShape:
    """Threads per env: the next power of two >= agents, capped at ``max_lanes`` (agents beyond that are
    visited by a strided loop), times ``threads_per_agent`` (at most 1024 threads); small envs are packed
    several to a block of ``block_threads``.

    ``max_registers``: the shape's register cap (see :class:`LaunchShape`; envs set it with ``Env.max_registers``);
    blocks of more than 512 threads get a cap that lets the whole block be resident.

    Measured on an H200 (benchmarks/RESULTS.md): blocks of 32 threads beat 128 for envs of 5-10 agents (no
    barrier couples more envs than one warp holds), and with many envs of about a hundred agents half the
    lanes per env did better (the register file, not the agents, bounds how many threads are resident).
    """
    lanes = 1
    while lanes < min(num_agents, max_lanes):
        lanes *= 2
    if num_agents <= lanes and lanes > 64 and num_envs * lanes > 65536:
        lanes //= 2
    lanes = min(lanes * threads_per_agent, 1024)
    if lanes > 512:
        max_registers = min(max_registers or 255, 65536 // lanes)
    return LaunchShape(lanes=lanes, envs_per_block=max(1, block_threads // lanes), max_registers=max_registers)


class Program:
    """Runners (the stages of a program, see :class:`LaunchBoundary`) compiled for one target, callable as
    ``program(p, s, num_envs, shape)``: one kernel per stage on CUDA, one loop over envs on the CPU.

    ``exact`` (CUDA): compile without contracting multiply-adds, so that the GPU rounds as the CPU does
    (see :func:`~warpdrive.core.targets.exact_cuda_arithmetic`). ``bounds_checked`` (where the target has
    bounds checks, :attr:`~warpdrive.core.targets.KernelTarget.bounds_checks`): every array index is checked,
    an index out of bounds raises ``IndexError`` (slower: for writing and checking envs).
    """

    def __init__(self, stages: Sequence[Callable[..., Any]], target: KernelTarget, fingerprint: str, name: str,
                 exact: bool = True, bounds_checked: bool = False) -> None:
        set_numba_cache_dir()
        self.name = name
        self.target = target
        self.exact = exact
        self.bounds_checked = bounds_checked
        self._stages, self._fingerprint = list(stages), fingerprint
        self._by_register_cap: dict[int | None, list[Dispatcher]] = {}

    def kernels(self, shape: LaunchShape | None = None) -> list[Dispatcher]:
        """The launchers (Numba dispatchers, for inspection and tuning): one per stage on CUDA, as compiled for
        ``shape``'s register cap; one on the CPU."""
        cap = None if shape is None else shape.max_registers
        launchers = self._by_register_cap.get(cap)
        if launchers is None:
            launchers = self._by_register_cap[cap] = self.target.program_launchers(
                self._stages, self._fingerprint, self.name, cap, bounds_checked=self.bounds_checked)
        return launchers

    def __call__(self, p: Any, s: Any, num_envs: int, shape: LaunchShape) -> None:
        self.target.run_program(self.kernels(shape), p, s, num_envs, shape, self.exact)


class ParallelFor:
    """``fn(i, args)`` for every ``i`` in ``range(n)``: one kernel function, compiled for both targets.

    For work outside envs that is a loop over independent items, such as a backward scan over the time
    steps of each (env, agent) column of a rollout. ``args`` is a tuple of torch tensors (all on one
    device; passed to the kernel as zero-copy array views) and scalars. On the CPU the loop is
    ``prange`` under ``njit(parallel=True)``; on CUDA one thread per ``i``, on torch's current stream.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self._launchers: dict[tuple[str, tuple[Any, ...]], Dispatcher] = {}

    def __call__(self, n: int, args: tuple[Any, ...]) -> None:
        import torch

        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            raise ValueError(f"{self.name}: expected at least one tensor argument")
        if any(t.device != tensors[0].device for t in tensors):
            raise ValueError(f"{self.name}: tensors on different devices: {sorted({str(t.device) for t in tensors})}")
        if n <= 0:
            return
        target = tensor_target(tensors[0].device)
        kinds = tuple((str(a.dtype), a.dim(), a.is_contiguous()) if isinstance(a, torch.Tensor) else type(a).__name__
                      for a in args)
        launcher = self._launchers.get((target.backend, kinds))
        if launcher is None:
            set_numba_cache_dir()
            # one argument typing per cached name (Numba's cache index is unsafe for two processes saving
            # different typings under one name at once: see Env._program)
            typing = hashlib.sha256(repr(kinds).encode()).hexdigest()[:8]
            launcher = self._launchers[(target.backend, kinds)] = target.loop_launcher(
                self.fn, source_fingerprint([self.fn]), f"{self.name}.{typing}")
        target.run_loop(launcher, n, tuple(target.array(a) if isinstance(a, torch.Tensor) else a for a in args))
