"""Multi-Agent DDPG (Lowe et al. 2017, arXiv:1706.02275) for Box action spaces: decentralised deterministic
actors, one centralised critic per agent.

The policy's ``A`` agents share one actor ``mu(o_i)`` and one critic; the critic of agent ``i`` is
``Q_i(o_1..o_A, a_1..a_A, onehot(i))`` (:class:`~warpdrive.training.offpolicy_models.CentralisedQ`): it sees
every agent of the policy in that env, which makes the others' learning part of a stationary problem.
Rollouts act with ``mu(o_i)`` plus Gaussian noise (uniform actions until ``learning_starts`` env-steps are
stored); every iteration appends the rollout's env-steps to a replay buffer on the device, one row of ``A``
agents each, and takes ``gradient_steps`` steps on sampled rows:

- critic: ``Q_i(x, a)`` regresses ``r_i + gamma * (1 - terminated) * Q'_i(x', mu'(o'_1)..mu'(o'_A))``
  (target networks ``Q'``, ``mu'``; truncated steps bootstrap from their final observation);
- actor, every ``policy_frequency`` critic steps: ascend ``Q_i(x, a_1..mu(o_i)..a_A)``, agent ``i``'s action
  replaced by the actor's and the others' as stored (the paper's policy gradient); then the targets follow by
  Polyak averaging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from warpdrive.core.typed import bounded
from warpdrive.training.algorithms.base import register_algorithm
from warpdrive.training.algorithms.replay import DeterministicActorLearner, soft_update
from warpdrive.training.models import ModelSpec, mlp
from warpdrive.training.offpolicy_models import CentralisedQ, box_bounds, store_joint_rollout, with_own_actions
from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = ["MADDPG", "MADDPGConfig", "MADDPGNetworks"]


@dataclass
class MADDPGConfig:
    """MADDPG's hyperparameters (the paper's MPE settings where they apply: gamma 0.95, tau 0.01, batches of
    1024, gradient norms clipped to 0.5)."""

    gamma: float = bounded(0.95, ge=0.0, le=1.0)
    """Discount factor."""
    tau: float = bounded(0.01, gt=0.0, le=1.0)
    """Polyak averaging rate of the target networks."""
    buffer_size: int = bounded(1_000_000, ge=1)
    """Replay capacity in env-steps (one row holds every agent of the policy)."""
    batch_size: int = bounded(1024, ge=1)
    """Env-steps (rows of ``A`` agents) per gradient step."""
    learning_starts: int = bounded(25_600, ge=0)
    """Env-steps stored before learning begins (the paper: a batch of 25-step episodes); until then actions
    are uniformly random."""
    exploration_noise: float = bounded(0.1, ge=0.0, le=10.0)
    """Std of the Gaussian action noise, as a fraction of half the action range."""
    policy_frequency: int = bounded(1, ge=1)
    """Update the actor and the targets every this many critic steps (the paper: every step)."""
    gradient_steps: int | None = bounded(None, ge=1)
    """Gradient steps per iteration; ``null``: one per rollout step (``rollout_length``)."""
    max_grad_norm: float | None = bounded(0.5, gt=0.0)
    """Clip each network's gradient norm to this; ``null``: no clipping."""


class MADDPGNetworks(nn.Module):
    """The actor ``mu(o)`` shared by a policy's agents, squashed into the Box bounds, and their centralised
    critic.

    Args:
        num_agents: A, the policy's agents.
        obs_size: D.
        action_space: one agent's Box action space (finite bounds).
        spec: the policy's architecture (hidden sizes and activation of the actor and of the critic).
    """

    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(self, num_agents: int, obs_size: int, action_space: gym.spaces.Space, spec: ModelSpec) -> None:
        super().__init__()
        scale, bias = box_bounds(action_space, "maddpg")
        self.register_buffer("action_scale", scale)
        self.register_buffer("action_bias", bias)
        size = scale.numel()
        self.actor = mlp(obs_size, spec.hidden_sizes, spec.activation, size, out_gain=0.01)
        self.critic = CentralisedQ(num_agents, obs_size, size, spec)

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions [..., H] inside the Box bounds from observations [..., D]."""
        return torch.tanh(self.actor(obs).float()) * self.action_scale + self.action_bias


@register_algorithm
class MADDPG(DeterministicActorLearner):
    """MADDPG for one policy (Box actions): its agents share the actor, the centralised critic and the replay.

    ``global_critic`` is False: the critic is centralised by construction over the policy's agents (their
    observations and actions); ``model.critic_input: global`` (the env's global state) is not used.
    """

    name = "maddpg"
    Config = MADDPGConfig
    centralised = "joint"
    model: MADDPGNetworks
    acting_model: MADDPGNetworks
    target: MADDPGNetworks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c: MADDPGConfig = self.config
        self.own_networks(MADDPGNetworks(self.num_agents, self.obs_size, self.action_space, self.spec.model),
                          "a shared actor, a centralised critic")
        self.setup_actor_critic(c.exploration_noise)
        self.replay = ReplayBuffer(c.buffer_size, self.obs_size, self.action_size, self.device,
                                   num_agents=self.num_agents)

    def store_rollout(self, storage: RolloutStorage) -> None:
        store_joint_rollout(self.replay, storage)

    def critic_targets(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """``r_i + gamma (1 - terminated) Q'_i(x', mu'(o'))`` [B, A] for a batch of rows ``b`` (``obs``,
        ``next_obs`` [B, A, D], ``actions`` [B, A, H], ``rewards`` [B, A], ``terminated`` [B])."""
        c: MADDPGConfig = self.config
        with torch.no_grad(), self.autocast():
            next_q = self.target.critic(b["next_obs"], self.target.action(b["next_obs"]))
        return b["rewards"] + c.gamma * (1.0 - b["terminated"]).unsqueeze(-1) * next_q

    def gradient_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c: MADDPGConfig = self.config
        target_q = self.critic_targets(b)
        with self.autocast():
            q = self.model.critic(b["obs"], b["actions"])
        step = {"loss_value": ((q - target_q) ** 2).mean(), "q_values": q.detach().mean()}
        step["critic_grad_norm"] = self.optimizer_step(self.critic_optimizer, step["loss_value"],
                                                       self.model.critic.parameters(), c.max_grad_norm)
        if self.gradient_steps % c.policy_frequency == 0:
            with self.autocast():
                own = self.model.action(b["obs"])
                step["loss_policy"] = -self.model.critic(b["obs"], with_own_actions(b["actions"], own)).mean()
            step["actor_grad_norm"] = self.optimizer_step(self.actor_optimizer, step["loss_policy"],
                                                          self.model.actor.parameters(), c.max_grad_norm)
            soft_update(self.target, self.model, c.tau)
        return step

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "target": self.target}
