"""Advantage Actor-Critic (Mnih et al. 2016, arXiv:1602.01783), synchronous, as in Stable-Baselines3.

Per iteration: n-step bootstrapped returns over the rollout (or GAE when ``gae_lambda < 1``), then one
gradient step on the whole batch: policy gradient weighted by the advantage, value regression, entropy
bonus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch

from warpdrive.core.typed import bounded
from warpdrive.training.algorithms.base import ActorCriticAlgorithm, register_algorithm
from warpdrive.training.algorithms.ppo import explained_variance
from warpdrive.training.recurrent import batch_outputs
from warpdrive.training.returns import discounted_returns, gae
from warpdrive.training.schedules import Schedule
from warpdrive.training.storage import RolloutStorage

__all__ = ["A2C", "A2CConfig"]


@dataclass
class A2CConfig:
    """A2C's hyperparameters."""

    gamma: float = bounded(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    gae_lambda: float = bounded(1.0, ge=0.0, le=1.0)
    """1.0: plain n-step returns (classic A2C); below 1: GAE."""
    norm_adv: bool = False
    """Normalise advantages over the batch."""
    ent_coef: float = bounded(0.01, ge=0.0, le=100.0)
    """Weight of the entropy bonus."""
    ent_coef_schedule: Schedule = field(default_factory=Schedule)
    vf_coef: float = bounded(0.5, ge=0.0, le=100.0)
    """Weight of the value loss."""
    max_grad_norm: float | None = bounded(0.5, gt=0.0)
    """Clip the global gradient norm to this; ``null``: no clipping."""


@register_algorithm
class A2C(ActorCriticAlgorithm):
    """A2C for one policy; discrete and continuous actions."""

    name = "a2c"
    Config = A2CConfig
    on_policy = True
    discrete = True
    continuous = True
    global_critic = True
    centralised = "optional"
    recurrent = True

    def learn(self, storage: RolloutStorage) -> dict[str, torch.Tensor | float]:
        c: A2CConfig = self.config
        with torch.no_grad():
            next_values = self.next_values(storage)
            if c.gae_lambda == 1.0:
                returns = discounted_returns(storage.rewards, next_values, storage.dones, c.gamma)
                advantages = returns - storage.values
            else:
                advantages, returns = gae(storage.rewards, storage.values, next_values, storage.dones,
                                          c.gamma, c.gae_lambda)

        # one step on the whole batch: flattened [T * E * A, ...], or whole sequences [T, E * A, ...] (recurrent)
        b = self.batch(storage, advantages=advantages, returns=returns).samples()
        advantages, returns = b["advantages"], b["returns"]
        if c.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        with self.autocast():
            dist, newvalue = batch_outputs(self.model, b)
            logprob = dist.log_prob(b["actions"])
            entropy = dist.entropy().mean()
        losses: dict[str, torch.Tensor] = {
            "loss_policy": -(advantages * logprob).mean(),
            "loss_value": c.vf_coef * 0.5 * ((newvalue - returns) ** 2).mean(),
            "loss_entropy": -self.ent_coef * entropy,
            "entropy": entropy.detach(),
        }
        loss = cast(torch.Tensor, sum(v for k, v in losses.items() if k.startswith("loss_")))
        losses["grad_norm"] = self.clip_and_step(loss, c.max_grad_norm)

        metrics: dict[str, torch.Tensor | float] = {k: v.detach() for k, v in losses.items()}
        metrics["explained_variance"] = explained_variance(b["values"], returns)
        return metrics
