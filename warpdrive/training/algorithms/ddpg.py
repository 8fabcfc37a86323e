"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016, arXiv:1509.02971), after CleanRL's
``ddpg_continuous_action.py``; for Box action spaces only.

Rollouts act with ``mu(obs)`` plus Gaussian noise (uniformly random actions until ``learning_starts``
transitions are stored); every iteration appends the rollout's transitions to a replay ring buffer on the
device and takes ``gradient_steps`` steps: the critic regresses ``r + gamma * (1 - terminated) *
Q'(s', mu'(s'))`` (target networks ``Q'``, ``mu'``; truncated transitions bootstrap from their final
observation), the actor ascends ``Q(s, mu(s))`` every ``policy_frequency`` steps, and the targets follow by
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
from warpdrive.training.models import DeterministicActorCritic
from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = ["DDPG", "DDPGConfig"]


@dataclass
class DDPGConfig:
    """DDPG's hyperparameters (CleanRL's defaults, except ``learning_starts``)."""

    gamma: float = bounded(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    tau: float = bounded(0.005, gt=0.0, le=1.0)
    """Polyak averaging rate of the target networks."""
    buffer_size: int = bounded(1_000_000, ge=1)
    """Replay capacity in transitions (one per agent per env-step)."""
    batch_size: int = bounded(256, ge=1)
    """Transitions per gradient step."""
    learning_starts: int = bounded(10_000, ge=0)
    """Transitions stored before learning begins; until then actions are uniformly random."""
    exploration_noise: float = bounded(0.1, ge=0.0, le=10.0)
    """Std of the Gaussian action noise, as a fraction of half the action range."""
    policy_frequency: int = bounded(2, ge=1)
    """Update the actor and the targets every this many critic steps."""
    gradient_steps: int | None = bounded(None, ge=1)
    """Gradient steps per iteration; ``null``: one per rollout step (``rollout_length``)."""
    max_grad_norm: float | None = bounded(None, gt=0.0)
    """Clip each network's gradient norm to this; ``null``: no clipping."""


@register_algorithm
class DDPG(DeterministicActorLearner):
    """DDPG for one policy (Box actions); agents of the policy share the networks and the replay."""

    name = "ddpg"
    Config = DDPGConfig
    default_model = "mlp_ddpg"
    # Built from a registered model, which offers DeterministicActorCritic's methods (custom ones need not subclass it).
    model: DeterministicActorCritic
    acting_model: DeterministicActorCritic
    target: DeterministicActorCritic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.action_space, gym.spaces.Box):
            raise TypeError(f"DDPG needs a Box action space, got {self.action_space}")
        c: DDPGConfig = self.config
        self.setup_actor_critic(c.exploration_noise)
        self.replay = ReplayBuffer(c.buffer_size, self.obs_size, self.action_size, self.device)

    def store_rollout(self, storage: RolloutStorage) -> None:
        terminated = storage.terminated.unsqueeze(-1).expand_as(storage.rewards)
        self.replay.add(storage.obs.flatten(0, 2), storage.actions.flatten(0, 2), storage.rewards.flatten(),
                        storage.next_obs.flatten(0, 2), terminated.flatten())

    def gradient_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c: DDPGConfig = self.config
        with torch.no_grad(), self.autocast():
            next_q = self.target.q(b["next_obs"], self.target.action(b["next_obs"]))
            target_q = b["rewards"] + c.gamma * (1.0 - b["terminated"]) * next_q
        with self.autocast():
            q = self.model.q(b["obs"], b["actions"])
        step = {"loss_value": ((q - target_q) ** 2).mean(), "q_values": q.detach().mean()}
        step["critic_grad_norm"] = self.optimizer_step(self.critic_optimizer, step["loss_value"],
                                                       self.model.critic.parameters(), c.max_grad_norm)
        if self.gradient_steps % c.policy_frequency == 0:
            with self.autocast():
                step["loss_policy"] = -self.model.q(b["obs"], self.model.action(b["obs"])).mean()
            step["actor_grad_norm"] = self.optimizer_step(self.actor_optimizer, step["loss_policy"],
                                                          self.model.actor.parameters(), c.max_grad_norm)
            soft_update(self.target, self.model, c.tau)
        return step

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "target": self.target}
