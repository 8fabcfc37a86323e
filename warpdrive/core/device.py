"""The one place where the CPU and the CUDA targets differ.

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
``local_array``    ``cuda.local.array`` (size: a literal int)  ``np.empty``
=================  ==========================================  ===================================

The stubs' Python bodies are what the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs: there,
the threads of a block are Python threads, so the atomics take a lock and the barrier waits on the
simulator's thread barrier.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from numba import cuda, types
from numba.core.errors import TypingError
from numba.extending import overload, register_jitable

__all__ = [
    "atomic_add",
    "atomic_max",
    "atomic_min",
    "barrier",
    "cuda_available",
    "kernel_function",
    "local_array",
    "set_numba_cache_dir",
    "simulator_enabled",
]

#: Decorator for env logic: compiled for whichever target calls it (CPU ``njit`` or ``cuda.jit``).
kernel_function = register_jitable

_sim_lock = threading.Lock()

# numba-cuda 0.30 still calls np.row_stack, which NumPy 2.5 removed (same function as np.vstack).
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack


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
    numba.config.CACHE_DIR = str(path)
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
# per-thread scratch


def local_array(size, dtype):
    """A per-thread scratch array of ``size`` elements (``size`` must be a literal integer)."""
    return np.empty(size, dtype)


def _literal_size(size) -> int:
    if not isinstance(size, types.IntegerLiteral):
        raise TypingError("local_array(size, dtype): size must be a literal integer, e.g. local_array(16, ...)")
    return size.literal_value


@overload(local_array, target="cpu")
def _local_array_cpu(size, dtype):
    n = _literal_size(size)
    np_dtype = dtype.dtype

    def impl(size, dtype):
        return np.empty(n, np_dtype)

    return impl


@overload(local_array, target="cuda")
def _local_array_cuda(size, dtype):
    n = _literal_size(size)
    np_dtype = dtype.dtype

    def impl(size, dtype):
        return cuda.local.array(n, np_dtype)

    return impl
