"""CUDA-graph capture of a repeated piece of training work (a policy's update).

A small network's update is a few hundred kernel launches, each microseconds of arithmetic: the host's
launch overhead, not the GPU, sets its pace (PPO on Tag-gridworld: 16 minibatch steps of a 32x32 network,
4.8 ms each, against ~0.1 ms of arithmetic). Replaying a captured graph launches them all at once.

The captured function must be *graph-safe*: no host sync, no Python decision on a device value, the same
tensor shapes and the same input tensors (updated in place) at every call, and every value that changes
between calls (learning rate, entropy coefficient) read from a device tensor rather than baked in as a
Python number.

Captures go through :func:`capture`, which also serves runs that share the process and the GPU (several
seeds at once, :mod:`~warpdrive.training.seeds`): one capture at a time, on a stream that nothing else uses,
each run's random generator registered with the graph, and other threads' CUDA calls allowed meanwhile.
Training code makes its streams with :func:`new_stream`, never from torch's pool (see there why).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import torch

__all__ = ["GraphedCall", "capture", "new_stream"]

_CAPTURE_LOCK = threading.Lock()


class _CaptureStreams(threading.local):
    """Per thread, per CUDA device index: the stream that the thread's captures record on."""

    def __init__(self) -> None:
        self.by_device: dict[int, torch.cuda.Stream] = {}


_capture_streams = _CaptureStreams()

log = logging.getLogger(__name__)

Output = TypeVar("Output")


@contextlib.contextmanager
def capture(graph: torch.cuda.CUDAGraph, generators: Iterable[torch.Generator | None] = ()) -> Iterator[None]:
    """Capture the CUDA work of the ``with`` block into ``graph`` (as ``torch.cuda.graph`` does).

    ``generators``: the random generators the block draws from besides torch's default one (which every
    capture registers); registered with the graph, so that each replay draws fresh numbers from them and
    advances them. Captures in this process take turns (a lock), and run in ``thread_local`` error mode:
    another thread's runs may allocate and synchronise while this one records, and none of their work can reach
    the capturing stream, which is the calling thread's own (:func:`new_stream`).

    Why a stream per thread: the backward passes of every thread run in autograd's one worker thread per
    device, whose cuBLAS calls take a workspace per (cuBLAS handle, stream). Captured on one shared stream,
    every run's graph would bake in the same workspace, and graphs replayed at once on their runs' streams
    would race on it (the suspected cause of runs at once parting from runs alone on the H200, 2026-12-01).
    """
    with _CAPTURE_LOCK:
        _spare_survivors_at_exit()
        device = torch.cuda.current_device()
        streams = _capture_streams.by_device
        stream = streams.get(device)
        if stream is None:
            stream = streams[device] = new_stream(torch.device("cuda", device))
        for generator in dict.fromkeys(g for g in generators if g is not None and g.device.type == "cuda"):
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            yield


@functools.cache  # once per process
def _spare_survivors_at_exit() -> None:
    """Keep the interpreter's final garbage collection away from the objects alive at exit (``gc.freeze``).

    Processes that captured Numba's kernels in a CUDA graph (a rollout graph) ended in a segmentation fault after
    their exit handlers, inside CPython's last collection: ``_PyWeakref_ClearRef`` under ``Py_FinalizeEx`` (H200,
    Python 3.12, numba-cuda 0.30.4, torch 2.11; every command-line run of sessions 16-17, also with the trainer
    deleted and collected beforehand; benchmarks/RESULTS.md, session 18). Frozen objects are not examined by that
    collection: with this, every such process measured exited with 0. What the process still holds is released
    by its end; Python never promised finalizers at exit.
    """
    atexit.register(gc.freeze)


def new_stream(device: torch.device) -> torch.cuda.Stream:
    """A CUDA stream on ``device`` that no other code of the process is handed (non-blocking, as torch's are).

    ``torch.cuda.Stream()`` hands out a pool of 32 streams round-robin, so two runs of one process (several
    seeds at once) can get the same stream; and a capture records whatever reaches its streams from any
    thread (seen on an H200: one run's sampling reached another's capture, which failed with "Attempt to
    increase offset for a CUDA generator not in capture mode"). This one is made by the driver for the
    caller alone, and destroyed with the returned object (the driver finishes its queued work first).
    """
    from cuda.bindings import driver

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    # the device's primary context (torch's), made current for the call: a thread that has not used CUDA
    # through the runtime yet has no current context
    context = _check(driver.cuDevicePrimaryCtxRetain(_check(driver.cuDeviceGet(index), "cuDeviceGet")),
                     "cuDevicePrimaryCtxRetain")
    _check(driver.cuCtxPushCurrent(context), "cuCtxPushCurrent")
    try:
        handle = _check(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")
    finally:
        _check(driver.cuCtxPopCurrent(), "cuCtxPopCurrent")
    stream = torch.cuda.ExternalStream(int(handle), device=torch.device("cuda", index))
    # Not at interpreter exit: once Numba has launched a kernel in the process, destroying the stream from the
    # exit finalizers ends the process in a segmentation fault (H200, 2026-12-02, numba-cuda 0.30.4); the
    # process's end releases it anyway.
    weakref.finalize(stream, driver.cuStreamDestroy, handle).atexit = False
    return stream


def _check(result: tuple[Any, ...], call: str) -> Any:
    """The value of a cuda.bindings call's ``(error, value...)`` result; raises on an error."""
    from cuda.bindings import driver

    if result[0] != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{call} failed: {result[0]}")
    return result[1] if len(result) > 1 else None


class GraphedCall(Generic[Output]):
    """Call ``fn`` eagerly ``warmup`` times, capture it in a CUDA graph at the next call, then replay.

    The warm-up calls are real calls (lazy initialisation, such as the optimiser's state or cuBLAS's
    workspace, must happen before a capture) and run on a side stream, as PyTorch's capture rules ask.
    Capturing records without running, so the capturing call replays the graph once to do its work. What
    ``fn`` returned at capture is returned by every replay, holding that replay's values until the next one.
    If the capture fails, a warning is logged and ``fn`` runs eagerly from then on.

    Args:
        fn: the graph-safe function (see the module docstring).
        device: the CUDA device it runs on; ``enabled=False`` or a CPU device: always eager.
        what: named in the warning if the capture fails.
        generator: the random generator ``fn`` draws from, if not torch's default one (see :func:`capture`).
    """

    def __init__(self, fn: Callable[[], Output], device: torch.device, *, enabled: bool = True, warmup: int = 1,
                 what: str = "the update", generator: torch.Generator | None = None) -> None:
        self.fn = fn
        self.generator = generator
        self.device = device
        self.enabled = enabled and device.type == "cuda"
        self.warmup = warmup
        self.what = what
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Output | None = None

    @property
    def captured(self) -> bool:
        """True once calls replay a captured graph."""
        return self.graph is not None

    def __call__(self) -> Output:
        if self.graph is not None:
            self.graph.replay()
            return self.outputs  # type: ignore[return-value]  # set with the graph
        self.calls += 1
        if not self.enabled:
            return self.fn()
        if self.calls <= self.warmup:
            side = new_stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                outputs = self.fn()
            torch.cuda.current_stream(self.device).wait_stream(side)
            return outputs
        graph = torch.cuda.CUDAGraph()
        try:
            with capture(graph, [self.generator]):
                outputs = self.fn()
        except RuntimeError as err:
            log.warning("CUDA graph capture of %s failed (%s); continuing eagerly", self.what, err)
            self.enabled = False
            return self.fn()
        self.graph, self.outputs = graph, outputs
        graph.replay()
        return outputs
