"""Policy and value networks, their action distributions, and a registry for custom models.

Two built-in models:

- ``"mlp_actor_critic"`` (:class:`ActorCritic`): a stochastic actor and a state-value critic, for PPO and
  A2C. Discrete and MultiDiscrete action spaces get one categorical per action dimension (head);
  Box spaces a diagonal Gaussian with a state-independent log-std.
- ``"mlp_ddpg"`` (:class:`DeterministicActorCritic`): a deterministic actor squashed into the Box bounds
  and a Q critic, for DDPG.

Initialisation follows CleanRL: orthogonal weights, gain sqrt(2) in hidden layers, 0.01 on the policy
head (near-uniform first policy), 1.0 on the value head; zero biases.

Shapes: every method accepts any leading batch shape ``[...]`` (the trainer passes ``[E, A, D]`` during
rollouts and ``[B, D]`` during updates); ``H`` is the number of action heads.

Custom models: decorate a class with ``@register_model("name")``; it is built as
``cls(obs_size, action_space, spec, critic_input_size)`` and must offer the methods of the built-in model
its algorithm uses (see :class:`ActorCritic`: ``distribution``, ``value``, ``distribution_and_value``; and
:class:`DeterministicActorCritic`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from warpdrive.core.sampling import categorical_from_probs, discrete_choices, gaussian
from warpdrive.core.typed import ConfigError, bounded

__all__ = [
    "MODELS",
    "ActorCritic",
    "DeterministicActorCritic",
    "DiagGaussian",
    "ModelSpec",
    "MultiCategorical",
    "build_model",
    "critic_input",
    "layer_init",
    "mlp",
    "register_model",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


@dataclass
class ModelSpec:
    """Network architecture of one policy."""

    name: str | None = None
    """A registered model; ``None``: the algorithm's default (``mlp_actor_critic`` or ``mlp_ddpg``)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Widths of the hidden layers of the actor and of the critic."""
    activation: Literal["tanh", "relu", "elu", "gelu", "silu"] = "tanh"
    shared_trunk: bool = False
    """Actor and critic share their hidden layers (one trunk, two heads); needs ``critic_input: local``."""
    critic_input: Literal["local", "global"] = "local"
    """``local``: the critic sees the agent's observation. ``global`` (MAPPO-style centralised critic): it
    sees the env's global state (what the env's ``global_state(obs)`` returns, or every agent's observation
    concatenated where it returns ``None``) followed by the agent's own observation. The concatenation
    grows with agents x observation size and is stored per step: with many agents, give the env a compact
    ``global_state``."""
    log_std_init: float = bounded(0.0, ge=-20.0, le=2.0)
    """Initial log standard deviation of Gaussian policies (within SAC's customary clamp, [-20, 2])."""
    recurrent: Literal["none", "gru", "lstm"] = "none"
    """``gru`` or ``lstm``: a recurrent core of that kind after the actor's and the critic's hidden layers, for
    tasks whose observations do not tell everything (``recurrent_actor_critic``, see
    :mod:`warpdrive.training.recurrent`); for algorithms that declare ``recurrent`` support (PPO, A2C)."""
    recurrent_size: int = bounded(64, ge=1)
    """Width of the recurrent core's state (an LSTM's state is twice that: h and c)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments for custom models (read from ``spec.kwargs``)."""

    def validate(self, path: str) -> None:
        if any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(f"{path}.hidden_sizes", f"expected positive layer widths, got {self.hidden_sizes}")
        if self.shared_trunk and self.critic_input != "local":
            raise ConfigError(f"{path}.shared_trunk", "a shared trunk needs critic_input: local (one input for both)")


# --------------------------------------------------------------------------------------------------
# building blocks


def critic_input(obs: torch.Tensor, global_state: torch.Tensor | None) -> torch.Tensor:
    """The critic's input: ``obs`` [..., D] alone (local critic), or ``[global_state, obs]`` [..., G + D].

    ``global_state`` is [..., G] with the same leading shape as ``obs``, or without its agent axis
    ([E, G] for ``obs`` [E, A, D]), in which case every agent of an env gets that env's state.
    """
    if global_state is None:
        return obs
    if global_state.dim() == obs.dim() - 1:
        global_state = global_state.unsqueeze(-2).expand(*obs.shape[:-1], global_state.shape[-1])
    return torch.cat([global_state, obs], dim=-1)


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with ``gain``, constant bias (CleanRL's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_size: int, hidden_sizes: list[int], activation: str, out_size: int | None = None,
        out_gain: float = 1.0) -> nn.Sequential:
    """``Linear -> activation`` per hidden size, then an optional ``Linear`` output layer with ``out_gain``."""
    layers: list[nn.Module] = []
    size = in_size
    for hidden in hidden_sizes:
        layers += [layer_init(nn.Linear(size, hidden)), ACTIVATIONS[activation]()]
        size = hidden
    if out_size is not None:
        layers.append(layer_init(nn.Linear(size, out_size), gain=out_gain))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# action distributions (sampling on the device through warpdrive.core.sampling: graph-capturable)


class MultiCategorical:
    """Independent categoricals, one per action head.

    Args:
        logits: [..., H, n] unnormalised log-probabilities; ``-inf`` marks an action that cannot be taken
            (a masked action, or padding when heads have different sizes).
    """

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.float()
        self.log_probs = torch.log_softmax(self.logits, dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """[..., H] int64 action indices (drawn on the device from ``generator``; ``None``: torch's default)."""
        return categorical_from_probs(self.log_probs.exp(), generator)

    def mode(self) -> torch.Tensor:
        """[..., H] the most likely action of each head."""
        return self.logits.argmax(dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Joint log-probability [...] of ``actions`` [..., H] (sum over heads)."""
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Joint entropy [...] (sum over heads); masked actions contribute 0, not NaN."""
        probs = self.log_probs.exp()
        # zero the -inf log-probabilities before multiplying: 0 * -inf would be NaN, in the gradient too
        log_probs = torch.where(probs > 0, self.log_probs, torch.zeros_like(self.log_probs))
        return -(probs * log_probs).sum(-1).sum(-1)


class DiagGaussian:
    """A diagonal Gaussian over Box actions.

    Args:
        mean: [..., H].
        log_std: [H] or broadcastable to ``mean``.
    """

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor) -> None:
        self.mean = mean.float()
        self.log_std = log_std.float().expand_as(self.mean)
        self.std = self.log_std.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """[..., H] float32 actions, not clipped (the trainer clips what it sends to the env)."""
        return gaussian(self.mean, self.std, generator)

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) / self.std
        return (-0.5 * z * z - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)


# --------------------------------------------------------------------------------------------------
# registry

MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a model buildable by ``model: {name: <name>}`` in configs."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        MODELS[name] = cls
        return cls

    return decorate


def build_model(name: str, obs_size: int, action_space: gym.spaces.Space, spec: ModelSpec,
                critic_input_size: int) -> nn.Module:
    """Build the model registered as ``name``."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return MODELS[name](obs_size, action_space, spec, critic_input_size)


# --------------------------------------------------------------------------------------------------
# models


@register_model("mlp_actor_critic")
class ActorCritic(nn.Module):
    """A stochastic MLP actor and an MLP state-value critic.

    Args:
        obs_size: D, the size of one agent's observation.
        action_space: one agent's action space (Discrete, MultiDiscrete or Box).
        spec: the architecture.
        critic_input_size: size of the critic's input (D for a local critic, G + D for a global one).
    """

    pad_index: torch.Tensor
    """A buffer, only when heads have different sizes."""

    def __init__(self, obs_size: int, action_space: gym.spaces.Space, spec: ModelSpec,
                 critic_input_size: int) -> None:
        super().__init__()
        self.sizes = discrete_choices(action_space)
        hidden = spec.hidden_sizes
        feature_size = hidden[-1] if hidden else obs_size
        if self.sizes is not None:
            out_size = sum(self.sizes)
        else:  # a Box (discrete_choices raises for other spaces)
            assert action_space.shape is not None
            out_size = int(np.prod(action_space.shape))
        self.actor_trunk = mlp(obs_size, hidden, spec.activation)
        # a shared trunk is registered once (as actor_trunk), so that checkpoints hold no aliased tensors
        self.critic_trunk = None if spec.shared_trunk else mlp(critic_input_size, hidden, spec.activation)
        critic_feature_size = hidden[-1] if hidden else critic_input_size
        self.actor_head = layer_init(nn.Linear(feature_size, out_size), gain=0.01)
        self.value_head = layer_init(nn.Linear(critic_feature_size, 1), gain=1.0)
        if self.sizes is None:
            self.log_std = nn.Parameter(torch.full((out_size,), float(spec.log_std_init)))
        elif len(set(self.sizes)) > 1:
            # heads of different sizes: pad each to the largest with -inf so that they stack as [..., H, n]
            n_max = max(self.sizes)
            index = [h * n_max + i for h, n in enumerate(self.sizes) for i in range(n)]
            self.register_buffer("pad_index", torch.tensor(index), persistent=False)

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> MultiCategorical | DiagGaussian:
        """The action distribution for ``obs`` [..., D].

        Args:
            mask: optional bool [..., sum of head sizes] for discrete spaces, True where an action is
                allowed (the heads' choices laid end to end); a masked action gets logit ``-inf``.
        """
        return self._distribution(self.actor_head(self.actor_trunk(obs)), mask)

    def _distribution(self, out: torch.Tensor, mask: torch.Tensor | None) -> MultiCategorical | DiagGaussian:
        if self.sizes is None:
            return DiagGaussian(out, self.log_std)
        if mask is not None:
            out = out.masked_fill(~mask, float("-inf"))
        heads = len(self.sizes)
        if not hasattr(self, "pad_index"):
            return MultiCategorical(out.reshape(*out.shape[:-1], heads, self.sizes[0]))
        n_max = max(self.sizes)
        padded = out.new_full((*out.shape[:-1], heads * n_max), float("-inf"))
        padded = padded.index_copy(-1, self.pad_index, out)
        return MultiCategorical(padded.reshape(*out.shape[:-1], heads, n_max))

    def value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        """State values [...] from the critic's input [..., C]."""
        trunk = self.actor_trunk if self.critic_trunk is None else self.critic_trunk
        return self.value_head(trunk(critic_obs)).squeeze(-1).float()

    def distribution_and_value(
        self, obs: torch.Tensor, critic_obs: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[MultiCategorical | DiagGaussian, torch.Tensor]:
        """:meth:`distribution` and :meth:`value` together; a shared trunk runs once for both."""
        if self.critic_trunk is not None:
            return self.distribution(obs, mask), self.value(critic_obs)
        features = self.actor_trunk(obs)
        return self._distribution(self.actor_head(features), mask), self.value_head(features).squeeze(-1).float()


@register_model("mlp_ddpg")
class DeterministicActorCritic(nn.Module):
    """A deterministic actor ``mu(obs)`` squashed into the Box bounds, and a Q critic ``Q(obs, action)``.

    Args: as :class:`ActorCritic`; the action space must be a Box with finite bounds.
    """

    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(self, obs_size: int, action_space: gym.spaces.Space, spec: ModelSpec,
                 critic_input_size: int) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"DeterministicActorCritic needs a Box action space, got {action_space}")
        low = np.asarray(action_space.low, np.float32).reshape(-1)
        high = np.asarray(action_space.high, np.float32).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"DDPG needs finite action bounds, got low={low}, high={high}")
        size = low.size
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0))
        self.actor = mlp(obs_size, spec.hidden_sizes, spec.activation, size, out_gain=0.01)
        self.critic = mlp(critic_input_size + size, spec.hidden_sizes, spec.activation, 1, out_gain=1.0)

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions [..., H] inside the Box bounds."""
        return torch.tanh(self.actor(obs).float()) * self.action_scale + self.action_bias

    def q(self, critic_obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q values [...] of ``action`` [..., H] in state ``critic_obs`` [..., C]."""
        return self.critic(torch.cat([critic_obs, action.to(critic_obs.dtype)], -1)).squeeze(-1).float()
