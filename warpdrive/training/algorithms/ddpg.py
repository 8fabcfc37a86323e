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

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from warpdrive.core.sampling import gaussian
from warpdrive.core.typed import bounded
from warpdrive.training.algorithms.base import Act, Algorithm, register_algorithm
from warpdrive.training.models import DeterministicActorCritic
from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = ["DDPG", "DDPGConfig", "load_replay_learner_state", "noisy_act", "optimizer_step", "replay_learner_state",
           "soft_update"]


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


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target = tau * source + (1 - tau) * target``, parameter by parameter, in place."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)


def noisy_act(mu: torch.Tensor, noise_std: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
              explore_randomly: torch.Tensor, deterministic: bool, explore: bool) -> Act:
    """A deterministic policy's rollout actions from ``mu`` [E, A, H]: ``mu`` itself (``deterministic``), else
    ``mu`` plus Gaussian noise of std ``noise_std`` [H] clipped to ``[low, high]``, or uniform actions while the
    device flag ``explore_randomly`` is set and ``explore`` (warm-up of training rollouts)."""
    if deterministic:
        clipped = torch.maximum(torch.minimum(mu, high), low)
        return Act(mu, clipped)
    noisy = gaussian(mu, noise_std.expand_as(mu), low=low, high=high)
    if not explore:
        return Act(noisy, noisy)
    uniform = low + (high - low) * torch.rand_like(mu)
    actions = torch.where(explore_randomly, uniform, noisy)
    return Act(actions, actions)


def optimizer_step(algorithm: Algorithm, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   parameters: Iterable[torch.Tensor], max_grad_norm: float | None) -> None:
    """Backpropagate ``loss`` (the gradients of ``parameters`` averaged across ranks by ``algorithm.backward``),
    clip their norm to ``max_grad_norm`` if given, step ``optimizer``."""
    parameters = list(parameters)
    optimizer.zero_grad(set_to_none=True)
    algorithm.backward(loss, parameters)
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()


@register_algorithm
class DDPG(Algorithm):
    """DDPG for one policy (Box actions); agents of the policy share the networks and the replay."""

    name = "ddpg"
    Config = DDPGConfig
    on_policy = False
    discrete = False
    continuous = True
    global_critic = False
    default_model = "mlp_ddpg"
    # Built from a registered model, which offers DeterministicActorCritic's methods (custom ones need not subclass it).
    model: DeterministicActorCritic
    acting_model: DeterministicActorCritic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.action_space, gym.spaces.Box):
            raise TypeError(f"DDPG needs a Box action space, got {self.action_space}")
        c: DDPGConfig = self.config
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        self.actor_optimizer = self.make_optimizer(self.model.actor.parameters())
        self.critic_optimizer = self.make_optimizer(self.model.critic.parameters())
        self.replay = ReplayBuffer(c.buffer_size, self.obs_size, self.action_size, self.device)
        # A device flag rather than a Python branch, so that a captured rollout switches from random to
        # learned actions without being captured again.
        self.explore_randomly = torch.ones((), dtype=torch.bool, device=self.device)
        self.noise_std = c.exploration_noise * self.model.action_scale
        self.critic_steps = 0

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        mu = self.acting_model.action(obs.to(self.acting_dtype))
        return noisy_act(mu, self.noise_std, self.low, self.high, self.explore_randomly, deterministic, explore)

    def update(self, storage: RolloutStorage, progress: float) -> dict[str, torch.Tensor | float]:
        c: DDPGConfig = self.config
        terminated = storage.terminated.unsqueeze(-1).expand_as(storage.rewards)
        self.replay.add(storage.obs.flatten(0, 2), storage.actions.flatten(0, 2), storage.rewards.flatten(),
                        storage.next_obs.flatten(0, 2), terminated.flatten())
        if self.replay.size < c.learning_starts:
            return {"replay_size": float(self.replay.size)}
        self.explore_randomly.fill_(False)
        lr = self.set_learning_rate(progress, self.actor_optimizer, self.critic_optimizer)

        stats: list[dict[str, torch.Tensor]] = []
        for _ in range(c.gradient_steps or storage.num_steps):
            b = self.replay.sample(c.batch_size)
            with torch.no_grad(), self.autocast():
                next_q = self.target.q(b["next_obs"], self.target.action(b["next_obs"]))
                target_q = b["rewards"] + c.gamma * (1.0 - b["terminated"]) * next_q
            with self.autocast():
                q = self.model.q(b["obs"], b["actions"])
            step = {"loss_value": ((q - target_q) ** 2).mean(), "q_values": q.detach().mean()}
            optimizer_step(self, self.critic_optimizer, step["loss_value"], self.model.critic.parameters(),
                           c.max_grad_norm)

            if self.critic_steps % c.policy_frequency == 0:
                with self.autocast():
                    step["loss_policy"] = -self.model.q(b["obs"], self.model.action(b["obs"])).mean()
                optimizer_step(self, self.actor_optimizer, step["loss_policy"], self.model.actor.parameters(),
                               c.max_grad_norm)
                soft_update(self.target, self.model, c.tau)
            self.critic_steps += 1
            stats.append({k: v.detach() for k, v in step.items()})

        metrics: dict[str, torch.Tensor | float] = {
            k: torch.stack([s[k] for s in stats if k in s]).float().mean() for k in stats[0]
        }
        metrics["learning_rate"] = lr
        metrics["replay_size"] = float(self.replay.size)
        return metrics

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "target": self.target}

    def state_dict(self) -> dict[str, Any]:
        return replay_learner_state(self, self.actor_optimizer, self.critic_optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_replay_learner_state(self, state, self.actor_optimizer, self.critic_optimizer)


def replay_learner_state(learner: Any, actor_optimizer: torch.optim.Optimizer,
                         critic_optimizer: torch.optim.Optimizer, **more: torch.optim.Optimizer) -> dict[str, Any]:
    """What DDPG, MADDPG and MASAC need for an exact resume: their optimisers (``more`` by name, such as MASAC's
    ``alpha_optimizer``), replay buffer, exploration flag and critic step count."""
    optimizers = {"actor_optimizer": actor_optimizer, "critic_optimizer": critic_optimizer, **more}
    return {
        **{name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "replay": learner.replay.state_dict(),
        "explore_randomly": learner.explore_randomly.clone(),
        "critic_steps": learner.critic_steps,
    }


def load_replay_learner_state(learner: Any, state: dict[str, Any], actor_optimizer: torch.optim.Optimizer,
                              critic_optimizer: torch.optim.Optimizer, **more: torch.optim.Optimizer) -> None:
    """Restore what :func:`replay_learner_state` returned (the replay only where it was saved)."""
    optimizers = {"actor_optimizer": actor_optimizer, "critic_optimizer": critic_optimizer, **more}
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state[name])
    if "replay" in state:
        learner.replay.load_state_dict(state["replay"])
    learner.explore_randomly.copy_(state["explore_randomly"])
    learner.critic_steps = int(state["critic_steps"])
