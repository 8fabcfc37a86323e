"""``warpdrive tune``: how many env replicas a training config fits in memory, and the fastest launch shape.

The reference WarpDrive's auto-scaler doubles the replica count until CUDA runs out of memory. Here the memory
of a training run is measured at two small replica counts and fitted by a line, ``fixed + per_env * E``
(the env's arrays, the rollout storage and, on CUDA, the update's activations grow with ``E``; the networks and
optimiser states do not), and the largest ``E`` whose run fits in a margin of the free memory is computed.
The launch shapes of the env's CUDA kernels are then timed at that size (random actions drawn in the step
kernel, replayed from a CUDA graph). Launch shapes never change results, only speed.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
import warnings
from typing import Any

import torch

from warpdrive.core.compile import LaunchShape
from warpdrive.core.targets import tensor_target
from warpdrive.training.config import TrainConfig
from warpdrive.training.trainer import Trainer, make_env

__all__ = ["MemoryFit", "fit_memory", "launch_candidates", "time_launch_shapes"]


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
            side = torch.cuda.Stream(device)
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
