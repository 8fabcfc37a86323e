"""``warpdrive tune``: the memory model of a training run and the largest replica count it allows; launch shapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import warpdrive
from warpdrive.cli import TUNE_EXAMPLE, main
from warpdrive.core.compile import LaunchShape
from warpdrive.core.targets import KernelTarget
from warpdrive.training import tune
from warpdrive.training.config import ConfigError, load_config
from warpdrive.training.trainer import Trainer
from warpdrive.training.tune import (
    MemoryEstimate,
    MemoryFit,
    _reachable_tensors,
    _run_bytes,
    estimate_memory,
    fit_memory,
    launch_candidates,
    out_of_memory_advice,
    time_launch_shapes,
)

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
    # the estimate from shapes alone counts the same, and is a lower bound of what a run measures
    estimate = estimate_memory(config)
    assert estimate.env_per_env == env_bytes and estimate.rollout_per_env >= storage_bytes
    assert estimate.per_env <= fit.per_env, (estimate, fit)


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


# --------------------------------------------------------------------------------------------------
# the estimate from shapes alone (no run, no GPU), and what an out-of-memory error says with it


@pytest.mark.parametrize("source, overrides", [
    ("cartpole", []),
    ("cartpole", ["policies.shared.model.recurrent=gru"]),  # the recurrent state per replica too
    ("tag_gridworld", ["env.kwargs.num_taggers=2"]),  # two policies
    ("simple_spread/masac.yaml", ["policies.shared.masac.buffer_size=3000"]),  # off-policy: a replay buffer
], ids=["ppo", "recurrent", "two-policies", "masac"])
def test_the_estimate_counts_what_a_run_allocates(source: str, overrides: list[str]) -> None:
    """The env's arrays and the rollout storage per replica exactly as a CPU run allocates them (after one
    iteration, when a recurrent policy's states exist); the networks and replay buffers in the fixed part."""
    if source.endswith(".yaml"):  # a packaged env's other config
        source = str(Path(warpdrive.__file__).parent / "envs" / source)
    config = load_config(source, ["device=cpu", "env.num_envs=6", "rollout_length=5", *overrides])
    estimate = estimate_memory(config)
    trainer = Trainer(config)
    trainer.train_iteration()
    store = trainer.env.store
    assert estimate.env_per_env * 6 == sum(store[n].nbytes for n, spec in store.specs.items() if spec.per != "global")
    rollout = _reachable_tensors([trainer.collector.env_rollout, [p.storage for p in trainer.policies],
                                  [p.algorithm.memory for p in trainer.policies]])
    assert estimate.rollout_per_env * 6 == sum(t.nbytes for t in rollout)
    parameters = sum(t.nbytes for p in trainer.policies for t in p.algorithm.model.parameters())
    replay = sum(t.nbytes for p in trainer.policies if hasattr(p.algorithm, "replay")
                 for t in vars(p.algorithm.replay).values() if isinstance(t, torch.Tensor))
    assert estimate.fixed >= 4 * parameters + replay  # weights, gradients, two Adam moments; the replay buffer
    assert ("masac" in source) == (replay > 0)
    assert estimate.bytes(6) == estimate.fixed + 6 * estimate.per_env


def test_replicas_that_fit_by_the_estimate() -> None:
    estimate = MemoryEstimate(env_per_env=100, rollout_per_env=900, fixed=5000, rollout_length=8)
    assert estimate.per_env == 1000 and estimate.bytes(3) == 8000
    assert estimate.num_envs(100_000) == 95 and estimate.num_envs(5999) == 0 and estimate.num_envs(10) == 0


def test_out_of_memory_advice_says_how_many_replicas_fit() -> None:
    config = cartpole(**{"env.num_envs": 64})
    estimate = estimate_memory(config)
    free = estimate.bytes(10) + 1
    advice = out_of_memory_advice(config, free, "free on cuda:0")
    assert advice.startswith("at most 10 env replicas fit, so env.num_envs=64 does not: ") and "\n" not in advice
    assert "per env replica" in advice and "rollout storage of rollout_length=" in advice
    assert advice.endswith("free on cuda:0; the update's activations need more on top (warpdrive tune CONFIG "
                           "measures the whole run)")
    # the config's replicas fit by the estimate: the update ran out
    advice = out_of_memory_advice(config, estimate.bytes(100), "free on cuda:0")
    assert advice.startswith("env.num_envs=64 fits by an estimate") and "at most 100 replicas would" in advice
    assert out_of_memory_advice(config, estimate.fixed, "free on cuda:0").startswith("not even one env replica fits")


CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which\n"
            "1.06 GiB is free.")
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 140737488355328 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError(CUDA_OOM), RuntimeError(CPU_OOM)], ids=["cuda", "cpu"])
def test_train_out_of_memory_says_how_many_replicas_fit(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], error: Exception) -> None:
    """An allocation that fails in a run (simulated) is one line with exit status 2 that says how many replicas
    fit, from the estimate and what is free (simulated too)."""
    from warpdrive.training import run

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise error

    config = cartpole(**{"env.num_envs": 4096})
    free = estimate_memory(config).bytes(1000) + 5
    monkeypatch.setattr(run, "train", out_of_memory)
    monkeypatch.setattr(tune, "available_memory", lambda device: (free, "free on cuda:0"))
    assert main(["train", "cartpole", "device=cpu", "env.num_envs=4096"]) == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and line.startswith("warpdrive train: error: out of memory: "), line
    assert str(error).splitlines()[0] in line
    assert re.search(r"\(at most 1000 env replicas fit, so env\.num_envs=4096 does not: .* per env replica .*"
                     r"free on cuda:0; the update's activations need more on top \(warpdrive tune CONFIG measures "
                     r"the whole run\)\)$", line), line


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="a real CUDA out-of-memory error needs a GPU")
def test_on_the_gpu_a_run_that_does_not_fit_is_one_line_saying_how_many_replicas_fit(
        capsys: pytest.CaptureFixture[str]) -> None:
    """With all but 2 GiB of the GPU taken (by Numba, outside PyTorch's allocator): a replica count whose env
    arrays alone do not fit is refused by the env's check before anything is allocated; one whose env arrays fit
    but whose rollout storage does not meets a real CUDA out-of-memory error. Both are one line, exit status 2,
    and say how many replicas fit; nothing is simulated."""
    from numba import cuda

    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    left = 2 * 2**30
    held = cuda.device_array(free - left, dtype="uint8")  # noqa: F841  (held until the test ends)
    estimate = estimate_memory(load_config("cartpole", ["device=cuda"]))
    assert estimate.rollout_per_env > 4 * estimate.env_per_env  # so that the second count below exists
    too_many_for_the_env = 2 * left // estimate.env_per_env
    only_the_env_fits = left // (2 * estimate.env_per_env)
    assert estimate.per_env * only_the_env_fits > 2 * left
    for num_envs, kind in ((too_many_for_the_env, "env.num_envs"), (only_the_env_fits, "out of memory")):
        assert main(["train", "cartpole", "device=cuda", f"env.num_envs={num_envs}", "logging.progress=false"]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("warpdrive train: error: ") and kind in line, line
        # (the env's check names two counts: its arrays alone, then a training run's: the last is this run's)
        fit = int(re.findall(r"at most ([0-9]+) env(?: replica)?s fit", line)[-1])
        assert 0 < fit < only_the_env_fits, line
        torch.cuda.empty_cache()


def test_without_an_estimate_out_of_memory_points_to_tune(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from warpdrive.training import run

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError(CUDA_OOM)

    def no_estimate(config: object) -> None:
        raise ValueError("cannot estimate")

    monkeypatch.setattr(run, "train", out_of_memory)
    monkeypatch.setattr(tune, "estimate_memory", no_estimate)
    assert main(["train", "cartpole", "device=cpu"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("is free. (warpdrive tune CONFIG prints how many env replicas fit)"), line


def test_other_runtime_errors_are_not_taken_for_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from warpdrive.training import run

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(run, "train", broken)
    with pytest.raises(RuntimeError, match=r"^a bug$"):
        main(["train", "cartpole", "device=cpu"])


def test_the_envs_memory_check_counts_rollout_storage_in_a_training_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env's own check counts only its arrays; a training run's error adds how many replicas fit with the
    rollout storage, networks and replay buffers too."""
    free = 2**20
    monkeypatch.setattr(KernelTarget, "free_memory", lambda self, device: (free, "of available host memory"))
    config = cartpole(**{"env.num_envs": 20_000})
    estimate = estimate_memory(config)
    with_rollouts = estimate.num_envs(free)
    with pytest.raises(ConfigError) as caught:
        Trainer(config)
    message = str(caught.value)
    assert message.startswith("env.num_envs: CartPole with num_envs=20000") and "\n" not in message
    arrays_only = re.search(r"so at most (\d+) envs fit; counting a training run's rollout storage "
                            r"\(rollout_length=64: ", message)
    assert arrays_only and 0 < with_rollouts < int(arrays_only[1]) // 10 < 20_000, message
    assert message.endswith(f"networks and replay buffers too, at most {with_rollouts} envs fit"), message
