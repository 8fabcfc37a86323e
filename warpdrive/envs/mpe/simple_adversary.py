"""simple_adversary: good agents hide which landmark is the goal from adversaries (mpe2's ``simple_adversary_v3``).

Semantics in full: docs/envs/mpe.md.

Agents ``0 .. A-1`` are adversaries (mpe2 has one), ``A .. A+G-1`` good agents; all have size 0.15, accel 5,
no speed limit, and nothing collides. ``L`` landmarks (``G`` by default, as in mpe2; size 0.08); one of them,
drawn uniformly per episode, is the goal, which only good agents observe. Physics, actions and starts:
:mod:`warpdrive.envs.mpe.physics`.

Rewards, after the step (mpe2's shaped, distance-based rewards):

- adversary: ``-|p - goal|``;
- good agent (the same for all): ``-min over good agents of |p - goal| + sum over adversaries of |p - goal|``.

Observation (float32), mpe2's order: good agent ``[goal relative to self (2), landmarks relative to self
(2L), other agents relative to self in id order (2(N-1))]``; adversary ``[landmarks (2L), others (2(N-1))]``
followed by 2 zeros, so that every row has size ``2 + 2L + 2(N-1)``. With ``k_nearest = k``: the ``k``
nearest others instead, nearest first, zero padded (mpe2's ``num_agent_neighbors = k``), size
``2 + 2L + 2k``.

Scaling: the full layout is ``O(N)`` per agent and ``O(N^2)`` per env; use ``k_nearest`` for hundreds of
agents (the landmarks are always all observed). The rewards need one pass over the agents per env.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from warpdrive.core.compile import Phase, per_agent, per_env
from warpdrive.core.device import kernel_function
from warpdrive.core.random import randint
from warpdrive.core.spatial import distance
from warpdrive.core.store import ArraySpec
from warpdrive.core.typed import bounded
from warpdrive.envs.mpe.physics import (
    AgentTypes,
    MPEConfig,
    TwoTeamEnv,
    entity_draws,
    others_phase,
    world_phases,
    write_landmarks,
    write_neighbour,
    write_zeros,
)

_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)


@dataclass(frozen=True)
class SimpleAdversaryConfig(MPEConfig):
    """Parameters of simple_adversary (defaults: mpe2's ``simple_adversary_v3``)."""

    num_good: int = bounded(2, ge=1)
    """mpe2's ``N``: good agents."""
    num_adversaries: int = bounded(1, ge=1)
    """Adversaries (mpe2 has 1); their ids come first."""
    num_landmarks: int | None = bounded(None, ge=1)
    """Landmarks; None: as many as good agents (as in mpe2)."""


@kernel_function
def _draw_goal(env, p, s):
    s.goal[env] = randint(p.seed, env, s.episode[env], entity_draws(p), p.num_landmarks)


@kernel_function
def _goal_distance(env, agent, p, s):
    g = s.goal[env]
    return distance(s.x[env, agent], s.y[env, agent], s.lx[env, g], s.ly[env, g])


@kernel_function
def _team_reward(env, p, s):
    """The good agents' shared reward: the nearest good agent's distance against the adversaries'."""
    adversaries = _ZERO
    for j in range(p.num_adversaries):
        adversaries += _goal_distance(env, j, p, s)
    nearest = _INF
    for j in range(p.num_adversaries, p.num_agents):
        nearest = min(nearest, _goal_distance(env, j, p, s))
    s.team_reward[env] = -nearest + adversaries


@kernel_function
def _reward(env, agent, p, s):
    if s.adversary[agent]:
        s.rewards[env, agent] = -_goal_distance(env, agent, p, s)
    else:
        s.rewards[env, agent] = s.team_reward[env]


@kernel_function
def _start(env, agent, p, s):
    """Where the landmarks start in ``agent``'s row: after the goal for good agents."""
    return 0 if s.adversary[agent] else 2


@kernel_function
def _observe_own(env, agent, p, s):
    """Goal (good agents), landmarks, and an adversary's 2 padding zeros at the end of its row."""
    start = _start(env, agent, p, s)
    if start > 0:
        g = s.goal[env]
        s.obs[env, agent, 0] = s.lx[env, g] - s.x[env, agent]
        s.obs[env, agent, 1] = s.ly[env, g] - s.y[env, agent]
    else:
        size = s.obs.shape[2]
        write_zeros(env, agent, size - 2, size, p, s)
    write_landmarks(env, agent, start, p, s)


@kernel_function
def _others_offset(env, agent, p, s):
    """Where the other agents start in ``agent``'s row: after its goal (good agents) and the landmarks."""
    return _start(env, agent, p, s) + p.landmark_values


@kernel_function
def _visit_neighbour(env, agent, slot, other, p, s):
    write_neighbour(env, agent, slot, other, _others_offset(env, agent, p, s), p, s)


_REWARDS = (per_env(_team_reward), per_agent(_reward))


@cache
def _phases(k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
    observe = (per_agent(_observe_own), others_phase(_others_offset)) if k is None else (per_agent(_observe_own),)
    return world_phases(observe, _REWARDS, _visit_neighbour, k, one_cell=one_cell, episode_start=(_draw_goal,))


class SimpleAdversary(TwoTeamEnv):
    """mpe2's simple_adversary as a batch of ``num_envs`` replicas; see the module docstring.

    Extra arrays: ``goal`` [E] int32, the goal landmark of the episode; ``team_reward`` [E] float32, this
    step's reward of the good agents.
    """

    name = "simple_adversary"
    Config = SimpleAdversaryConfig
    agents_collide = False

    @classmethod
    def num_landmarks_of(cls, config: SimpleAdversaryConfig) -> int:
        return config.num_good if config.num_landmarks is None else config.num_landmarks

    def agent_types(self) -> AgentTypes:
        a, n = self.config.num_adversaries, self.num_agents
        return AgentTypes(size=[0.15] * n, accel=[None] * n, max_speed=[None] * n,
                          adversary=[i < a for i in range(n)], landmark_size=[0.08] * self.num_landmarks)

    def phases_for(self, k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
        return _phases(k, one_cell)

    def observation_size(self) -> int:
        k = self.config.k_nearest
        return 2 + 2 * self.num_landmarks + 2 * (self.num_agents - 1 if k is None else k)

    def extra_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("goal", "env", torch.int32), ArraySpec("team_reward", "env", torch.float32, "scratch")]

    def extra_params(self) -> dict[str, Any]:
        return {"landmark_values": 2 * self.num_landmarks}
