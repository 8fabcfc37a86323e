"""Where kernels run: the one object per backend that compiles launchers, makes array views, picks the stream
and names the caches.

Env logic never asks which target it is on (the primitives of :mod:`warpdrive.core.device` adapt inside Numba);
everything around it that differs between the targets is a method or an attribute of a :class:`KernelTarget`
(its arrays in host memory or not, launch boundaries as separate kernels or not, contraction of multiply-adds):

==================  ================================  ===================================  ==========================
backend             compiled with                     arrays passed as                     a program of N stages
==================  ================================  ===================================  ==========================
``cpu``             ``njit(nogil)``, env chunks on    NumPy views of CPU tensors           one loop, stages in order
                    threads (:func:`run_in_chunks`)
``cuda``            ``cuda.jit``, exact arithmetic    ``cuda.as_cuda_array`` (zero copy)   N kernels on torch's stream
``cudasim``         Numba's CUDA simulator            NumPy views of CPU tensors           N simulated kernels
==================  ================================  ===================================  ==========================

:func:`kernel_target` gives the target of a backend, :func:`tensor_target` the one for tensors on a device.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numba import cuda, njit, prange

from warpdrive.core.device import cuda_available, simulator_enabled

if TYPE_CHECKING:
    import torch

    from warpdrive.core.compile import LaunchShape

__all__ = ["Backend", "KernelTarget", "exact_cuda_arithmetic", "kernel_target", "resolve_backend", "tensor_target"]

Backend = Literal["cpu", "cuda", "cudasim"]
#: A function compiled by Numba (a dispatcher: untyped in Numba): called as ``f(...)`` when compiled with ``njit``,
#: launched as ``f[grid, block](...)`` or ``f[grid, block, stream](...)`` when compiled with ``cuda.jit``.
Dispatcher = Any
#: threads per block of a :meth:`KernelTarget.loop`
_LOOP_THREADS = 256


def cache_name(name: str) -> str:
    # Numba names a function's cache index after its __qualname__. Every launcher is the same closure,
    # so each gets a name of its own: one index per env program, holding only that env's argument types.
    return "launch_" + "".join(c if c.isalnum() else "_" for c in name)


class KernelTarget:
    """How kernels of one backend are compiled and launched (see the module docstring).

    A *runner* (:mod:`warpdrive.core.compile`) is a kernel function ``run(env, lane, lanes, active, p, s)``;
    a *loop body* is ``fn(i, args)``.
    """

    backend: Backend
    #: the Numba compiler the env code goes through: the simulator runs the CUDA source
    compiler: Literal["cpu", "cuda"]
    #: whether a program's launch boundaries make separate kernels (on the CPU, one loop runs every stage)
    separate_launches: bool
    #: whether the compiler may fuse a multiply and an add into one rounding unless told not to (NVVM does;
    #: the CPU never does, and the simulator computes in NumPy)
    may_contract: bool
    #: whether the arrays live in host memory, so that reading them costs no wait for a device
    host_arrays: bool
    #: whether programs can be compiled with every array index checked (``Program(bounds_checked=True)``)
    bounds_checks: bool

    def free_memory(self, device: torch.device) -> tuple[int, str]:
        """Bytes that new arrays on ``device`` may take, and where they are (for error messages)."""
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of available host memory"

    def array(self, tensor: torch.Tensor) -> Any:
        """A zero-copy view of ``tensor`` that this target's kernels accept."""
        return tensor.detach().numpy()

    def default_launch(self, num_agents: int, num_envs: int, max_registers: int | None,
                       threads_per_agent: int = 1) -> LaunchShape:
        """The launch shape an env gets unless it is given one (see :func:`~warpdrive.core.compile.launch_shape`)."""
        from warpdrive.core.compile import launch_shape

        return launch_shape(num_agents, num_envs, threads_per_agent=threads_per_agent, max_registers=max_registers)

    def program_launchers(self, stages: Sequence[Callable[..., Any]], fingerprint: str, name: str,
                          max_registers: int | None = None, bounds_checked: bool = False) -> list[Dispatcher]:
        """Launchers of a program's stages, in order (``fingerprint`` is baked into each for the disk cache)."""
        raise NotImplementedError

    def run_program(self, launchers: Sequence[Dispatcher], p: Any, s: Any, num_envs: int, shape: LaunchShape,
                    exact: bool) -> None:
        """Run every launcher over ``num_envs`` envs; ``shape`` maps envs onto threads on CUDA."""
        raise NotImplementedError

    def loop_launcher(self, fn: Callable[..., Any], fingerprint: str, name: str) -> Dispatcher:
        """A launcher of ``fn(i, args)`` for every ``i`` in ``range(n)``."""
        raise NotImplementedError

    def run_loop(self, launcher: Dispatcher, n: int, args: tuple[Any, ...]) -> None:
        raise NotImplementedError


class CpuTarget(KernelTarget):
    backend: Backend = "cpu"
    compiler: Literal["cpu", "cuda"] = "cpu"
    separate_launches = False
    may_contract = False
    host_arrays = True
    bounds_checks = True

    def program_launchers(self, stages: Sequence[Callable[..., Any]], fingerprint: str, name: str,
                          max_registers: int | None = None, bounds_checked: bool = False) -> list[Dispatcher]:
        from warpdrive.core.compile import sequence

        _prefer_workqueue_threads()
        program = sequence(*stages)  # launch boundaries matter only on CUDA: one loop runs the stages in order

        if bounds_checked:
            def checked(p, s, start, stop):
                version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
                for env in range(start, stop):
                    program(env, 0, 1, True, p, s)

            checked.__qualname__ = cache_name(f"{name}.boundscheck")
            dispatcher = njit(cache=True, boundscheck=True)(checked)

            def run_checked(p, s, start, stop):
                # The kernel functions it calls are compiled on its first call, each on its own: Numba's global
                # flag makes it check their indices too (those compiled unchecked earlier in the process are
                # reused as they are: a process that checks should compile only bounds-checked programs).
                with _numba_bounds_checks():
                    dispatcher(p, s, start, stop)

            return [_OnOneThread(run_checked)]  # (the flag is global: not toggled from several threads)

        # Replicas [start, stop), without the GIL: run_program spreads the replicas over threads. (Numba's own
        # parallel loop would compile every env program about twice over: its parfor lowering links and
        # optimises the whole program again; measured on Tag-continuous, 502 s against 262 s.)
        def launch(p, s, start, stop):
            version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
            for env in range(start, stop):
                program(env, 0, 1, True, p, s)

        launch.__qualname__ = cache_name(name)
        return [njit(cache=True, nogil=True)(launch)]

    def run_program(self, launchers: Sequence[Dispatcher], p: Any, s: Any, num_envs: int, shape: LaunchShape,
                    exact: bool) -> None:
        if isinstance(launchers[0], _OnOneThread):
            launchers[0](p, s, 0, num_envs)
        else:
            run_in_chunks(launchers[0], p, s, num_envs)

    def loop_launcher(self, fn: Callable[..., Any], fingerprint: str, name: str) -> Dispatcher:
        _prefer_workqueue_threads()

        def launch(n, args):
            version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
            for i in prange(n):
                fn(i, args)

        launch.__qualname__ = cache_name(name)
        return njit(parallel=True, cache=True)(launch)

    def run_loop(self, launcher: Dispatcher, n: int, args: tuple[Any, ...]) -> None:
        launcher(n, args)


class CudaTarget(KernelTarget):
    backend: Backend = "cuda"
    compiler: Literal["cpu", "cuda"] = "cuda"
    separate_launches = True
    may_contract = True  # (the simulator, which runs the same source, keeps the CUDA target's programs)
    host_arrays = False
    bounds_checks = False  # (numba-cuda has no bounds checks; the simulator's NumPy arrays check every index)

    def free_memory(self, device: torch.device) -> tuple[int, str]:
        import torch

        return torch.cuda.mem_get_info(device)[0], f"free on {device}"

    def array(self, tensor: torch.Tensor) -> Any:
        return cuda.as_cuda_array(tensor.detach(), sync=False)

    def program_launchers(self, stages: Sequence[Callable[..., Any]], fingerprint: str, name: str,
                          max_registers: int | None = None, bounds_checked: bool = False) -> list[Dispatcher]:
        return [self._launcher(stage, fingerprint, name if len(stages) == 1 else f"{name}.{i}", max_registers)
                for i, stage in enumerate(stages)]

    def _launcher(self, runner: Callable[..., Any], fingerprint: str, name: str,
                  max_registers: int | None) -> Dispatcher:
        numpy_compatibility()
        launch = _cuda_launch_function(runner, fingerprint)
        if max_registers is None:
            launch.__qualname__ = cache_name(name)
            return cuda.jit(cache=True)(launch)
        launch.__qualname__ = cache_name(f"{name}.r{max_registers}")
        return cuda.jit(cache=True, max_registers=max_registers)(launch)

    def run_program(self, launchers: Sequence[Dispatcher], p: Any, s: Any, num_envs: int, shape: LaunchShape,
                    exact: bool) -> None:
        grid, block = shape.grid(num_envs), shape.block
        stream = torch_current_stream()
        # (the first call compiles; the context costs about a microsecond on later calls)
        with exact_cuda_arithmetic() if exact else nullcontext():
            for launch in launchers:
                launch[grid, block, stream](p, s, num_envs, shape.lanes)

    def loop_launcher(self, fn: Callable[..., Any], fingerprint: str, name: str) -> Dispatcher:
        numpy_compatibility()

        def launch(n, args):
            version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
            i = cuda.grid(1)
            if i < n:
                fn(i, args)

        launch.__qualname__ = cache_name(name)
        return cuda.jit(cache=True)(launch)

    def run_loop(self, launcher: Dispatcher, n: int, args: tuple[Any, ...]) -> None:
        blocks = -(-n // _LOOP_THREADS)
        with exact_cuda_arithmetic():
            launcher[blocks, _LOOP_THREADS, torch_current_stream()](n, args)

    def ptx(self, runner: Callable[..., Any], fingerprint: str, name: str, argument_types: tuple[Any, ...],
            compute_capability: tuple[int, int] = (9, 0), exact: bool = True) -> str:
        """The PTX of a runner's launcher for the given Numba argument types, compiled without a GPU."""
        from numba.cuda import dispatcher

        numpy_compatibility()
        launch = _cuda_launch_function(runner, fingerprint)
        launch.__qualname__ = cache_name(name)
        # device functions ask the current device for its compute capability; there may be none here
        original = dispatcher.get_current_device
        dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=compute_capability)
        try:
            with exact_cuda_arithmetic() if exact else nullcontext():
                ptx, _ = cuda.compile_ptx(launch, argument_types, cc=compute_capability)
        finally:
            dispatcher.get_current_device = original
        return ptx


class SimulatorTarget(CudaTarget):
    """The CUDA source run by Numba's simulator on CPU tensors: every thread a Python thread (tiny sizes only)."""

    backend: Backend = "cudasim"
    host_arrays = True

    def free_memory(self, device: torch.device) -> tuple[int, str]:
        return KernelTarget.free_memory(self, device)  # CPU tensors

    def array(self, tensor: torch.Tensor) -> Any:
        return tensor.detach().numpy()

    def default_launch(self, num_agents: int, num_envs: int, max_registers: int | None,
                       threads_per_agent: int = 1) -> LaunchShape:
        from warpdrive.core.compile import launch_shape

        # each thread a Python thread: small blocks (work spread over more indices than threads is looped over)
        return launch_shape(num_agents, max_lanes=8, block_threads=16)

    def _launcher(self, runner: Callable[..., Any], fingerprint: str, name: str,
                  max_registers: int | None) -> Dispatcher:
        launch = _cuda_launch_function(runner, fingerprint)  # (no registers to cap, nothing cached)
        launch.__qualname__ = cache_name(name)
        return cuda.jit(launch)

    def run_program(self, launchers: Sequence[Dispatcher], p: Any, s: Any, num_envs: int, shape: LaunchShape,
                    exact: bool) -> None:
        for launch in launchers:
            launch[shape.grid(num_envs), shape.block](p, s, num_envs, shape.lanes)


def _cuda_launch_function(runner: Callable[..., Any], fingerprint: str) -> Callable[..., Any]:
    def launch(p, s, num_envs, lanes):
        version = fingerprint  # noqa: F841 - part of the cache key, see source_fingerprint
        group = cuda.threadIdx.x // lanes
        lane = cuda.threadIdx.x - group * lanes
        env = cuda.blockIdx.x * (cuda.blockDim.x // lanes) + group
        active = env < num_envs
        if not active:
            env = num_envs - 1  # padding threads read a valid env and write nothing
        runner(env, lane, lanes, active, p, s)

    return launch


def resolve_backend(backend: Backend | None, device: str | torch.device | None) -> tuple[Backend, torch.device]:
    """The backend and torch device an env runs on, from what was asked (either may be None: the GPU when one
    is usable, else the CPU); a combination that cannot run is refused, naming what was given."""
    import torch

    if backend not in (None, "cpu", "cuda", "cudasim"):
        raise ValueError(f"backend must be 'cpu', 'cuda' or 'cudasim', got {backend!r}")
    if device is None:
        device = "cuda" if backend in (None, "cuda") and cuda_available() else "cpu"
    device = torch.device(device)
    if backend is None:
        backend = "cuda" if device.type == "cuda" else "cpu"
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"backend 'cuda' needs a cuda device, got {device}")
        if not cuda_available():
            raise RuntimeError("backend 'cuda' asked for, but no CUDA GPU is usable; use device='cpu'")
    elif device.type != "cpu":
        raise ValueError(f"backend {backend!r} runs on CPU tensors; got device {device}")
    if backend == "cudasim" and not simulator_enabled():
        raise RuntimeError("backend 'cudasim' needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
    return backend, device


@cache
def kernel_target(backend: Backend) -> KernelTarget:
    """The target of an env backend (one object per backend)."""
    if backend == "cpu":
        return CpuTarget()
    if backend == "cuda":
        return CudaTarget()
    if backend == "cudasim":
        return SimulatorTarget()
    raise ValueError(f"backend must be 'cpu', 'cuda' or 'cudasim', got {backend!r}")


def tensor_target(device: torch.device) -> KernelTarget:
    """The target for work on tensors of ``device``: CUDA on a real GPU, else the CPU (also under the simulator,
    whose tensors are CPU tensors)."""
    return kernel_target("cuda" if device.type == "cuda" and not simulator_enabled() else "cpu")


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
    with _EXACT_HOOKS:
        yield


class _ExactHooks:
    """The hooks of :func:`exact_cuda_arithmetic`, installed while any thread is inside one of its blocks.

    Threads (several runs at once, a user's) may enter and leave blocks in any order: a count under a lock makes
    the first entrant install the hooks and the last one out remove them, so that no thread compiles while
    another's exit has put the contracting originals back, and the originals are never lost. Meanwhile every
    CUDA compilation in the process is exact (also one that asked to contract: correct, only slower).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.originals: tuple[Any, Any] | None = None

    def __enter__(self) -> None:
        from numba.cuda.cudadrv import driver, nvvm

        with self.lock:
            if self.depth == 0:
                compile_ir, linker = self.originals = nvvm.compile_ir, driver._Linker

                def compile_ir_without_contraction(llvmir: Any, **options: Any) -> Any:
                    options["fma"] = False
                    return compile_ir(llvmir, **options)

                def linker_of_ptx(*args: Any, **options: Any) -> Any:
                    options["lto"] = False
                    return linker(*args, **options)

                nvvm.compile_ir, driver._Linker = compile_ir_without_contraction, linker_of_ptx
            self.depth += 1

    def __exit__(self, *exc: object) -> None:
        from numba.cuda.cudadrv import driver, nvvm

        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                assert self.originals is not None  # set by the first entrant
                nvvm.compile_ir, driver._Linker = self.originals
                self.originals = None


# (an object, not module-level numbers: program fingerprints hash this module's simple values, which must not
# change while programs run)
_EXACT_HOOKS = _ExactHooks()


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


def numpy_compatibility() -> None:
    """numba-cuda 0.30's CUDA typing registers ``np.row_stack``, which NumPy 2.5 removed (the same function as
    ``np.vstack``): give it back before the first CUDA compilation, not at import."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


@contextmanager
def _numba_bounds_checks() -> Iterator[None]:
    """Numba checks every array index of what it compiles meanwhile (``NUMBA_BOUNDSCHECK=1`` for a while)."""
    import numba

    saved = numba.config.BOUNDSCHECK  # type: ignore[attr-defined]
    numba.config.BOUNDSCHECK = 1  # type: ignore[attr-defined]
    try:
        yield
    finally:
        numba.config.BOUNDSCHECK = saved  # type: ignore[attr-defined]


class _OnOneThread:
    """A CPU launcher ``(p, s, start, stop)`` that runs every replica on the calling thread."""

    def __init__(self, launch: Callable[..., Any]) -> None:
        self.launch = launch

    def __call__(self, p: Any, s: Any, start: int, stop: int) -> None:
        self.launch(p, s, start, stop)


@cache
def _thread_pool(pid: int) -> ThreadPoolExecutor:
    """The threads of :func:`run_in_chunks` in process ``pid`` (a forked child inherits its parent's pool without
    the threads). Kept out of this module's globals, which program fingerprints hash: a fingerprint must not
    change once a program ran."""
    import numba

    return ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


def run_in_chunks(launch: Dispatcher, p: Any, s: Any, num_envs: int) -> None:
    """``launch(p, s, start, stop)`` over ``[0, num_envs)`` in contiguous chunks, one per thread of Numba's
    thread count (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``); the calls release the GIL. Replicas are
    independent, so the chunking never changes results."""
    import numba

    chunks = min(numba.get_num_threads(), num_envs)
    if chunks <= 1:
        launch(p, s, 0, num_envs)
        return
    size = -(-num_envs // chunks)
    pool = _thread_pool(os.getpid())
    calls = [pool.submit(launch, p, s, start, min(start + size, num_envs)) for start in range(0, num_envs, size)]
    for call in calls:
        call.result()  # waits, and raises what a call raised


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
