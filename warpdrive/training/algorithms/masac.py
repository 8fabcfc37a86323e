"""Multi-Agent Soft Actor-Critic for Box action spaces: SAC (Haarnoja et al. 2018, arXiv:1812.05905, after
CleanRL's ``sac_continuous_action.py``) with decentralised actors and centralised twin critics.

The policy's ``A`` agents share one actor ``pi(a | o_i)``, a Gaussian squashed by tanh into the Box bounds,
and two critics ``Q_k,i(o_1..o_A, a_1..a_A, onehot(i))`` (:class:`~warpdrive.training.offpolicy_models.CentralisedQ`).
Rollouts sample from ``pi`` (uniform actions until ``learning_starts`` env-steps are stored); every iteration
appends the rollout's env-steps to a replay buffer on the device, one row of ``A`` agents each, and takes
``gradient_steps`` steps on sampled rows:

- critics: both regress ``r_i + gamma (1 - terminated) (min_k Q'_k,i(x', a') - alpha log pi(a'_i | o'_i))``,
  ``a'`` drawn from ``pi`` for every agent (target critics ``Q'``; truncated steps bootstrap from their final
  observation); the targets follow by Polyak averaging after every step;
- actor, ``policy_frequency`` times every ``policy_frequency`` critic steps (CleanRL's delayed but
  compensated updates): minimise ``alpha log pi(a~_i | o_i) - min_k Q_k,i(x, a_1..a~_i..a_A)``, agent ``i``'s
  action drawn afresh (reparameterised) and the others' as stored;
- with ``autotune``, after each actor step: ``log alpha`` descends ``-alpha (log pi + target_entropy)``, which
  raises ``alpha`` while the policy's entropy is below the target (``-H`` by default) and lowers it above.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from warpdrive.core.sampling import gaussian
from warpdrive.core.typed import bounded
from warpdrive.training.algorithms.base import Act, register_algorithm
from warpdrive.training.algorithms.replay import BoxReplayLearner, soft_update
from warpdrive.training.models import ModelSpec, layer_init, mlp
from warpdrive.training.offpolicy_models import CentralisedQ, box_bounds, store_joint_rollout, with_own_actions
from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = ["MASAC", "MASACConfig", "MASACNetworks", "SquashedGaussianActor"]

#: CleanRL's bounds of the actor's log standard deviation
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class MASACConfig:
    """MASAC's hyperparameters (CleanRL's SAC defaults)."""

    gamma: float = bounded(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    tau: float = bounded(0.005, gt=0.0, le=1.0)
    """Polyak averaging rate of the target critics."""
    buffer_size: int = bounded(1_000_000, ge=1)
    """Replay capacity in env-steps (one row holds every agent of the policy)."""
    batch_size: int = bounded(256, ge=1)
    """Env-steps (rows of ``A`` agents) per gradient step."""
    learning_starts: int = bounded(5_000, ge=0)
    """Env-steps stored before learning begins; until then actions are uniformly random."""
    policy_frequency: int = bounded(2, ge=1)
    """Every this many critic steps, this many actor (and entropy coefficient) steps."""
    gradient_steps: int | None = bounded(None, ge=1)
    """Critic steps per iteration; ``null``: one per rollout step (``rollout_length``)."""
    alpha: float = bounded(0.2, gt=0.0, le=100.0)
    """Entropy coefficient: fixed, or where automatic tuning starts."""
    autotune: bool = True
    """Tune ``alpha`` so that the policy's entropy tracks ``target_entropy``."""
    target_entropy: float | None = bounded(None, ge=-1e6, le=1e6)
    """Entropy (nats, per agent) that ``autotune`` aims for; ``null``: ``-H``, minus the action size."""
    max_grad_norm: float | None = bounded(None, gt=0.0)
    """Clip each network's gradient norm to this; ``null``: no clipping (as CleanRL)."""


class SquashedGaussianActor(nn.Module):
    """``a = scale * tanh(u) + bias``, ``u ~ N(mean(o), std(o))``: a diagonal Gaussian squashed into the Box.

    The log-std is bounded to ``[LOG_STD_MIN, LOG_STD_MAX]`` through a tanh (CleanRL's parameterisation).

    Args:
        obs_size: D.
        scale, bias: [H], half the Box's range and its centre.
        spec: hidden sizes and activation.
    """

    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(self, obs_size: int, scale: torch.Tensor, bias: torch.Tensor, spec: ModelSpec) -> None:
        super().__init__()
        self.register_buffer("action_scale", scale)
        self.register_buffer("action_bias", bias)
        size = scale.numel()
        self.trunk = mlp(obs_size, spec.hidden_sizes, spec.activation)
        features = spec.hidden_sizes[-1] if spec.hidden_sizes else obs_size
        self.mean = layer_init(nn.Linear(features, size), gain=0.01)
        self.log_std = layer_init(nn.Linear(features, size), gain=0.01)

    def mean_and_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-squash Gaussian's mean and log-std, each [..., H] float32, from observations [..., D]."""
        features = self.trunk(obs)
        log_std = torch.tanh(self.log_std(features).float())
        return self.mean(features).float(), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action [..., H] in the Box, and its log-density [...] (summed over the H dims);
        the noise from ``generator`` (``None``: torch's default).

        The density of ``a = scale tanh(u) + bias`` is that of ``u`` divided by ``scale (1 - tanh(u)^2)``
        per dim; ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` is exact and stays finite where
        ``tanh(u)`` rounds to 1 (CleanRL's ``+ 1e-6`` instead biases it).
        """
        mean, log_std = self.mean_and_log_std(obs)
        u = gaussian(mean, log_std.exp(), generator)
        normal = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_det = torch.log(self.action_scale) + 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u) * self.action_scale + self.action_bias, (normal - log_det).sum(-1)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The squashed mean [..., H]: the action for deterministic evaluation."""
        return torch.tanh(self.mean_and_log_std(obs)[0]) * self.action_scale + self.action_bias


class MASACNetworks(nn.Module):
    """A MASAC policy's networks: the shared actor, the twin centralised critics and ``log alpha``.

    Args:
        num_agents: A, the policy's agents.
        obs_size: D.
        action_space: one agent's Box action space (finite bounds).
        spec: the policy's architecture (hidden sizes and activation of the actor and of each critic).
        alpha: the initial entropy coefficient.
    """

    def __init__(self, num_agents: int, obs_size: int, action_space: gym.spaces.Space, spec: ModelSpec,
                 alpha: float) -> None:
        super().__init__()
        scale, bias = box_bounds(action_space, "masac")
        self.actor = SquashedGaussianActor(obs_size, scale, bias, spec)
        self.critic = nn.ModuleList([CentralisedQ(num_agents, obs_size, scale.numel(), spec) for _ in range(2)])
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)))

    def min_q(self, obs: torch.Tensor, actions: torch.Tensor, critics: nn.ModuleList | None = None) -> torch.Tensor:
        """``min(Q_1, Q_2)`` [..., A] of ``critics`` (default: this model's); arguments as
        :meth:`CentralisedQ.joint_input`."""
        q1, q2 = critics if critics is not None else self.critic
        return torch.minimum(q1(obs, actions), q2(obs, actions))


@register_algorithm
class MASAC(BoxReplayLearner):
    """MASAC for one policy (Box actions): its agents share the actor, the twin critics and the replay.

    ``global_critic`` is False: the critics are centralised by construction over the policy's agents (their
    observations and actions); ``model.critic_input: global`` (the env's global state) is not used.
    """

    name = "masac"
    Config = MASACConfig
    centralised = "joint"
    model: MASACNetworks
    acting_model: MASACNetworks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c: MASACConfig = self.config
        self.own_networks(MASACNetworks(self.num_agents, self.obs_size, self.action_space, self.spec.model, c.alpha),
                          "a shared actor, twin centralised critics")
        self.target = copy.deepcopy(self.model.critic).requires_grad_(False)
        self.target_entropy = -float(self.action_size) if c.target_entropy is None else c.target_entropy
        self.actor_optimizer = self.make_optimizer(self.model.actor.parameters())
        self.critic_optimizer = self.make_optimizer(self.model.critic.parameters())
        self.alpha_optimizer = self.make_optimizer([self.model.log_alpha])
        self.replay = ReplayBuffer(c.buffer_size, self.obs_size, self.action_size, self.device,
                                   num_agents=self.num_agents)

    @property
    def alpha(self) -> torch.Tensor:
        """The entropy coefficient, a device scalar (no gradient)."""
        return self.model.log_alpha.detach().exp()

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        obs = obs.to(self.acting_dtype)
        if deterministic:
            mode = self.acting_model.actor.mode(obs)
            return Act(mode, self.to_env_actions(mode))
        actions, _ = self.acting_model.actor.sample(obs, self.generator)
        # (tanh can round to exactly +-1 in float32: the clip is then exact and keeps the env's kernel happy)
        actions = self.to_env_actions(actions)
        if explore:
            actions = torch.where(self.explore_randomly, self.random_actions(actions), actions)
        return Act(actions, actions)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optimizer": self.actor_optimizer, "critic_optimizer": self.critic_optimizer,
                "alpha_optimizer": self.alpha_optimizer}

    def store_rollout(self, storage: RolloutStorage) -> None:
        store_joint_rollout(self.replay, storage)

    def critic_targets(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """``r_i + gamma (1 - terminated) (min_k Q'_k,i(x', a') - alpha log pi(a'_i | o'_i))`` [B, A] for a
        batch of rows ``b`` (``obs``, ``next_obs`` [B, A, D], ``actions`` [B, A, H], ``rewards`` [B, A],
        ``terminated`` [B]), with ``a' ~ pi(o')`` drawn here."""
        c: MASACConfig = self.config
        with torch.no_grad(), self.autocast():
            next_actions, next_logp = self.model.actor.sample(b["next_obs"], self.generator)
            soft_q = self.model.min_q(b["next_obs"], next_actions, self.target) - self.alpha * next_logp
        return b["rewards"] + c.gamma * (1.0 - b["terminated"]).unsqueeze(-1) * soft_q

    def gradient_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c: MASACConfig = self.config
        target_q = self.critic_targets(b)
        with self.autocast():
            q1, q2 = (critic(b["obs"], b["actions"]) for critic in self.model.critic)
        step = {"loss_value": ((q1 - target_q) ** 2).mean() + ((q2 - target_q) ** 2).mean(),
                "q_values": q1.detach().mean()}
        step["critic_grad_norm"] = self.optimizer_step(self.critic_optimizer, step["loss_value"],
                                                       self.model.critic.parameters(), c.max_grad_norm)
        if self.gradient_steps % c.policy_frequency == 0:
            for _ in range(c.policy_frequency):
                step.update(self._actor_step(b, c))
        soft_update(self.target, self.model.critic, c.tau)
        return step

    def _actor_step(self, b: dict[str, torch.Tensor], c: MASACConfig) -> dict[str, torch.Tensor]:
        """One actor step on rows ``b`` and, with ``autotune``, one step of ``log alpha``; returns their losses
        and gradient norms, ``alpha`` and the policy's entropy estimate ``-log pi`` (mean over rows and agents)."""
        with self.autocast():
            own, logp = self.model.actor.sample(b["obs"], self.generator)
            q = self.model.min_q(b["obs"], with_own_actions(b["actions"], own))
            loss_policy = (self.alpha * logp - q).mean()
        actor_norm = self.optimizer_step(self.actor_optimizer, loss_policy, self.model.actor.parameters(),
                                         c.max_grad_norm)
        out = {"loss_policy": loss_policy.detach(), "actor_grad_norm": actor_norm, "entropy": -logp.detach().mean()}
        if c.autotune:
            # -alpha * (log pi + target): its gradient in log alpha raises alpha while the entropy (-log pi)
            # is below the target and lowers it above
            loss_alpha = (-self.model.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
            out["alpha_grad_norm"] = self.optimizer_step(self.alpha_optimizer, loss_alpha, [self.model.log_alpha], None)
            out["loss_alpha"] = loss_alpha.detach()
        out["alpha"] = self.alpha
        return out

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "target": self.target}
