"""Action sampling on the device: no host sync, seeded through a ``torch.Generator``, graph-capturable.

Categorical draws use the exponential race (the Gumbel-max trick in another form), which needs one uniform
per choice and no sort, cumulative sum or host round trip, and so runs inside CUDA graphs.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

__all__ = ["categorical", "categorical_from_probs", "check_mask_allows_some", "discrete_choices", "gaussian",
           "uniform_actions"]

_TINY = 1e-20


def discrete_choices(space: gym.spaces.Space) -> list[int] | None:
    """Number of choices per action head for Discrete/MultiDiscrete spaces; ``None`` for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(space.nvec).reshape(-1)]
    if isinstance(space, gym.spaces.Box):
        return None
    raise TypeError(f"unsupported action space {space}; expected Discrete, MultiDiscrete or Box")


def check_mask_allows_some(mask: torch.Tensor, choices: list[int], agent_ids: list[int] | None = None) -> None:
    """Raise ``ValueError`` naming the env, agent and head of the first row of ``mask`` that allows none of a
    head's choices: the samplers would draw index 0 there (a masked-out action) without a word.

    For validate mode only: it syncs with the host, so samplers do not call it themselves.

    Args:
        mask: bool [E, A, n_1 + ... + n_H], True where a choice is allowed (the heads' choices end to end).
        choices: [n_1, ..., n_H], the heads' sizes.
        agent_ids: the env's agent id of each row of the agent axis, when ``mask`` holds some agents only.
    """
    starts = np.cumsum([0, *choices[:-1]])
    allows_some = torch.stack([mask[..., s:s + n].any(-1) for s, n in zip(starts, choices, strict=True)], -1)
    if not bool(allows_some.all()):
        env, row, head = (int(i) for i in (~allows_some).nonzero()[0])
        agent = row if agent_ids is None else agent_ids[row]
        raise ValueError(f"the action mask allows no action for env {env}, agent {agent}, head {head} (all "
                         f"{choices[head]} choices masked out); an env must allow at least one choice per head")


def categorical(logits: torch.Tensor, generator: torch.Generator | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """One index per row from ``softmax(logits)``.

    Args:
        logits: [..., n] unnormalised log-probabilities (``-inf`` masks an action out).
        generator: the random stream; ``None`` uses torch's default one.
        out: optional int tensor [...] written in place.

    Returns:
        [...] int64 indices (or ``out``).
    """
    return categorical_from_probs(torch.softmax(logits.float(), dim=-1), generator, out)


def categorical_from_probs(probs: torch.Tensor, generator: torch.Generator | None = None,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """Like :func:`categorical`, from probabilities [..., n] (rows need not be normalised; 0 masks out).

    The exponential race: with ``E_i = -log(U_i)`` independent Exp(1) draws, ``argmin_i E_i / p_i`` is
    distributed as ``p`` (the Gumbel-max trick in another form). It is computed as
    ``argmin_i p_i / log(U_i)``: four kernels (uniforms, log, divide, argmin), no clamping needed, as
    ``U_i = 0`` gives ``p_i / -inf = -0``, which never wins against a draw with ``p_i > 0``.
    """
    u = torch.rand(probs.shape, device=probs.device, dtype=torch.float32, generator=generator)
    index = torch.argmin(probs.float() / u.log_(), dim=-1)
    if out is None:
        return index
    out.copy_(index)
    return out


def gaussian(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None,
             low: torch.Tensor | None = None, high: torch.Tensor | None = None) -> torch.Tensor:
    """``mean + std * N(0, 1)``, shape of ``mean``; clipped to ``[low, high]`` when bounds are given
    (for Box action spaces, whose kernels accept only in-bounds actions)."""
    noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    action = mean + std * noise
    if low is not None and high is not None:
        action = torch.maximum(torch.minimum(action, high), low)
    return action


def uniform_actions(
    space: gym.spaces.Space, out: torch.Tensor, generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill ``out`` [envs, agents, heads] with uniformly random valid actions of ``space``, on its device.

    Args:
        mask: optional bool [envs, agents, n_1 + ... + n_H] for discrete spaces (the heads' choices laid end
            to end, True where allowed): each head draws uniformly among its allowed choices.
    """
    choices = discrete_choices(space)
    if choices is not None:
        start = 0
        for head, n in enumerate(choices):
            if mask is None:
                out[..., head].random_(0, n, generator=generator)
            else:
                out[..., head] = categorical_from_probs(mask[..., start:start + n].float(), generator)
            start += n
        return out
    if mask is not None:
        raise ValueError(f"action masks need a discrete action space, got {space}")
    assert isinstance(space, gym.spaces.Box)  # discrete_choices raises for other spaces
    low = torch.as_tensor(space.low.reshape(-1), device=out.device)
    high = torch.as_tensor(space.high.reshape(-1), device=out.device)
    out.uniform_(0.0, 1.0, generator=generator)
    out.mul_(high - low).add_(low)
    return out
