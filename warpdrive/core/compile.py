"""Phases: env logic written once, compiled for the CPU (``njit``) and the GPU (``cuda.jit``).

An env step is a short sequence of *phases*. A phase is a :func:`~warpdrive.core.device.kernel_function`
applied to every agent of an env (:func:`per_agent`), once per env (:func:`per_env`), or to every index of
an env-sized range such as the cells of a grid (:func:`per_index`). Between two phases every agent of an
env sees the others' results. That maps onto both targets without a second implementation:

- GPU: an env is a group of ``lanes`` threads of one block (one env per block when agents are many,
  several envs per block when they are few); agents are visited with the strided loop
  ``for i in range(lane, num_agents, lanes)``; phases are separated by ``cuda.syncthreads()``.
- CPU: ``njit(parallel=True)`` with ``prange`` over envs; each phase is a plain loop over the agents of
  one env, so the barrier is implicit.

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
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from numba import cuda, njit, prange

from warpdrive.core.device import barrier, kernel_function, set_numba_cache_dir, simulator_enabled

Target = Literal["cpu", "cuda"]
#: A function compiled by Numba (a dispatcher: untyped in Numba): called as ``f(...)`` when compiled with ``njit``,
#: launched as ``f[grid, block](...)`` or ``f[grid, block, stream](...)`` when compiled with ``cuda.jit``.
Dispatcher = Any


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


def per_agent(*fns: Callable[..., Any]) -> Phase:
    """Run ``fn(env, agent, p, s)`` for every agent of every env (each ``fn`` in turn, per agent)."""
    return Phase(_check_fns(fns), "agent")


def per_env(*fns: Callable[..., Any]) -> Phase:
    """Run ``fn(env, p, s)`` once per env (each ``fn`` in turn)."""
    return Phase(_check_fns(fns), "env")


def per_index(fn: Callable[..., Any], count: Callable[..., Any]) -> Phase:
    """Run ``fn(env, index, p, s)`` for ``index in range(count(p, s))`` in every env."""
    return Phase(_check_fns((fn,)), "index", count)


def _check_fns(fns: tuple[Callable[..., Any], ...]) -> tuple[Callable[..., Any], ...]:
    if not fns:
        raise ValueError("a phase needs at least one function")
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"a phase function must be a kernel_function, got {fn!r}")
    return fns


def _chain(fns: tuple[Callable[..., Any], ...], per_env_phase: bool) -> Callable[..., Any]:
    """One kernel function calling ``fns`` in order with the same arguments."""
    first = fns[0]
    if len(fns) == 1:
        return first
    rest = _chain(fns[1:], per_env_phase)
    if per_env_phase:

        @kernel_function
        def both_env(env, p, s):
            first(env, p, s)
            rest(env, p, s)

        return both_env

    @kernel_function
    def both(env, i, p, s):
        first(env, i, p, s)
        rest(env, i, p, s)

    return both


# A *runner* is a kernel_function ``run(env, lane, lanes, active, p, s)`` executed by every thread of
# an env: ``lane`` in ``range(lanes)`` is the thread's rank within its env; ``active`` is False for
# padding threads (envs past the last one) and for envs a gated runner skips. Every thread calls every
# runner, so that barriers inside are reached by the whole block.


def _lift(phase: Phase) -> Callable[..., Any]:
    fn = _chain(phase.fns, phase.over == "env")
    if phase.over == "agent":

        @kernel_function
        def run_agents(env, lane, lanes, active, p, s):
            if active:
                for agent in range(lane, p.num_agents, lanes):
                    fn(env, agent, p, s)

        return run_agents
    if phase.over == "env":

        @kernel_function
        def run_env(env, lane, lanes, active, p, s):
            if active and lane == 0:
                fn(env, p, s)

        return run_env
    count = phase.count
    assert count is not None  # per_index gives one

    @kernel_function
    def run_index(env, lane, lanes, active, p, s):
        if active:
            for index in range(lane, count(p, s), lanes):
                fn(env, index, p, s)

    return run_index


def _then(first: Callable[..., Any], second: Callable[..., Any]) -> Callable[..., Any]:
    @kernel_function
    def run(env, lane, lanes, active, p, s):
        first(env, lane, lanes, active, p, s)
        barrier()
        second(env, lane, lanes, active, p, s)

    return run


def sequence(*parts: Phase | Callable[..., Any]) -> Callable[..., Any]:
    """Compose phases (or runners made by this module) into one runner, with barriers between them."""
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
    runners = [_lift(p) if isinstance(p, Phase) else p for p in merged]
    run = runners[0]
    for nxt in runners[1:]:
        run = _then(run, nxt)
    return run


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


def source_fingerprint(objects: Sequence[Any]) -> str:
    """A hash of the source files that define ``objects`` and of this package's core.

    Numba's disk cache does not notice edits to functions a kernel calls from other files; this
    fingerprint is baked into every compiled program so that such an edit compiles afresh.
    """
    digest = hashlib.sha256()
    files = {inspect.getsourcefile(sys.modules[__name__])}
    files |= {inspect.getsourcefile(sys.modules["warpdrive.core.device"])}
    for obj in objects:
        try:
            files.add(inspect.getsourcefile(obj))
        except TypeError:
            continue
    for path in sorted(f for f in files if f):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def _cache_name(name: str) -> str:
    # Numba names a function's cache index after its __qualname__. Every launcher is the same closure,
    # so each gets a name of its own: one index per env program, holding only that env's argument types.
    return "launch_" + "".join(c if c.isalnum() else "_" for c in name)


def _cpu_launcher(program: Callable[..., Any], fingerprint: str, name: str) -> Dispatcher:
    def launch(p, s, num_envs, lanes):
        version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
        for env in prange(num_envs):
            program(env, 0, 1, True, p, s)

    launch.__qualname__ = _cache_name(name)
    return njit(parallel=True, cache=True)(launch)




def _cuda_launcher(program: Callable[..., Any], fingerprint: str, name: str,
                   max_registers: int | None = None) -> Dispatcher:
    def launch(p, s, num_envs, lanes):
        version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
        group = cuda.threadIdx.x // lanes
        lane = cuda.threadIdx.x - group * lanes
        env = cuda.blockIdx.x * (cuda.blockDim.x // lanes) + group
        active = env < num_envs
        if not active:
            env = num_envs - 1  # padding threads read a valid env and write nothing
        program(env, lane, lanes, active, p, s)

    if max_registers is None or simulator_enabled():  # (the simulator has no registers to cap)
        launch.__qualname__ = _cache_name(name)
        return cuda.jit(cache=not simulator_enabled())(launch)
    launch.__qualname__ = _cache_name(f"{name}.r{max_registers}")
    return cuda.jit(cache=True, max_registers=max_registers)(launch)


@contextmanager
def exact_cuda_arithmetic() -> Iterator[None]:
    """CUDA compilations inside this block round every float product and sum on its own, as the CPU does.

    NVVM contracts ``a * b + c`` into one fused multiply-add by default, which rounds once instead of twice:
    CPU and GPU results then part by an ulp, and in a simulation such differences grow. numba-cuda (0.30)
    has no public switch for it (``fastmath=False`` does not clear it; upstream: NVIDIA/numba-cuda#118).
    It clears contraction for the compilations made here, on both of the routes by which code reaches the
    GPU: NVVM gets ``-fma=0`` (PTX ``add.rn``/``mul.rn``, which ptxas never fuses), and the linker is given
    that PTX rather than NVVM's LTO-IR. numba-cuda links LTO-IR with nvJitLink whenever nvJitLink is
    present (even for ``lto=False`` kernels, seen with 0.30.4), and nvJitLink then generates the code again
    with its own default, which contracts (seen on an H200: CPU and GPU parted after one step although the
    PTX had no fma; its ``-fma`` option cannot be passed through cuda.core, which spells it ``-fma=false``).
    An explicit :func:`~warpdrive.core.device.fma` still fuses. ``tests/core/test_exact.py`` checks the PTX
    and that both hooks exist, so a numba-cuda that changes them fails there, not silently;
    ``benchmarks/gpu_check.py`` checks the results on a GPU.
    """
    from numba.cuda.cudadrv import driver, nvvm

    compile_ir, linker = nvvm.compile_ir, driver._Linker

    def compile_ir_without_contraction(llvmir: Any, **options: Any) -> Any:
        options["fma"] = False
        return compile_ir(llvmir, **options)

    def linker_of_ptx(*args: Any, **options: Any) -> Any:
        options["lto"] = False
        return linker(*args, **options)

    nvvm.compile_ir, driver._Linker = compile_ir_without_contraction, linker_of_ptx
    try:
        yield
    finally:
        nvvm.compile_ir, driver._Linker = compile_ir, linker


def cuda_ptx(runner: Callable[..., Any], fingerprint: str, name: str, argument_types: tuple[Any, ...],
             compute_capability: tuple[int, int] = (9, 0), exact: bool = True) -> str:
    """The PTX of a runner's CUDA launcher for the given Numba argument types, compiled without a GPU."""
    from numba.cuda import dispatcher

    launch = _cuda_launcher(runner, fingerprint, name)
    # device functions ask the current device for its compute capability; there may be none here
    original = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=compute_capability)
    try:
        with exact_cuda_arithmetic() if exact else nullcontext():
            ptx, _ = cuda.compile_ptx(launch.py_func, argument_types, cc=compute_capability)
    finally:
        dispatcher.get_current_device = original
    return ptx


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


def launch_shape(num_agents: int, num_envs: int = 1, *, max_lanes: int = 256, block_threads: int = 32,
                 max_registers: int | None = None) -> LaunchShape:
    """Threads per env: the next power of two >= agents, capped at ``max_lanes`` (agents beyond that are
    visited by a strided loop); small envs are packed several to a block of ``block_threads``.

    ``max_registers``: the shape's register cap (see :class:`LaunchShape`; envs set it with ``Env.max_registers``).

    Measured on an H200 (benchmarks/RESULTS.md): blocks of 32 threads beat 128 for envs of 5-10 agents (no
    barrier couples more envs than one warp holds), and with many envs of about a hundred agents half the
    lanes per env did better (the register file, not the agents, bounds how many threads are resident).
    """
    lanes = 1
    while lanes < min(num_agents, max_lanes):
        lanes *= 2
    if num_agents <= lanes and lanes > 64 and num_envs * lanes > 65536:
        lanes //= 2
    return LaunchShape(lanes=lanes, envs_per_block=max(1, block_threads // lanes), max_registers=max_registers)


def _prefer_workqueue_threads() -> None:
    """Run CPU kernels on Numba's ``workqueue`` threads unless the user chose a threading layer.

    Numba's default layer on Linux is OpenMP, whose workers spin after every parallel region. When the
    cores are shared (PyTorch's threads, other processes), a spinning worker that gets preempted stalls
    the next env step by a whole time slice: on two busy cores a Tag-gridworld step took 8 ms with OpenMP
    and 0.2 ms with workqueue. ``OMP_WAIT_POLICY`` cannot fix it from here: PyTorch has usually loaded
    the same OpenMP runtime already, and it reads the variable only once. The layer is read when the first
    parallel kernel runs, so this must happen before that.
    """
    import numba

    # (numba's stubs omit its settings, which it reads from the environment at import)
    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":  # type: ignore[attr-defined]
        numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


class Program:
    """Runners (the stages of a program, see :class:`LaunchBoundary`) compiled for one target, callable as
    ``program(p, s, num_envs, shape)``: one kernel per stage on CUDA, one loop over envs on the CPU.

    ``exact`` (CUDA): compile without contracting multiply-adds, so that the GPU rounds as the CPU does
    (see :func:`exact_cuda_arithmetic`).
    """

    def __init__(self, stages: Sequence[Callable[..., Any]], target: Target, fingerprint: str, name: str,
                 exact: bool = True) -> None:
        set_numba_cache_dir()
        self.name = name
        self.target = target
        self._by_register_cap: dict[int | None, list[Dispatcher]] = {}
        self.exact = exact
        if target == "cpu":
            _prefer_workqueue_threads()
            self._launches = [_cpu_launcher(sequence(*stages), fingerprint, name)]
        elif target == "cuda":
            self._stages, self._fingerprint = list(stages), fingerprint
            self._launches = self._cuda_launches(None)
        else:
            raise ValueError(f"target must be 'cpu' or 'cuda', got {target!r}")

    def _cuda_launches(self, max_registers: int | None) -> list[Dispatcher]:
        launches = self._by_register_cap.get(max_registers)
        if launches is None:
            stages, name = self._stages, self.name
            launches = self._by_register_cap[max_registers] = [
                _cuda_launcher(stage, self._fingerprint, name if len(stages) == 1 else f"{name}.{i}", max_registers)
                for i, stage in enumerate(stages)]
        return launches

    def kernels(self, shape: LaunchShape | None = None) -> list[Callable[..., Any]]:
        """The launchers, one per stage on CUDA, as compiled for ``shape``'s register cap (Numba dispatchers:
        for inspection and tuning)."""
        if self.target == "cpu" or shape is None:
            return list(self._launches)
        return list(self._cuda_launches(shape.max_registers))

    def __call__(self, p: Any, s: Any, num_envs: int, shape: LaunchShape) -> None:
        if self.target == "cpu":
            self._launches[0](p, s, num_envs, 1)
            return
        grid, block = shape.grid(num_envs), shape.block
        launches = self._launches if shape.max_registers is None else self._cuda_launches(shape.max_registers)
        if simulator_enabled():
            for launch in launches:
                launch[grid, block](p, s, num_envs, shape.lanes)
            return
        # (the first call compiles; the context costs about a microsecond on later calls)
        stream = torch_current_stream()
        with exact_cuda_arithmetic() if self.exact else nullcontext():
            for launch in launches:
                launch[grid, block, stream](p, s, num_envs, shape.lanes)


_external_streams: dict[int, Any] = {}


def torch_current_stream() -> Any:
    """torch's current CUDA stream as a Numba stream: launching there orders Numba kernels with torch ops
    and lets ``torch.cuda.graph`` capture them (it switches to a side stream while capturing)."""
    import torch

    handle = torch.cuda.current_stream().cuda_stream
    stream = _external_streams.get(handle)
    if stream is None:
        stream = _external_streams[handle] = cuda.external_stream(handle)
    return stream


class ParallelFor:
    """``fn(i, args)`` for every ``i`` in ``range(n)``: one kernel function, compiled for both targets.

    For work outside envs that is a loop over independent items, such as a backward scan over the time
    steps of each (env, agent) column of a rollout. ``args`` is a tuple of torch tensors (all on one
    device; passed to the kernel as zero-copy array views) and scalars. On the CPU the loop is
    ``prange`` under ``njit(parallel=True)``; on CUDA one thread per ``i``, on torch's current stream.
    """

    _THREADS = 256

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self._launchers: dict[str, Dispatcher] = {}

    def __call__(self, n: int, args: tuple[Any, ...]) -> None:
        import torch

        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            raise ValueError(f"{self.name}: expected at least one tensor argument")
        if any(t.device != tensors[0].device for t in tensors):
            raise ValueError(f"{self.name}: tensors on different devices: {sorted({str(t.device) for t in tensors})}")
        if n <= 0:
            return
        if tensors[0].device.type == "cuda" and not simulator_enabled():
            views = tuple(cuda.as_cuda_array(a.detach(), sync=False) if isinstance(a, torch.Tensor) else a
                          for a in args)
            blocks = -(-n // self._THREADS)
            with exact_cuda_arithmetic():
                self._launcher("cuda")[blocks, self._THREADS, torch_current_stream()](n, views)
        else:
            views = tuple(a.detach().numpy() if isinstance(a, torch.Tensor) else a for a in args)
            self._launcher("cpu")(n, views)

    def _launcher(self, target: Target) -> Dispatcher:
        launcher = self._launchers.get(target)
        if launcher is None:
            set_numba_cache_dir()
            fn, fingerprint = self.fn, source_fingerprint([self.fn])
            if target == "cpu":
                _prefer_workqueue_threads()

                def launch(n, args):
                    version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
                    for i in prange(n):
                        fn(i, args)

                launch.__qualname__ = _cache_name(self.name)
                launcher = njit(parallel=True, cache=True)(launch)
            else:

                def launch(n, args):
                    version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
                    i = cuda.grid(1)
                    if i < n:
                        fn(i, args)

                launch.__qualname__ = _cache_name(self.name)
                launcher = cuda.jit(cache=True)(launch)
            self._launchers[target] = launcher
        return launcher
