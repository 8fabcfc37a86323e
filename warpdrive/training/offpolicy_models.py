"""What MADDPG and MASAC share: the centralised Q critic over one policy's agents, and its joint replay.

A policy's ``A`` agents share their actor (parameter sharing) and their critic. The critic of agent ``i``
sees every agent's observation and action in its env, laid end to end ([A * D] and [A * H]), and the
one-hot of ``i`` [A], so that shared weights still tell the agents apart (Lowe et al. 2017, arXiv:1706.02275,
with parameter sharing). Its input therefore grows as ``A * (D + H)`` per agent, ``A^2 (D + H)`` per env:
meant for groups of up to a few dozen agents.

Transitions are stored per env-step (a :class:`~warpdrive.training.storage.ReplayBuffer` with
``num_agents = A``: rows of [A, D], [A, H], [A] rewards, one ``terminated`` flag), so that a sampled row holds
the joint observation and action every agent's critic needs.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from warpdrive.training.models import ModelSpec, mlp
from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = ["CentralisedQ", "box_bounds", "store_joint_rollout", "with_own_actions"]


def box_bounds(action_space: gym.spaces.Space, algorithm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, bias)`` [H] mapping ``[-1, 1]`` onto the Box's bounds: ``action = scale * u + bias``.

    Raises:
        TypeError: for a space other than a Box; ValueError: for infinite bounds (a tanh-squashed actor
        needs finite ones).
    """
    if not isinstance(action_space, gym.spaces.Box):
        raise TypeError(f"{algorithm} needs a Box action space, got {action_space}")
    low = np.asarray(action_space.low, np.float32).reshape(-1)
    high = np.asarray(action_space.high, np.float32).reshape(-1)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(f"{algorithm} needs finite action bounds, got low={low}, high={high}")
    return torch.tensor((high - low) / 2.0), torch.tensor((high + low) / 2.0)


class CentralisedQ(nn.Module):
    """``Q_i(o_1..o_A, a_1..a_A, onehot(i))`` for every agent ``i`` of a policy, by one MLP.

    Args:
        num_agents: A, the policy's agents.
        obs_size: D, one agent's observation size.
        action_size: H, one agent's action size.
        spec: hidden layer widths and activation (the policy's ``model`` section).
    """

    identity: torch.Tensor

    def __init__(self, num_agents: int, obs_size: int, action_size: int, spec: ModelSpec) -> None:
        super().__init__()
        self.num_agents, self.obs_size, self.action_size = num_agents, obs_size, action_size
        self.input_size = num_agents * (obs_size + action_size) + num_agents
        self.net = mlp(self.input_size, spec.hidden_sizes, spec.activation, 1, out_gain=1.0)
        self.register_buffer("identity", torch.eye(num_agents), persistent=False)

    def joint_input(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Every agent's critic input, [..., A, A * D + A * H + A]: the joint observation, the joint action,
        the agent's one-hot.

        Args:
            obs: [..., A, D] the agents' observations.
            actions: [..., A, H], one joint action for every agent's critic; or [..., A, A, H], row ``i``
                being the joint action agent ``i``'s critic is asked about (see :func:`with_own_actions`).
        """
        a = self.num_agents
        batch = obs.shape[:-2]
        joint_obs = obs.flatten(-2).unsqueeze(-2).expand(*batch, a, a * self.obs_size)
        if actions.dim() == obs.dim():
            joint_actions = actions.flatten(-2).unsqueeze(-2).expand(*batch, a, a * self.action_size)
        else:
            joint_actions = actions.flatten(-2)
        identity = self.identity.to(obs.dtype).expand(*batch, a, a)
        return torch.cat([joint_obs, joint_actions.to(obs.dtype), identity], dim=-1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q [..., A] of each agent (float32); arguments as :meth:`joint_input`."""
        return self.net(self.joint_input(obs, actions)).squeeze(-1).float()


def with_own_actions(actions: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """For each agent ``i``, the joint action with slot ``i`` replaced by ``own[..., i]``: [..., A, A, H].

    The actor's gradient for agent ``i`` flows through its own action only; the others keep what they did
    (``actions``, from the replay), as in MADDPG's policy gradient.

    Args:
        actions: [..., A, H] the joint action taken.
        own: [..., A, H] each agent's new action.
    """
    a = actions.shape[-2]
    eye = torch.eye(a, dtype=torch.bool, device=actions.device).unsqueeze(-1)  # [A (whose Q), A (slot), 1]
    return torch.where(eye, own.unsqueeze(-3), actions.unsqueeze(-3))


def store_joint_rollout(replay: ReplayBuffer, storage: RolloutStorage) -> None:
    """Append the rollout's ``T * E`` env-steps to ``replay`` (built with ``num_agents = A_p``), one row each:
    ``obs``/``next_obs`` [T*E, A_p, D], ``actions`` [T*E, A_p, H], ``rewards`` [T*E, A_p], ``terminated``
    [T*E]. Truncated steps keep ``terminated = 0`` and their final observation as ``next_obs`` (bootstrap)."""
    replay.add(storage.obs.flatten(0, 1), storage.actions.flatten(0, 1), storage.rewards.flatten(0, 1),
               storage.next_obs.flatten(0, 1), storage.terminated.flatten())
