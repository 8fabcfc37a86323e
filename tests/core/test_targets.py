"""The CPU/CUDA/simulator seam: one target object per backend, chosen in one place."""

from __future__ import annotations

import re

import numba
import pytest
import torch

from warpdrive.core.compile import LaunchShape
from warpdrive.core.targets import (
    CpuTarget,
    CudaTarget,
    SimulatorTarget,
    kernel_target,
    resolve_backend,
    run_in_chunks,
    tensor_target,
)
from warpdrive.envs import make


@pytest.mark.parametrize(("backend", "cls", "compiler", "host_arrays", "separate_launches"),
                         [("cpu", CpuTarget, "cpu", True, False), ("cuda", CudaTarget, "cuda", False, True),
                          ("cudasim", SimulatorTarget, "cuda", True, True)])
def test_one_target_per_backend(backend: str, cls: type, compiler: str, host_arrays: bool,
                                separate_launches: bool) -> None:
    target = kernel_target(backend)  # type: ignore[arg-type]
    assert type(target) is cls and target.backend == backend and target.compiler == compiler
    assert kernel_target(backend) is target  # type: ignore[arg-type]
    assert target.host_arrays is host_arrays and target.separate_launches is separate_launches
    assert target.may_contract is (compiler == "cuda")  # NVVM contracts unless told not to; the CPU never


@pytest.mark.parametrize(("backend", "device", "error", "message"), [
    ("tpu", None, ValueError, "backend must be 'cpu', 'cuda' or 'cudasim', got 'tpu'"),
    ("cpu", "meta", ValueError, "backend 'cpu' runs on CPU tensors; got device meta"),
    ("cuda", "cpu", ValueError, "backend 'cuda' needs a cuda device, got cpu"),
])
def test_impossible_backend_and_device_are_named(backend: str, device: str | None, error: type,
                                                  message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        resolve_backend(backend, device)  # type: ignore[arg-type]


def test_the_default_backend_follows_the_device(gpu_backend: str) -> None:
    assert resolve_backend(None, "cpu") == ("cpu", torch.device("cpu"))
    device = "cpu" if gpu_backend == "cudasim" else "cuda"  # the simulator runs on CPU tensors
    assert resolve_backend(gpu_backend, device) == (gpu_backend, torch.device(device))  # type: ignore[arg-type]


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


@pytest.mark.parametrize("num_envs", [1, 2, 7, 64])
def test_cpu_programs_cover_every_replica_once_in_chunks(num_envs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(numba, "get_num_threads", lambda: 3)
    run_in_chunks(lambda p, s, start, stop: calls.append((start, stop)), None, None, num_envs)
    covered = sorted(env for start, stop in calls for env in range(start, stop))
    assert covered == list(range(num_envs)) and len(calls) == min(3, num_envs)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one CPU: a single thread count to run")
def test_cpu_results_do_not_depend_on_the_thread_count() -> None:
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            env = make("tag_gridworld", num_envs=7, device="cpu", seed=3, episode_length=6)
            env.reset()
            steps = []
            for _ in range(9):  # past the autoresets
                env.random_step()
                steps.append(env.obs.clone())
            runs.append(torch.stack(steps))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert torch.equal(runs[0], runs[1])
    # the envs did step (a program that ran no replica would pass the comparison above)
    assert all(not torch.equal(runs[0][t], runs[0][t + 1]) for t in range(8))


def test_the_bounds_checked_cpu_program_steps_every_replica() -> None:
    runs = []
    for debug in (False, True):
        env = make("cartpole", num_envs=5, device="cpu", seed=2, debug=debug)
        env.reset()
        for _ in range(3):
            env.random_step()
        assert env.store["t"].tolist() == [3] * 5
        runs.append(env.obs.clone())
    assert torch.equal(runs[0], runs[1])
