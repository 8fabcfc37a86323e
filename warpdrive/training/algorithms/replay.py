"""What the replay-based algorithms share (DDPG, MADDPG, MASAC, VDN, QMIX; a deterministic actor: DDPG, MADDPG).

An iteration stores the rollout in a replay buffer on the device and, once ``learning_starts`` transitions
(or joint rows) are stored, takes ``gradient_steps`` gradient steps on batches sampled from it (one per
rollout step by default). Each step's losses and statistics are averaged over the iteration's steps, on the
device; among them the gradient norm of each network it stepped (``grad_norm``, or ``critic_grad_norm``,
``actor_grad_norm``, ... where it steps several: what :meth:`ReplayLearner.optimizer_step` returns), which
the non-finite guard (:mod:`warpdrive.training.guard`) checks with the losses. A resume restores the
optimisers, the replay (where the checkpoint holds it) and the step count.

An algorithm gives :meth:`ReplayLearner.store_rollout`, :meth:`ReplayLearner.gradient_step` and
:meth:`ReplayLearner.optimizers`; its ``Config`` has ``learning_starts``, ``batch_size`` and
``gradient_steps``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from warpdrive.core.sampling import gaussian
from warpdrive.training.algorithms.base import Act, Algorithm

if TYPE_CHECKING:
    from warpdrive.training.storage import ReplayBuffer, RolloutStorage

__all__ = ["BoxReplayLearner", "DeterministicActorLearner", "ReplayLearner", "mean_metrics", "soft_update"]


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target = tau * source + (1 - tau) * target``, parameter by parameter, in place."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)


def mean_metrics(steps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor | float]:
    """Each metric's mean over the gradient steps that report it (an actor's only every few steps): device
    scalars, no host sync. Every metric that any step reports is kept, so the names stay the same across
    iterations."""
    names = dict.fromkeys(name for step in steps for name in step)
    return {name: torch.stack([s[name] for s in steps if name in s]).float().mean() for name in names}


class ReplayLearner(Algorithm):
    """An off-policy algorithm learning from a replay buffer on the device (see the module doc)."""

    on_policy = False
    replay: ReplayBuffer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gradient_steps = 0
        """Gradient steps taken so far (delayed actor steps and target updates follow it)."""

    # -- what a subclass gives ----------------------------------------------------------------------

    def store_rollout(self, storage: RolloutStorage) -> None:
        """Append the rollout in ``storage`` to :attr:`replay`."""
        raise NotImplementedError

    def gradient_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step (:attr:`gradient_steps` is the number of steps before it) on a sampled
        ``batch``; returns its losses and statistics (device scalars), with the norm that
        :meth:`optimizer_step` returned for each network stepped, as ``grad_norm`` or ``<network>_grad_norm``
        (the non-finite guard checks every such entry)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers by name (as checkpoints hold them); the learning-rate schedule sets each."""
        raise NotImplementedError

    def iteration_metrics(self) -> dict[str, torch.Tensor | float]:
        """What is logged every iteration, before learning starts too (the replay's size, ...)."""
        return {"replay_size": float(self.replay.size)}

    def learning_started(self) -> None:
        """Called at each iteration that learns, before its first gradient step."""

    # -- the iteration ------------------------------------------------------------------------------

    def update(self, storage: RolloutStorage, progress: float) -> dict[str, torch.Tensor | float]:
        c = self.config
        self.store_rollout(storage)
        if self.replay.size < c.learning_starts:
            return self.iteration_metrics()
        self.learning_started()
        lr = self.set_learning_rate(progress, *self.optimizers().values())
        steps: list[dict[str, torch.Tensor]] = []
        for _ in range(c.gradient_steps or storage.num_steps):
            step = self.gradient_step(self.replay.sample(c.batch_size, self.generator))
            self.gradient_steps += 1
            steps.append({name: value.detach() for name, value in step.items()})
        return {**mean_metrics(steps), "learning_rate": lr, **self.iteration_metrics()}

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters: Iterable[torch.Tensor],
                       max_grad_norm: float | None) -> torch.Tensor:
        """Backpropagate ``loss`` (the gradients of ``parameters`` averaged across ranks by :meth:`backward`),
        clip their norm to ``max_grad_norm`` if given, step ``optimizer``; returns the gradients' norm before
        clipping (a device scalar)."""
        parameters = list(parameters)
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss, parameters)
        norm = nn.utils.clip_grad_norm_(parameters, float("inf") if max_grad_norm is None else max_grad_norm)
        optimizer.step()
        return norm

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {**{name: optimizer.state_dict() for name, optimizer in self.optimizers().items()},
                "replay": self.replay.state_dict(), "gradient_steps": self.gradient_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state[name])
        if "replay" in state:  # checkpoints may leave the replay out (checkpoint.replay_buffer: false)
            self.replay.load_state_dict(state["replay"])
        # (DDPG, MADDPG and MASAC checkpoints of 2026-11 name the count critic_steps)
        self.gradient_steps = int(state["gradient_steps"] if "gradient_steps" in state else state["critic_steps"])


class BoxReplayLearner(ReplayLearner):
    """A replay learner for Box actions (DDPG, MADDPG, MASAC): uniformly random actions until learning starts.

    The switch is a device flag (:attr:`explore_randomly`) rather than a Python branch, so that a rollout
    captured in a CUDA graph goes from random to learned actions without being captured again.
    """

    discrete = False
    continuous = True
    global_critic = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.explore_randomly = torch.ones((), dtype=torch.bool, device=self.device)

    def own_networks(self, model: nn.Module, what: str) -> None:
        """Act and learn with ``model``, which the algorithm built itself (``what`` it holds, for the error):
        ``model.name`` is refused; with bf16 mixed precision, rollouts act through a bf16 copy (as
        :class:`~warpdrive.training.algorithms.base.Algorithm` does for the models it builds)."""
        if self.spec.model.name is not None:
            raise ValueError(f"{self.name} builds its own networks ({what}); remove model.name "
                             f"({self.spec.model.name!r})")
        self.model = self.acting_model = model.to(self.device)
        if self.mixed_precision:
            self.acting_model = copy.deepcopy(self.model).to(torch.bfloat16).requires_grad_(False)
            self.acting_dtype = torch.bfloat16

    def random_actions(self, like: torch.Tensor) -> torch.Tensor:
        """Uniformly random actions in the Box, shaped as ``like`` [..., H]."""
        return self.low + (self.high - self.low) * torch.rand(like.shape, device=like.device, dtype=like.dtype,
                                                              generator=self.generator)

    def learning_started(self) -> None:
        self.explore_randomly.fill_(False)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "explore_randomly": self.explore_randomly.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.explore_randomly.copy_(state["explore_randomly"])


class DeterministicActorLearner(BoxReplayLearner):
    """A deterministic actor that explores with Gaussian noise, a critic, and their target copies (DDPG, MADDPG).

    The model offers ``actor``, ``critic``, ``action(obs)`` and ``action_scale``; the algorithm builds it, then
    calls :meth:`setup_actor_critic`.
    """

    # (each algorithm declares its model's class: DeterministicActorCritic, MADDPGNetworks)
    model: Any
    acting_model: Any
    target: Any
    noise_std: torch.Tensor
    """Std [H] of the exploration noise, in the Box's units."""

    def setup_actor_critic(self, exploration_noise: float) -> None:
        """Target copies of the model, an optimizer for the actor and one for the critic, and the noise's std
        (``exploration_noise`` times the Box's half-widths)."""
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        self.actor_optimizer = self.make_optimizer(self.model.actor.parameters())
        self.critic_optimizer = self.make_optimizer(self.model.critic.parameters())
        self.noise_std = exploration_noise * self.model.action_scale

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        """The actor's action ``mu`` [E, A, H] (``deterministic``), else ``mu`` plus Gaussian noise of std
        :attr:`noise_std` clipped to the Box, or uniform actions while :attr:`explore_randomly` is set and
        ``explore`` (the warm-up of training rollouts)."""
        mu = self.acting_model.action(obs.to(self.acting_dtype))
        if deterministic:
            return Act(mu, self.to_env_actions(mu))
        noisy = gaussian(mu, self.noise_std.expand_as(mu), self.generator, low=self.low, high=self.high)
        if not explore:
            return Act(noisy, noisy)
        actions = torch.where(self.explore_randomly, self.random_actions(mu), noisy)
        return Act(actions, actions)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optimizer": self.actor_optimizer, "critic_optimizer": self.critic_optimizer}
