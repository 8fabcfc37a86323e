"""simple_tag: slower adversaries chase faster good agents around obstacles (mpe2's ``simple_tag_v3``).

Semantics in full: docs/envs/mpe.md.

Agents ``0 .. A-1`` are adversaries (size 0.075, accel 3, max_speed 1), ``A .. A+G-1`` good agents (size 0.05,
accel 4, max_speed 1.3); ``L`` obstacles (size 0.2) collide but do not move. Physics, actions and starts:
:mod:`warpdrive.envs.mpe.physics` (obstacles start in ``[-0.9, 0.9)^2``).

Rewards, after the step (mpe2's ``shape = False``, its default, so no distance shaping):

- good agent: ``-10`` per adversary it collides with (distance below the sum of sizes), minus the bounds
  penalty ``sum over x, y of bound(|p|)`` with ``bound(v) = 0`` below 0.9, ``10 (v - 0.9)`` below 1,
  else ``min(exp(2 v - 2), 10)``;
- adversary: ``+10`` for every colliding (good agent, adversary) pair in the world (a team reward).

Observation (float32), mpe2's order: ``[vel (2), pos (2), obstacle positions relative to self (2L), other
agents' relative positions in id order (2(N-1)), good other agents' velocities in id order]``: ``2G`` values
for an adversary, ``2(G-1)`` for a good agent, whose row ends with 2 zeros so that every row has size
``4 + 2L + 2(N-1) + 2G``. With ``k_nearest = k``: ``[vel, pos, obstacles, the k nearest others' relative
positions, their velocities (zeros for adversaries)]``, size ``4 + 2L + 4k``, nearest first, zero padded
(mpe2's ``num_agent_neighbors = k``).

Scaling: the full layout is ``O(N)`` per agent and ``O(N^2)`` per env (memory and writes); use ``k_nearest``
for hundreds of agents. Contact forces and the good agents' collision checks still visit every agent and
obstacle (``O(N)`` work per agent, no memory), and the adversaries' team reward is summed with one atomic add
per good agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from warpdrive.core.compile import Phase, per_agent
from warpdrive.core.device import atomic_add, kernel_function
from warpdrive.core.exactmath import exp32
from warpdrive.core.store import ArraySpec
from warpdrive.core.typed import bounded
from warpdrive.envs.mpe.physics import (
    AgentTypes,
    MPEConfig,
    TwoTeamEnv,
    colliding,
    others_phase,
    world_phases,
    write_neighbour,
    write_own,
    write_zeros,
)

COLLISION_REWARD = 10.0
_ZERO = np.float32(0.0)
_BOUND_START = np.float32(0.9)
_BOUND_LIMIT = np.float32(10.0)


@dataclass(frozen=True)
class SimpleTagConfig(MPEConfig):
    """Parameters of simple_tag (defaults: mpe2's ``simple_tag_v3``)."""

    num_good: int = bounded(1, ge=1)
    """Good agents (prey)."""
    num_adversaries: int = bounded(3, ge=1)
    """Adversaries (predators); their ids come first."""
    num_obstacles: int = bounded(2, ge=0)
    """Obstacles (landmarks that collide)."""


@kernel_function
def _bound(v):
    """mpe2's bounds penalty of one coordinate's absolute value."""
    if v < _BOUND_START:
        return _ZERO
    if v < np.float32(1.0):
        return (v - _BOUND_START) * _BOUND_LIMIT
    return min(exp32(np.float32(2.0) * v - np.float32(2.0)), _BOUND_LIMIT)


@kernel_function
def _clear_pairs(env, p, s):
    s.caught_pairs[env] = 0


@kernel_function
def _good_reward(env, agent, p, s):
    """A good agent's reward; its collisions are added to the env's count of (good, adversary) pairs."""
    if s.adversary[agent]:
        return
    caught = 0
    for a in range(p.num_adversaries):
        if colliding(env, a, agent, p, s):
            caught += 1
    if caught > 0:
        atomic_add(s.caught_pairs, env, np.int32(caught))
    reward = -p.collision_reward * np.float32(caught)
    reward -= _bound(abs(s.x[env, agent]))
    reward -= _bound(abs(s.y[env, agent]))
    s.rewards[env, agent] = reward


@kernel_function
def _adversary_reward(env, agent, p, s):
    if s.adversary[agent]:
        s.rewards[env, agent] = p.collision_reward * np.float32(s.caught_pairs[env])


@kernel_function
def _others_offset(env, agent, p, s):
    return p.others_offset


@kernel_function
def _observe_all(env, agent, p, s):
    """mpe2's full layout: every other agent (:func:`others_phase`), then the good others' velocities (a good
    agent's row ends in 2 zeros)."""
    write_own(env, agent, p, s)
    slot = p.velocities_offset
    for j in range(p.num_adversaries, p.num_agents):
        if j != agent:
            s.obs[env, agent, slot] = s.vx[env, j]
            s.obs[env, agent, slot + 1] = s.vy[env, j]
            slot += 2
    write_zeros(env, agent, slot, s.obs.shape[2], p, s)


@kernel_function
def _visit_neighbour(env, agent, slot, other, p, s):
    write_neighbour(env, agent, slot, other, _others_offset(env, agent, p, s), p, s)
    vx = vy = _ZERO
    if other >= 0 and not s.adversary[other]:
        vx = s.vx[env, other]
        vy = s.vy[env, other]
    s.obs[env, agent, p.velocities_offset + 2 * slot] = vx
    s.obs[env, agent, p.velocities_offset + 2 * slot + 1] = vy


_REWARDS = (per_agent(_good_reward), per_agent(_adversary_reward))


@cache
def _phases(k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
    observe = (per_agent(_observe_all), others_phase(_others_offset)) if k is None else (per_agent(write_own),)
    return world_phases(observe, _REWARDS, _visit_neighbour, k, one_cell=one_cell, step_start=(_clear_pairs,))


class SimpleTag(TwoTeamEnv):
    """mpe2's simple_tag as a batch of ``num_envs`` replicas; see the module docstring.

    Extra array: ``caught_pairs`` [E] int32, this step's colliding (good, adversary) pairs.
    """

    name = "simple_tag"
    Config = SimpleTagConfig
    landmarks_collide = True
    landmark_range = 0.9

    @classmethod
    def num_landmarks_of(cls, config: SimpleTagConfig) -> int:
        return config.num_obstacles

    def agent_types(self) -> AgentTypes:
        a, g = self.config.num_adversaries, self.config.num_good
        return AgentTypes(size=[0.075] * a + [0.05] * g, accel=[3.0] * a + [4.0] * g,
                          max_speed=[1.0] * a + [1.3] * g, adversary=[True] * a + [False] * g,
                          landmark_size=[0.2] * self.config.num_obstacles)

    def phases_for(self, k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
        return _phases(k, one_cell)

    def _offsets(self) -> tuple[int, int, int]:
        """(others' positions, velocities, observation size)."""
        c = self.config
        others = 4 + 2 * c.num_obstacles
        if c.k_nearest is None:
            velocities = others + 2 * (self.num_agents_of(c) - 1)
            return others, velocities, velocities + 2 * c.num_good
        return others, others + 2 * c.k_nearest, others + 4 * c.k_nearest

    def observation_size(self) -> int:
        return self._offsets()[2]

    def extra_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("caught_pairs", "env", torch.int32, "scratch")]

    def extra_params(self) -> dict[str, Any]:
        others, velocities, _ = self._offsets()
        return {"collision_reward": COLLISION_REWARD, "others_offset": others, "velocities_offset": velocities}
