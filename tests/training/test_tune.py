"""``warpdrive tune``: the memory model of a training run and the largest replica count it allows; launch shapes."""

from __future__ import annotations

import pytest
import torch

from warpdrive.cli import TUNE_EXAMPLE, main
from warpdrive.core.compile import LaunchShape
from warpdrive.training.config import load_config
from warpdrive.training.trainer import Trainer
from warpdrive.training.tune import MemoryFit, _run_bytes, fit_memory, launch_candidates, time_launch_shapes

CPU = torch.device("cpu")


def cartpole(**overrides: object) -> object:
    return load_config("cartpole", [f"{key}={value}" for key, value in {"device": "cpu", **overrides}.items()])


def test_the_fitted_line_predicts_a_third_size() -> None:
    """Memory grows by the same amount per replica: the line through 8 and 16 replicas gives 48's to 2%."""
    config = cartpole()
    fit = fit_memory(config, CPU)
    assert fit.measured_at == (8, 16) and fit.per_env > 0
    predicted = fit.fixed + fit.per_env * 48
    assert abs(_run_bytes(config, 48, CPU) - predicted) <= 0.02 * predicted


def test_a_replica_costs_at_least_its_arrays_and_rollout_storage() -> None:
    config = cartpole()
    fit = fit_memory(config, CPU)
    trainer = Trainer(config)
    store = trainer.env.store
    env_bytes = sum(store[name].nbytes for name, spec in store.specs.items() if spec.per != "global")
    env_bytes /= config.env.num_envs
    storage_bytes = sum(t.nbytes for policy in trainer.policies for t in vars(policy.storage).values()
                        if isinstance(t, torch.Tensor)) / config.env.num_envs
    assert env_bytes > 0 and storage_bytes > 0
    assert fit.per_env >= 0.95 * (env_bytes + storage_bytes), (fit.per_env, env_bytes, storage_bytes)


def test_replicas_that_fit() -> None:
    fit = MemoryFit(per_env=1000.0, fixed=5000.0, free=100_000, where="free", measured_at=(8, 16), margin=0.9)
    assert fit.num_envs == 85  # (0.9 * 100,000 - 5,000) // 1,000
    assert MemoryFit(1000.0, 95_000.0, 100_000, "free", (8, 16), 0.9).num_envs == 0


def test_the_help_example_prints_what_fits(capsys: pytest.CaptureFixture[str]) -> None:
    command, *args = TUNE_EXAMPLE.split()
    assert command == "warpdrive"
    assert main([*args, "device=cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("memory: ") and "MiB per env replica" in lines[0]
    assert lines[0].endswith("of available host memory")
    assert lines[1].startswith("fits: env.num_envs=") and int(lines[1].split("=")[1].split()[0]) > 1000
    assert lines[2].startswith("launch shapes: CUDA only")


def test_a_launch_shape_from_the_config_reaches_the_env() -> None:
    trainer = Trainer(cartpole(**{"env.launch": "[2, 4]"}))
    assert trainer.env.shape == LaunchShape(2, 4)


def test_launch_candidates_surround_the_default() -> None:
    default = LaunchShape(64, 1)
    shapes = launch_candidates(default)
    assert default in shapes
    assert {s.lanes for s in shapes} == {16, 32, 64, 128, 256}
    assert all(32 <= s.lanes * s.envs_per_block <= 1024 for s in shapes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs of the env's CUDA kernels need a GPU")
def test_launch_shapes_are_timed_on_the_gpu() -> None:
    config = load_config("cartpole", ["device=cuda"])
    rows = time_launch_shapes(config, torch.device("cuda"), 64, steps=5, repeats=1)
    assert rows[0]["default"] and all(row["env_steps_per_s"] > 0 for row in rows if "error" not in row)
