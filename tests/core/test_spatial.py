"""The core's neighbour search (warpdrive/core/spatial.py) used by a minimal particle env: the k nearest of every
agent equal a brute-force search (float32 distances, ties by id), on any grid, with agents left out and agents
outside the grid's square."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive import ArraySpec, Env, kernel_function
from warpdrive.core.compile import Phase, per_agent, per_env
from warpdrive.core.random import uniform
from warpdrive.core.spatial import NeighbourGrid, begin_grid, count_into_cell

K = 4


@kernel_function
def _place(env, agent, p, s):
    # positions in [-1, 5] around the grid's square [0, 4]: on a coarse lattice (many equal distances: ties by id
    # matter) or anywhere (the search then skips most cells beyond the k-th distance)
    u = uniform(p.seed, env, s.episode[env], 2 * agent)
    v = uniform(p.seed, env, s.episode[env], 2 * agent + 1)
    if p.lattice:
        # math.floor, not np.floor: the CUDA target has no floor ufunc
        s.x[env, agent] = np.float32(math.floor(u * np.float32(12.0))) * np.float32(0.5) - np.float32(1.0)
        s.y[env, agent] = np.float32(math.floor(v * np.float32(12.0))) * np.float32(0.5) - np.float32(1.0)
    else:
        s.x[env, agent] = u * np.float32(6.0) - np.float32(1.0)
        s.y[env, agent] = v * np.float32(6.0) - np.float32(1.0)


@kernel_function
def _begin(env, p, s):
    begin_grid(env, p.num_agents - p.num_agents // 3, p, s)


@kernel_function
def _count(env, agent, p, s):
    count_into_cell(env, agent, agent % 3 != 0, p, s)  # every third agent takes no part


@kernel_function
def _write(env, agent, slot, other, p, s):
    s.obs[env, agent, slot] = np.float32(other)


@dataclass(frozen=True)
class PointsConfig:
    num_agents: int = 40
    cells: int = 3
    adaptive: bool = False
    lattice: bool = True
    lanes: int = 1
    episode_length: int = 5

    def validate(self) -> None:
        pass


class Points(Env):
    """Agents that only observe the ids of their K nearest others that take part (-1: none)."""

    name = "points"
    Config = PointsConfig

    def program_phases(self) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
        observe = (per_env(_begin), per_agent(_count), *self.grid().build_phases(),
                   *self.grid().k_nearest_phases(K, _write))
        return observe, (per_agent(_place), *observe)

    def program_variant(self) -> str:
        return f"k{K}_lanes{self.config.lanes}" + ("_one_cell" if self.grid().one_cell else "")

    @classmethod
    def num_agents_of(cls, config: PointsConfig) -> int:
        return config.num_agents

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(1)

    def observation_size(self) -> int:
        return K

    def grid(self) -> NeighbourGrid:
        c = self.config
        return NeighbourGrid(side_length=4.0, cells_per_side=c.cells, adaptive=c.adaptive, agents_per_cell=2.0,
                             search_lanes=c.lanes)

    def threads_per_agent(self) -> int:
        return self.config.lanes

    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("x", "agent", torch.float32), ArraySpec("y", "agent", torch.float32), *self.grid().arrays(K)]

    def kernel_params(self) -> dict[str, Any]:
        return self.grid().params()


def brute_force(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, K] ids of the K nearest others taking part, by (float32 distance, id); -1 where fewer."""
    n = x.size
    taking_part = np.arange(n) % 3 != 0
    out = np.full((n, K), -1)
    for agent in range(n):
        if not taking_part[agent]:
            continue
        dx, dy = x - x[agent], y - y[agent]
        d = np.sqrt(dx * dx + dy * dy).astype(np.float32)
        others = [j for j in range(n) if j != agent and taking_part[j]]
        ranked = sorted(others, key=lambda j: (d[j], j))[:K]
        out[agent, :len(ranked)] = ranked
    return out


@pytest.mark.parametrize(("cells", "adaptive", "lattice", "agents", "lanes"),
                         [(1, False, True, 40, 1), (3, False, True, 40, 1), (7, False, True, 40, 1),
                          (7, True, True, 40, 1), (12, False, False, 300, 1), (12, True, False, 300, 1),
                          # lanes sharing a search: each lane's list is short of candidates and searches further
                          (1, False, True, 40, 4), (1, False, False, 40, 3), (3, False, True, 40, 5),
                          (7, True, True, 40, 2), (12, True, False, 300, 4)])
def test_k_nearest_equal_a_brute_force_search(cells: int, adaptive: bool, lattice: bool, agents: int,
                                              lanes: int) -> None:
    env = Points(num_envs=3, backend="cpu", cells=cells, adaptive=adaptive, lattice=lattice, num_agents=agents,
                 lanes=lanes)
    obs = env.reset(seed=1)
    for e in range(3):
        x, y = env.store["x"][e].numpy(), env.store["y"][e].numpy()
        assert (x < 0).any() and (x > 4).any()  # some agents lie outside the grid's square
        np.testing.assert_array_equal(obs[e].numpy().astype(int), brute_force(x, y))


@pytest.mark.cudasim
def test_the_cuda_compilation_finds_the_same_neighbours(gpu_backend: str) -> None:
    for lattice, lanes in ((True, 1), (False, 3)):
        cpu = Points(num_envs=2, backend="cpu", num_agents=24, cells=4, lattice=lattice, lanes=lanes)
        gpu = Points(num_envs=2, backend=gpu_backend, num_agents=24, cells=4, lattice=lattice, lanes=lanes)
        assert torch.equal(cpu.reset(seed=4), gpu.reset(seed=4).cpu())


class _PointsWithAShortList(Points):
    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("x", "agent", torch.float32), ArraySpec("y", "agent", torch.float32),
                *self.grid().arrays(K - 1)]


class _PointsWithoutTheList(Points):
    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("x", "agent", torch.float32), ArraySpec("y", "agent", torch.float32), *self.grid().arrays()]


def test_a_list_declared_with_another_length_than_the_search_is_refused() -> None:
    """The search writes K entries per agent: a shorter declared list would be written past its end."""
    with pytest.raises(ValueError, match=r"^_PointsWithAShortList: k_nearest indexes array 'nearest' with "
                                         r"trailing shape \(1, 4\), but the env has it declared with trailing "
                                         r"shape \(1, 3\) "):
        _PointsWithAShortList(num_agents=8, backend="cpu")
    with pytest.raises(ValueError, match=r"'nearest' with trailing shape \(1, 4\), but the env has no such array"):
        _PointsWithoutTheList(num_agents=8, backend="cpu")
    Points(num_agents=8, backend="cpu")  # the same length: accepted


@pytest.mark.parametrize("lanes", [0, 33, 2.0])
def test_a_bad_number_of_search_lanes_is_refused(lanes: object) -> None:
    with pytest.raises(ValueError, match=rf"^search_lanes must be an integer in \[1, 32\], got {lanes!r}$"):
        NeighbourGrid(4.0, 1, search_lanes=lanes)  # type: ignore[arg-type]
