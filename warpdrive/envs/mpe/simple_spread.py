"""simple_spread: cooperative agents cover landmarks and avoid each other (mpe2's ``simple_spread_v3``).

Semantics in full: docs/envs/mpe.md.

``N`` agents (size 0.15, accel 5, no speed limit) collide with each other; ``L`` landmarks (``N`` by default,
as in mpe2) do not collide. Physics, actions and starts: :mod:`warpdrive.envs.mpe.physics`.

Reward, after the step: ``global (1 - local_ratio) + local local_ratio``, where ``global = -sum over landmarks
of the distance to the nearest agent`` (the same for all) and ``local = -1`` per other agent the agent collides
with (distance below 0.3).

Observation (float32), mpe2's order: ``[vel (2), pos (2), landmark positions relative to self (2L), other
agents' relative positions in id order (2(N-1)), their communication (2(N-1), always 0: the agents are
silent)]``, size ``4 + 2L + 4(N-1)``. With ``k_nearest = k``: the ``k`` nearest others instead, nearest first,
zero padded, then ``2k`` zeros (mpe2's ``num_agent_neighbors = k``), size ``4 + 2L + 4k``.

Scaling: the full layout is ``O(N)`` per agent and ``O(N^2)`` per env; use ``k_nearest`` for hundreds of
agents. The landmarks are always all observed (``2L`` values; with the default ``L = N`` that is ``O(N)``
per agent too: pass a smaller ``num_landmarks``). Contact forces and collision counts visit every agent, and
the global reward every (landmark, agent) pair, once per env: ``O(N)`` work per agent, no memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from warpdrive.core.compile import Phase, per_agent, per_env, per_index
from warpdrive.core.device import kernel_function
from warpdrive.core.spatial import distance
from warpdrive.core.store import ArraySpec
from warpdrive.core.typed import bounded
from warpdrive.envs.mpe.physics import (
    AgentTypes,
    MPEConfig,
    MPEEnv,
    colliding,
    others_phase,
    world_phases,
    write_neighbour,
    write_own,
    write_zeros,
)

_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)


@dataclass(frozen=True)
class SimpleSpreadConfig(MPEConfig):
    """Parameters of simple_spread (defaults: mpe2's ``simple_spread_v3``)."""

    num_agents: int = bounded(3, ge=1)
    """mpe2's ``N``."""
    num_landmarks: int | None = bounded(None, ge=1)
    """Landmarks; None: as many as agents (mpe2 always has N)."""
    local_ratio: float = bounded(0.5, ge=0.0, le=1.0)
    """Weight of the agent's own collision reward against the shared landmark reward."""


@kernel_function
def _nearest_agent(env, landmark, p, s):
    """Distance from a landmark to its nearest agent (one thread per landmark)."""
    best = _INF
    x = s.lx[env, landmark]
    y = s.ly[env, landmark]
    for j in range(p.num_agents):
        best = min(best, distance(s.x[env, j], s.y[env, j], x, y))
    s.landmark_gap[env, landmark] = best


@kernel_function
def _landmark_count(p, s):
    return p.num_landmarks


@kernel_function
def _global_reward(env, p, s):
    total = _ZERO
    for j in range(p.num_landmarks):
        total -= s.landmark_gap[env, j]
    s.global_reward[env] = total


@kernel_function
def _reward(env, agent, p, s):
    local = _ZERO
    for j in range(p.num_agents):
        if j != agent and colliding(env, j, agent, p, s):
            local -= np.float32(1.0)
    s.rewards[env, agent] = s.global_reward[env] * p.global_ratio + local * p.local_ratio


@kernel_function
def _others_offset(env, agent, p, s):
    return p.others_offset


@kernel_function
def _observe_all(env, agent, p, s):
    """Own state and landmarks, and the zeros of the communication; the others: :func:`others_phase`."""
    write_own(env, agent, p, s)
    write_zeros(env, agent, p.comm_offset, s.obs.shape[2], p, s)


@kernel_function
def _visit_neighbour(env, agent, slot, other, p, s):
    write_neighbour(env, agent, slot, other, _others_offset(env, agent, p, s), p, s)
    start = p.comm_offset + 2 * slot
    write_zeros(env, agent, start, start + 2, p, s)


_REWARDS = (per_index(_nearest_agent, _landmark_count), per_env(_global_reward), per_agent(_reward))


@cache
def _phases(k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
    observe = (per_agent(_observe_all), others_phase(_others_offset)) if k is None else (per_agent(write_own),)
    return world_phases(observe, _REWARDS, _visit_neighbour, k, one_cell=one_cell)


class SimpleSpread(MPEEnv):
    """mpe2's simple_spread as a batch of ``num_envs`` replicas; see the module docstring.

    Extra arrays: ``landmark_gap`` [E, L] float32 (each landmark's distance to its nearest agent) and
    ``global_reward`` [E] float32, this step's shared reward.
    """

    name = "simple_spread"
    Config = SimpleSpreadConfig

    @classmethod
    def num_agents_of(cls, config: SimpleSpreadConfig) -> int:
        return config.num_agents

    @classmethod
    def config_for_agents(cls, num_agents: int) -> dict[str, Any] | None:
        return {"num_agents": num_agents}

    @classmethod
    def num_landmarks_of(cls, config: SimpleSpreadConfig) -> int:
        return config.num_agents if config.num_landmarks is None else config.num_landmarks

    def agent_types(self) -> AgentTypes:
        n = self.num_agents
        return AgentTypes(size=[0.15] * n, accel=[None] * n, max_speed=[None] * n, adversary=[False] * n,
                          landmark_size=[0.05] * self.num_landmarks)

    def phases_for(self, k: int | None, one_cell: bool) -> tuple[tuple[Phase, ...], tuple[Phase, ...]]:
        return _phases(k, one_cell)

    def _others(self) -> int:
        k = self.config.k_nearest
        return self.num_agents - 1 if k is None else k

    def observation_size(self) -> int:
        return 4 + 2 * self.num_landmarks + 4 * self._others()

    def extra_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("landmark_gap", "env", torch.float32, "scratch", (self.num_landmarks,)),
                ArraySpec("global_reward", "env", torch.float32, "scratch")]

    def extra_params(self) -> dict[str, Any]:
        others = 4 + 2 * self.num_landmarks
        return {"others_offset": others, "comm_offset": others + 2 * self._others(),
                "global_ratio": 1.0 - self.config.local_ratio}
