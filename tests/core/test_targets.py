"""The CPU/CUDA/simulator seam: one target object per backend, chosen in one place."""

from __future__ import annotations

import pytest
import torch

from warpdrive.core.compile import LaunchShape
from warpdrive.core.targets import CpuTarget, CudaTarget, SimulatorTarget, kernel_target, tensor_target
from warpdrive.envs import make


@pytest.mark.parametrize(("backend", "cls", "compiler"), [("cpu", CpuTarget, "cpu"), ("cuda", CudaTarget, "cuda"),
                                                          ("cudasim", SimulatorTarget, "cuda")])
def test_one_target_per_backend(backend: str, cls: type, compiler: str) -> None:
    target = kernel_target(backend)  # type: ignore[arg-type]
    assert type(target) is cls and target.backend == backend and target.compiler == compiler
    assert kernel_target(backend) is target  # type: ignore[arg-type]


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match=r"backend must be 'cpu', 'cuda' or 'cudasim', got 'tpu'"):
        kernel_target("tpu")  # type: ignore[arg-type]


def test_cpu_tensors_run_on_the_cpu_target() -> None:
    assert tensor_target(torch.device("cpu")).backend == "cpu"


def test_the_simulator_gets_small_blocks_and_arrays_stay_zero_copy() -> None:
    shape = kernel_target("cudasim").default_launch(1000, 2000, max_registers=64)
    assert shape.block <= 16 and shape.max_registers is None  # every simulated thread is a Python thread
    assert kernel_target("cuda").default_launch(1000, 2000, 64) == LaunchShape(256, 1, 64)
    tensor = torch.zeros(3)
    kernel_target("cpu").array(tensor)[1] = 2.0
    assert tensor[1] == 2.0


def test_an_env_holds_the_target_of_its_backend(gpu_backend: str) -> None:
    assert make("tag_gridworld", num_envs=2, device="cpu").target is kernel_target("cpu")
    device = "cpu" if gpu_backend == "cudasim" else "cuda"
    env = make("tag_gridworld", num_envs=2, device=device, backend=gpu_backend)
    assert env.target is kernel_target(gpu_backend)  # type: ignore[arg-type]
