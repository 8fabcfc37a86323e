"""Phases compiled for both targets: ordering, barriers, per-env merging, index domains, primitives."""

from __future__ import annotations

import dis
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive import ArraySpec, Env, atomic_add, atomic_max, atomic_min, kernel_function, local_array
from warpdrive.core.compile import LaunchShape, launch_shape, per_agent, per_env, per_index, sequence
from warpdrive.envs import make


@kernel_function
def _write_own(env, agent, p, s):
    s.value[env, agent] = np.float32(agent + 1) * np.float32(env + 1)


@kernel_function
def _read_neighbour(env, agent, p, s):
    # reads what another agent (maybe on another thread) wrote in the previous phase: needs the barrier
    s.obs[env, agent, 0] = s.value[env, (agent + 1) % p.num_agents]


@kernel_function
def _sum_and_extremes(env, agent, p, s):
    atomic_add(s.total, env, s.value[env, agent])
    atomic_min(s.lowest, env, s.value[env, agent])
    atomic_max(s.highest, env, s.value[env, agent])


@kernel_function
def _clear(env, p, s):
    s.total[env] = 0.0
    s.lowest[env] = np.float32(1e30)
    s.highest[env] = np.float32(-1e30)


@kernel_function
def _write_totals(env, agent, p, s):
    s.obs[env, agent, 1] = s.total[env]
    s.obs[env, agent, 2] = s.lowest[env]
    s.obs[env, agent, 3] = s.highest[env]


@kernel_function
def _cell_count(p, s):
    return p.num_cells


@kernel_function
def _fill_cell(env, cell, p, s):
    s.cells[env, cell] = cell * 10 + env


@kernel_function
def _running_sum(env, agent, p, s):
    scratch = local_array(4, np.float32)
    for k in range(4):
        scratch[k] = np.float32(k) * s.value[env, agent]
    acc = np.float32(0.0)
    for k in range(4):
        acc += scratch[k]
    s.obs[env, agent, 4] = acc


@kernel_function
def _reward_and_end(env, agent, p, s):
    s.rewards[env, agent] = s.obs[env, agent, 0]


@kernel_function
def _end(env, p, s):
    s.terminated[env] = s.t[env] >= 2


@dataclass(frozen=True)
class ToyConfig:
    num_agents: int = 37
    episode_length: int = 5
    num_cells: int = 11

    def validate(self) -> None:
        if self.num_agents < 1:
            raise ValueError(f"num_agents must be >= 1, got {self.num_agents}")


class ToyEnv(Env):
    """Exercises every kind of phase; agents: 37 so that strided loops wrap on small lane counts."""

    name = "toy"
    Config = ToyConfig
    step_phases = (
        per_agent(_write_own),
        per_agent(_read_neighbour),
        per_env(_clear),
        per_agent(_sum_and_extremes),
        per_agent(_write_totals, _running_sum, _reward_and_end),
        per_index(_fill_cell, _cell_count),
        per_env(_end),
    )
    reset_phases = (per_agent(_write_own),)

    @classmethod
    def num_agents_of(cls, config: ToyConfig) -> int:
        return config.num_agents

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(2)

    def observation_size(self) -> int:
        return 5

    def state_arrays(self) -> list[ArraySpec]:
        return [
            ArraySpec("value", "agent", torch.float32),
            ArraySpec("total", "env", torch.float32, "scratch"),
            ArraySpec("lowest", "env", torch.float32, "scratch"),
            ArraySpec("highest", "env", torch.float32, "scratch"),
            ArraySpec("cells", "env", torch.int32, "scratch", (self.config.num_cells,)),
        ]

    def kernel_params(self) -> dict:
        return {"num_cells": self.config.num_cells}


def expected_obs(num_envs: int, num_agents: int) -> torch.Tensor:
    values = torch.arange(1, num_agents + 1, dtype=torch.float32)[None, :] * torch.arange(1, num_envs + 1)[:, None]
    obs = torch.zeros(num_envs, num_agents, 5)
    obs[..., 0] = values.roll(-1, dims=1)
    obs[..., 1] = values.sum(1, keepdim=True)
    obs[..., 2] = values.min(1, keepdim=True).values
    obs[..., 3] = values.max(1, keepdim=True).values
    obs[..., 4] = values * 6.0
    return obs


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_phases_run_in_order_with_barriers(backend: str, gpu_backend: str) -> None:
    backend = gpu_backend if backend == "gpu" else "cpu"
    env = ToyEnv(num_envs=3, backend=backend)
    env.reset()
    obs, rewards, terminated, truncated, info = env.step(torch.zeros(3, 37, dtype=torch.int32))
    torch.testing.assert_close(obs, expected_obs(3, 37))
    torch.testing.assert_close(rewards, obs[..., 0])
    cells = env.store["cells"]
    assert cells.tolist() == [[c * 10 + e for c in range(11)] for e in range(3)]
    assert not terminated.any()
    _, _, terminated, truncated, info = env.step()
    assert terminated.all() and not truncated.any() and info["done"].all()
    torch.testing.assert_close(info["final_obs"], expected_obs(3, 37))
    assert env.store["t"].eq(0).all() and env.store["episode"].eq(2).all()
    assert env.store["final_length"].eq(2).all()


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_the_step_kernel_keeps_episode_returns_and_totals(backend: str, gpu_backend: str) -> None:
    backend = gpu_backend if backend == "gpu" else "cpu"
    env = ToyEnv(num_envs=3, backend=backend)
    env.reset()
    _, first, *_ = env.step(torch.zeros(3, 37, dtype=torch.int32))
    first = first.clone()
    torch.testing.assert_close(env.store["episode_return"], first)
    assert env.episode_totals()["episodes"].item() == 0.0
    _, second, _, _, info = env.step()  # every episode terminates here, after 2 steps
    assert info["done"].all()
    torch.testing.assert_close(env.store["final_return"], first + second)
    assert env.store["episode_return"].eq(0).all()  # the next episode starts from zero
    env.step()  # one step into the next episode: not counted until it ends
    totals = env.episode_totals()
    assert totals["episodes"].item() == 3.0 and totals["length"].item() == 6.0
    torch.testing.assert_close(totals["return"], (first + second).sum(0))
    assert totals["metrics"].shape == (0,)
    cleared = env.episode_totals()
    assert cleared["episodes"].item() == 0.0 and cleared["return"].eq(0).all()
    env.reset()
    assert env.store["episode_return"].eq(0).all()


def test_sizes_are_runtime_arguments() -> None:
    """A second env of another size reuses the compiled program: nothing recompiles."""
    small = ToyEnv(num_envs=2, num_agents=3, backend="cpu")
    small.reset()
    small.step()
    program = small._program("step")
    big = ToyEnv(num_envs=5, num_agents=70, backend="cpu")
    big.reset()
    obs, *_ = big.step()
    assert big._program("step") is program
    torch.testing.assert_close(obs, expected_obs(5, 70))


def _barriers(runner) -> int:
    """How many barriers a runner made by sequence() passes (the calls in its generated code)."""
    return sum(ins.argval == "barrier" for ins in dis.get_instructions(runner) if "GLOBAL" in ins.opname)


def test_consecutive_per_env_phases_are_merged() -> None:
    """Two per-env phases run on one thread with no barrier between them; a per-env and a per-agent phase are
    separated by one."""
    assert _barriers(sequence(per_env(_clear), per_env(_end))) == 0
    assert _barriers(sequence(per_env(_clear), per_agent(_write_own))) == 1
    assert _barriers(sequence(per_env(_clear), per_env(_end), per_agent(_write_own), per_env(_end))) == 2


@pytest.mark.parametrize(
    ("agents", "envs", "lanes", "per_block"),
    [(1, 1, 1, 32), (5, 2000, 8, 4), (110, 100, 128, 1), (100, 1000, 64, 1), (1000, 2000, 256, 1),
     (20000, 10, 256, 1)],
)
def test_launch_shape(agents: int, envs: int, lanes: int, per_block: int) -> None:
    """Small envs share 32-thread blocks; many envs of about a hundred agents get half the lanes (the register
    file bounds the resident threads); large envs loop over agents on 256 lanes."""
    shape = launch_shape(agents, envs)
    assert (shape.lanes, shape.envs_per_block) == (lanes, per_block)
    assert shape.grid(envs) * shape.envs_per_block >= envs


@pytest.mark.parametrize(
    ("agents", "envs", "threads_per_agent", "expected"),
    [(110, 100, 4, LaunchShape(512, 1)), (10, 100, 4, LaunchShape(64, 1)), (8, 100, 2, LaunchShape(16, 2)),
     # a block of more than 512 threads is resident only with at most 64 Ki / threads registers each
     (110, 100, 8, LaunchShape(1024, 1, 64)), (1000, 2, 8, LaunchShape(1024, 1, 64))],
)
def test_launch_shape_with_several_threads_per_agent(agents: int, envs: int, threads_per_agent: int,
                                                     expected: LaunchShape) -> None:
    assert launch_shape(agents, envs, threads_per_agent=threads_per_agent) == expected


def test_register_cap_compiles_kernels_of_its_own(run_with_cuda_target: Callable[[str], None]) -> None:
    """A launch shape's register cap reaches the CUDA compiler; each cap gets its own kernels, the default none."""
    run_with_cuda_target("""
from warpdrive import kernel_function
from warpdrive.core.compile import LaunchShape, Program, per_agent, sequence
from warpdrive.core.targets import kernel_target
@kernel_function
def write(env, agent, p, s):
    s.value[env, agent] = 1.0
program = Program([sequence(per_agent(write))], kernel_target("cuda"), "fingerprint", "cap_test")
uncapped = program.kernels(LaunchShape(32, 1))
capped = program.kernels(LaunchShape(32, 1, max_registers=64))
assert capped[0] is not uncapped[0]
assert capped[0].targetoptions.get("max_registers") == 64, capped[0].targetoptions
assert "max_registers" not in uncapped[0].targetoptions
assert program.kernels(LaunchShape(64, 2, max_registers=64))[0] is capped[0]  # one compilation per cap
""")
    assert launch_shape(1000, 2000, max_registers=64) == LaunchShape(256, 1, 64)


@pytest.mark.parametrize("shape", [LaunchShape(32, 1, max_registers=8), LaunchShape(32, 1, max_registers=256),
                                   LaunchShape(0, 1), "32x1"])
def test_env_rejects_a_bad_launch_shape(shape: object) -> None:
    with pytest.raises(ValueError, match=r"launch must be a LaunchShape with .* got"):
        make("cartpole", num_envs=2, device="cpu", launch=shape)


def test_phase_rejects_non_functions() -> None:
    with pytest.raises(ValueError, match="at least one function"):
        per_agent()
    with pytest.raises(TypeError, match="must be a kernel_function"):
        per_env(3)


class _EnvWithAnEmptyConstant(ToyEnv):
    def state_arrays(self) -> list[ArraySpec]:
        return [*super().state_arrays(), ArraySpec("table", "global", torch.float32, "constant", (3,))]


def test_a_constant_without_values_is_an_error_at_construction() -> None:
    with pytest.raises(ValueError, match=r"constant array\(s\) \['table'\] have no values: return them from "
                                         r"start_state\(\)"):
        _EnvWithAnEmptyConstant(num_envs=2, backend="cpu")


class ToyEnvWithExtraParam(ToyEnv):
    """ToyEnv whose kernel params gain a field when ``num_cells`` is large: other argument types, same code."""

    def kernel_params(self) -> dict:
        extra = {"many_cells": True} if self.config.num_cells > 20 else {}
        return {**super().kernel_params(), **extra}


def test_each_argument_typing_gets_a_program_name_of_its_own() -> None:
    # Numba's disk cache keeps one unlocked index per name: two processes saving programs of different argument
    # types under one name at once could each load the other's code, so a name must stand for one typing
    few = ToyEnvWithExtraParam(num_envs=2, backend="cpu", num_cells=11)
    also_few = ToyEnvWithExtraParam(num_envs=3, backend="cpu", num_cells=12)
    many = ToyEnvWithExtraParam(num_envs=2, backend="cpu", num_cells=21)
    assert few._program("step").name == also_few._program("step").name
    assert few._program("step").name != many._program("step").name
    assert few._program("step") is not many._program("step")
