"""The primitives whose meaning differs between the CPU and the CUDA targets (inside compiled code; how code is
compiled and launched for each is :mod:`warpdrive.core.targets`).

Env logic is written once as plain Python functions decorated with :func:`kernel_function`
(Numba's ``register_jitable``). Such a function compiles under ``numba.njit`` for the CPU and under
``numba.cuda.jit`` for the GPU. The few operations whose meaning depends on the target are the
primitives below; each is a Python stub with one Numba overload per target:

=================  ==========================================  ===================================
primitive          CUDA                                        CPU (``njit``, one env per thread)
=================  ==========================================  ===================================
``barrier()``      ``cuda.syncthreads()``                      nothing: phases already run in order
``atomic_add``     ``cuda.atomic.add``                         a plain read-modify-write
``atomic_min/max`` ``cuda.atomic.min`` / ``max``               a plain compare and write
``local_array``    registers (size: a compile-time int)        a stack array
``fma``            ``fma.rn.f32`` (one rounding)               ``llvm.fma.f32`` (one rounding)
=================  ==========================================  ===================================

Arithmetic is otherwise the same on both targets: the CUDA compilation does not contract multiply-adds
(:mod:`warpdrive.core.compile`), and :mod:`warpdrive.core.exactmath` gives one float32 ``sin``/``cos``.

The stubs' Python bodies are what the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs: there,
the threads of a block are Python threads, so the atomics take a lock and the barrier waits on the
simulator's thread barrier.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import FunctionType
from typing import Any, TypeVar

import numpy as np
from llvmlite import ir
from numba import cuda, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import lower_builtin, overload, register_jitable, type_callable

__all__ = [
    "atomic_add",
    "atomic_max",
    "atomic_min",
    "barrier",
    "bits_double",
    "bits_float",
    "cuda_available",
    "debug_requested",
    "double_bits",
    "float_bits",
    "fma",
    "kernel_function",
    "local_array",
    "set_numba_cache_dir",
    "simulator_enabled",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def kernel_function(fn: _F) -> _F:
    """Decorator for env logic: ``fn`` is compiled for whichever target calls it (CPU ``njit`` or ``cuda.jit``).

    A closure (one made by a factory: a phase per ``k``, a gated runner) is first renamed after its content.
    Numba names a compiled function by its qualified name and a per-process counter, and a program loaded from
    the disk cache brings its callees under those names: two programs compiled in two processes could each hold
    a *different* ``factory.<locals>.run`` under one name, and once both were loaded into a third process, one
    program called the other's code (seen in CI: Tag-gridworld's cached step program running its reset's
    runners, so that no episode ever ended). With the content in the name, one name means one code (the runners
    :func:`~warpdrive.core.compile.sequence` generates are named the same way).
    """
    if isinstance(fn, FunctionType) and fn.__closure__ is not None:
        from warpdrive.core.fingerprint import closure_digest

        fn.__qualname__ = f"{fn.__qualname__}_{closure_digest(fn)}"
    return register_jitable(fn)

_sim_lock = threading.Lock()

def debug_requested() -> bool:
    """True when the environment variable ``WARPDRIVE_DEBUG`` is set (and not ``0``): the author's mode (full
    tracebacks in the CLI, bounds-checked CPU kernels)."""
    return os.environ.get("WARPDRIVE_DEBUG", "") not in ("", "0")


def simulator_enabled() -> bool:
    """True when Numba runs CUDA kernels in its Python simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def cuda_available() -> bool:
    """True when a real CUDA GPU is usable by both PyTorch and Numba."""
    import torch

    return torch.cuda.is_available() and not simulator_enabled()


def set_numba_cache_dir() -> Path:
    """Point Numba's on-disk cache at a user cache directory, never at site-packages.

    Honours ``NUMBA_CACHE_DIR`` and ``WARPDRIVE_CACHE_DIR`` when set; otherwise uses
    ``$XDG_CACHE_HOME/warpdrive/numba`` (``~/.cache/warpdrive/numba``). Called before any kernel is
    compiled, not at import time.
    """
    import numba

    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("WARPDRIVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "warpdrive"
    )
    path = Path(base) / "numba"
    path.mkdir(parents=True, exist_ok=True)
    numba.config.CACHE_DIR = str(path)  # type: ignore[attr-defined]  # numba's stubs omit its settings
    return path


# --------------------------------------------------------------------------------------------------
# barrier


def barrier() -> None:
    """Wait until every agent thread of the block has reached this point (no-op on the CPU)."""
    current = threading.current_thread()
    if hasattr(current, "syncthreads"):  # a simulated CUDA thread
        current.syncthreads()


@overload(barrier, target="cpu")
def _barrier_cpu():
    def impl():
        pass

    return impl


@overload(barrier, target="cuda")
def _barrier_cuda():
    def impl():
        cuda.syncthreads()

    return impl


# --------------------------------------------------------------------------------------------------
# atomics: return the old value, as CUDA's do


def atomic_add(array, index, value):
    """``array[index] += value`` atomically; returns the old value."""
    with _sim_lock:
        old = array[index]
        array[index] = old + value
    return old


def atomic_min(array, index, value):
    """``array[index] = min(array[index], value)`` atomically; returns the old value."""
    with _sim_lock:
        old = array[index]
        if value < old:
            array[index] = value
    return old


def atomic_max(array, index, value):
    """``array[index] = max(array[index], value)`` atomically; returns the old value."""
    with _sim_lock:
        old = array[index]
        if value > old:
            array[index] = value
    return old


@overload(atomic_add, target="cpu")
def _atomic_add_cpu(array, index, value):
    def impl(array, index, value):
        old = array[index]
        array[index] = old + value
        return old

    return impl


@overload(atomic_add, target="cuda")
def _atomic_add_cuda(array, index, value):
    def impl(array, index, value):
        return cuda.atomic.add(array, index, value)

    return impl


@overload(atomic_min, target="cpu")
def _atomic_min_cpu(array, index, value):
    def impl(array, index, value):
        old = array[index]
        if value < old:
            array[index] = value
        return old

    return impl


@overload(atomic_min, target="cuda")
def _atomic_min_cuda(array, index, value):
    # Read first: when many threads race for one address, most see that they cannot lower it and skip
    # the atomic, which would otherwise serialise them all.
    def impl(array, index, value):
        current = array[index]
        if value >= current:
            return current
        return cuda.atomic.min(array, index, value)

    return impl


@overload(atomic_max, target="cpu")
def _atomic_max_cpu(array, index, value):
    def impl(array, index, value):
        old = array[index]
        if value > old:
            array[index] = value
        return old

    return impl


@overload(atomic_max, target="cuda")
def _atomic_max_cuda(array, index, value):
    # Read first, as in atomic_min.
    def impl(array, index, value):
        current = array[index]
        if value <= current:
            return current
        return cuda.atomic.max(array, index, value)

    return impl


# --------------------------------------------------------------------------------------------------
# per-thread scratch, bit casts and an explicit fused multiply-add
#
# These are typed and lowered with Numba's public extension API (``type_callable`` + ``lower_builtin``) for
# the generic target, so that njit and cuda.jit both expand them inline in the calling function. An
# ``@overload`` cannot be used for ``local_array``: numba-cuda refuses any function that returns an array it
# did not receive (numba/numba#2108, NVIDIA/numba-cuda#221), so an overload returning ``cuda.local.array``
# never compiles. The Python bodies are what the CUDA simulator runs.


def local_array(size, dtype):
    """A per-thread scratch array of ``size`` elements; ``size`` must be a compile-time integer (a literal,
    or a constant captured by the closure that defines the kernel function).

    CPU: an array on the thread's stack (no heap allocation). CUDA: registers when every index is known at
    compile time (unrolled loops over ``range(size)``), local memory otherwise.
    """
    return np.empty(size, dtype)


@type_callable(local_array)
def _type_local_array(context):
    def typer(size, dtype):
        if not isinstance(size, types.IntegerLiteral):
            raise TypingError("local_array(size, dtype): size must be a compile-time integer, e.g. local_array(16, "
                              "np.float32), or a constant of the closure that defines the kernel function")
        if size.literal_value < 1:
            raise TypingError(f"local_array(size, dtype): size must be >= 1, got {size.literal_value}")
        if isinstance(dtype, (types.DTypeSpec, types.NumberClass)):
            return types.Array(dtype.dtype, 1, "C")
        raise TypingError(f"local_array(size, dtype): dtype must be a NumPy scalar type such as np.float32, "
                          f"got {dtype}")

    return typer


@lower_builtin(local_array, types.IntegerLiteral, types.Any)
def _lower_local_array(context, builder, sig, args):
    array_type = sig.return_type
    size = sig.args[0].literal_value
    element = context.get_data_type(array_type.dtype)
    # in the entry block of the calling function: a stack slot on the CPU, registers or local memory on CUDA
    data = cgutils.alloca_once(builder, element, size=size, name="warpdrive_local")
    array = context.make_array(array_type)(context, builder)
    intp = context.get_value_type(types.intp)
    itemsize = context.get_abi_sizeof(element)
    context.populate_array(array, data=data, shape=[intp(size)], strides=[intp(itemsize)], itemsize=intp(itemsize),
                           meminfo=None)
    return array._getvalue()


def float_bits(x):
    """The IEEE-754 bits of a float32 as a uint32 (for d >= +0, the integer order of the bits is the order of
    the floats: keys such as ``float_bits(d) << 32 | id`` sort by distance, then id)."""
    return np.uint32(np.float32(x).view(np.uint32))


def bits_float(bits):
    """The float32 whose IEEE-754 bits are ``bits`` (a 32-bit integer): the inverse of :func:`float_bits`."""
    return np.float32(np.uint32(bits).view(np.float32))


def double_bits(x):
    """The IEEE-754 bits of a float64 as a uint64 (see :func:`float_bits`)."""
    return np.uint64(np.float64(x).view(np.uint64))


def bits_double(bits):
    """The float64 whose IEEE-754 bits are ``bits`` (a 64-bit integer): the inverse of :func:`double_bits`."""
    return np.float64(np.uint64(bits).view(np.float64))


def _register_bit_cast(function: Any, accepts: Any, result: types.Type, expected: str) -> None:
    """Type and lower ``function(x)`` as a reinterpretation of ``x``'s bits as ``result`` (no conversion)."""

    @type_callable(function)
    def _typing(context):
        def typer(value):
            if accepts(value):
                return result
            raise TypingError(f"{function.__name__}(x): x must be {expected}, got {value}")

        return typer

    @lower_builtin(function, types.Number)
    def _lowering(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(result))


def _is_integer_of(bits: int) -> Any:
    return lambda value: isinstance(value, types.Integer) and value.bitwidth == bits  # type: ignore[attr-defined]  # not in numba's stubs


_register_bit_cast(float_bits, lambda value: value == types.float32, types.uint32, "a float32")
_register_bit_cast(bits_float, _is_integer_of(32), types.float32, "a 32-bit integer")
_register_bit_cast(double_bits, lambda value: value == types.float64, types.uint64, "a float64")
_register_bit_cast(bits_double, _is_integer_of(64), types.float64, "a 64-bit integer")


def fma(a, b, c):
    """``a * b + c`` in float32 with one rounding, identical on every target.

    Kernels are compiled without contraction of multiply-adds (see :mod:`warpdrive.core.compile`), so that
    the CPU and the GPU round every product and sum alike; use this where an env wants the fused form.
    """
    return np.float32(np.float64(np.float32(a)) * np.float64(np.float32(b)) + np.float64(np.float32(c)))


#: marks an env's explicit ``fma`` in the PTX, so that a scan for contracted multiply-adds can tell them apart
FMA_PTX_MARKER = "warpdrive explicit fma"


@type_callable(fma)
def _type_fma(context):
    def typer(a, b, c):
        if a == b == c == types.float32:
            return types.float32
        raise TypingError(f"fma(a, b, c): a, b and c must be float32, got {a}, {b}, {c}")

    return typer


@lower_builtin(fma, types.float32, types.float32, types.float32)
def _lower_fma(context, builder, sig, args):
    if builder.module.triple.startswith("nvptx"):
        asm_type = ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3)
        fused = ir.InlineAsm(asm_type, f"fma.rn.f32 $0, $1, $2, $3; // {FMA_PTX_MARKER}", "=f,f,f,f")
        return builder.call(fused, args)
    return builder.fma(*args)  # llvm.fma.f32: exactly rounded
