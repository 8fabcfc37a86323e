"""Proximal Policy Optimisation (Schulman et al. 2017, arXiv:1707.06347), after CleanRL's ``ppo.py``.

Per iteration: GAE advantages over the rollout, then ``update_epochs`` passes over the flattened batch in
shuffled minibatches, each minimising the clipped surrogate, the (optionally clipped) value loss and an
entropy bonus, with gradient-norm clipping; an optional target KL stops the epochs early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch

from warpdrive.core.typed import ConfigError, bounded
from warpdrive.training.algorithms.base import ActorCriticAlgorithm, register_algorithm
from warpdrive.training.recurrent import batch_outputs
from warpdrive.training.returns import gae
from warpdrive.training.schedules import Schedule
from warpdrive.training.storage import RolloutStorage

__all__ = ["PPO", "PPOConfig", "clipped_surrogate", "explained_variance", "ppo_loss"]


@dataclass
class PPOConfig:
    """PPO's hyperparameters (CleanRL's defaults)."""

    gamma: float = bounded(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    gae_lambda: float = bounded(0.95, ge=0.0, le=1.0)
    """GAE's lambda: 0 is one-step TD, 1 is Monte Carlo."""
    update_epochs: int = bounded(4, ge=1)
    """Passes over the rollout per iteration."""
    num_minibatches: int = bounded(4, ge=1)
    """Minibatches per pass; the batch is T * E * agents samples."""
    clip_coef: float = bounded(0.2, gt=0.0)
    """Clip range of the probability ratio."""
    clip_vloss: bool = True
    """Clip the value update around the rollout's values, like the policy's."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    ent_coef: float = bounded(0.01, ge=0.0, le=100.0)
    """Weight of the entropy bonus."""
    ent_coef_schedule: Schedule = field(default_factory=Schedule)
    vf_coef: float = bounded(0.5, ge=0.0, le=100.0)
    """Weight of the value loss."""
    max_grad_norm: float | None = bounded(0.5, gt=0.0)
    """Clip the global gradient norm to this; ``null``: no clipping."""
    target_kl: float | None = bounded(None, gt=0.0)
    """Stop the epochs of an iteration once the approximate KL exceeds this; ``null``: never."""


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """PPO's policy loss: ``mean(max(-A * r, -A * clip(r, 1 - c, 1 + c)))`` over [B] samples.

    The max (of negated objectives) takes the pessimistic bound: once the ratio has moved past the clip
    range in the direction the advantage favours, the gradient is zero.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    return torch.max(unclipped, clipped).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Var[target - predicted] / Var[target]``: 1 is perfect, 0 no better than a constant
    (NaN when the target does not vary)."""
    var = target.var()
    return torch.where(var > 0, 1.0 - (target - predicted).var() / var, torch.full_like(var, float("nan")))


def ppo_loss(model: Any, mb: dict[str, torch.Tensor], config: PPOConfig,
             ent_coef: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """Losses of one minibatch; ``loss_*`` entries are summed and minimised, the rest are logged.

    Args:
        model: an :class:`~warpdrive.training.models.ActorCritic`.
        mb: [B, ...] tensors: ``obs``, ``critic_obs``, ``actions``, ``logprobs`` (at rollout time),
            ``advantages``, ``returns``, ``values`` (at rollout time), and ``action_mask`` where the env
            masks actions; for a recurrent model, [T, n, ...] whole sequences with ``initial_state`` and
            ``starts`` (a :class:`~warpdrive.training.recurrent.SequenceBatch`'s).
    """
    dist, newvalue = batch_outputs(model, mb)
    newlogprob = dist.log_prob(mb["actions"])
    entropy = dist.entropy().mean()
    logratio = newlogprob - mb["logprobs"]
    ratio = logratio.exp()
    with torch.no_grad():
        # http://joschu.net/blog/kl-approx.html
        approx_kl = ((ratio - 1.0) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > config.clip_coef).float().mean()

    advantages = mb["advantages"]
    if config.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = clipped_surrogate(ratio, advantages, config.clip_coef)

    if config.clip_vloss:
        v_unclipped = (newvalue - mb["returns"]) ** 2
        v_clipped = mb["values"] + torch.clamp(newvalue - mb["values"], -config.clip_coef, config.clip_coef)
        value_loss = 0.5 * torch.max(v_unclipped, (v_clipped - mb["returns"]) ** 2).mean()
    else:
        value_loss = 0.5 * ((newvalue - mb["returns"]) ** 2).mean()

    return {
        "loss_policy": policy_loss,
        "loss_value": config.vf_coef * value_loss,
        "loss_entropy": -ent_coef * entropy,
        "entropy": entropy.detach(),
        "approx_kl": approx_kl,
        "clipfrac": clipfrac,
    }


@register_algorithm
class PPO(ActorCriticAlgorithm):
    """PPO for one policy; discrete (categorical per head) and continuous (Gaussian) actions."""

    name = "ppo"
    Config = PPOConfig
    on_policy = True
    discrete = True
    continuous = True
    global_critic = True
    centralised = "optional"
    recurrent = True

    @classmethod
    def check_batch(cls, config: PPOConfig, samples: int, path: str) -> None:
        if config.num_minibatches > samples:
            raise ConfigError(f"{path}.num_minibatches",
                              f"{config.num_minibatches} minibatches do not fit a batch of {samples} samples "
                              "(with a recurrent model, a sample is one env and agent's whole rollout)")

    @property
    def graph_safe(self) -> bool:
        return self.config.target_kl is None  # stopping early on the KL is a host decision

    def learn(self, storage: RolloutStorage) -> dict[str, torch.Tensor | float]:
        c: PPOConfig = self.config

        # advantages over the whole rollout [T, E, A]
        with torch.no_grad():
            advantages, returns = gae(storage.rewards, storage.values, self.next_values(storage), storage.dones,
                                      c.gamma, c.gae_lambda)

        # samples [T * E * A]; for a recurrent model whole sequences [T, E * A], minibatches of sequences
        b = self.batch(storage, advantages=advantages, returns=returns)
        minibatch_size = max(b.size // c.num_minibatches, 1)

        stats: list[dict[str, torch.Tensor]] = []
        epochs = 0
        for _ in range(c.update_epochs):
            b_inds = torch.randperm(b.size, device=self.device, generator=self.generator)
            for start in range(0, minibatch_size * c.num_minibatches, minibatch_size):
                mb = b.samples(b_inds[start:start + minibatch_size])
                with self.autocast():
                    losses = ppo_loss(self.model, mb, c, self.ent_coef)
                loss = cast(torch.Tensor, sum(v for k, v in losses.items() if k.startswith("loss_")))
                losses["grad_norm"] = self.clip_and_step(loss, c.max_grad_norm)
                stats.append({k: v.detach() for k, v in losses.items()})
            epochs += 1
            if c.target_kl is not None:
                kl = stats[-1]["approx_kl"]
                if self.ranks is not None:  # every rank must stop at the same epoch: the KL of the whole batch
                    kl = self.ranks.mean(kl)
                if float(kl) > c.target_kl:
                    break

        metrics: dict[str, torch.Tensor | float] = {
            k: torch.stack([s[k] for s in stats]).float().mean() for k in stats[0]
        }
        metrics["explained_variance"] = explained_variance(b["values"], b["returns"])
        metrics["epochs"] = float(epochs)
        return metrics
