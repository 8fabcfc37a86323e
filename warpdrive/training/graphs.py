"""CUDA-graph capture of a repeated piece of training work (a policy's update).

A small network's update is a few hundred kernel launches, each microseconds of arithmetic: the host's
launch overhead, not the GPU, sets its pace (PPO on Tag-gridworld: 16 minibatch steps of a 32x32 network,
4.8 ms each, against ~0.1 ms of arithmetic). Replaying a captured graph launches them all at once.

The captured function must be *graph-safe*: no host sync, no Python decision on a device value, the same
tensor shapes and the same input tensors (updated in place) at every call, and every value that changes
between calls (learning rate, entropy coefficient) read from a device tensor rather than baked in as a
Python number.

Captures go through :func:`capture`, which registers the run's own random generator with the graph.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import torch

__all__ = ["GraphedCall", "capture"]

log = logging.getLogger(__name__)

Output = TypeVar("Output")


@contextlib.contextmanager
def capture(graph: torch.cuda.CUDAGraph, generators: Iterable[torch.Generator | None] = ()) -> Iterator[None]:
    """Capture the CUDA work of the ``with`` block into ``graph`` (as ``torch.cuda.graph`` does).

    ``generators``: the random generators the block draws from besides torch's default one (which every
    capture registers); registered with the graph, so that each replay draws fresh numbers from them and
    advances them. The capture is ``thread_local``: other threads of the process (a user's, a data loader's)
    may use CUDA meanwhile without breaking it, as long as nothing they do reaches the capturing streams.
    """
    for generator in dict.fromkeys(g for g in generators if g is not None and g.device.type == "cuda"):
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        yield


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
            side = torch.cuda.Stream(device=self.device)
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
