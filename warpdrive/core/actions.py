"""Actions on the host side: an action space's heads and the tables the kernels read, the checks of actions
given to :meth:`~warpdrive.core.env.Env.step`, and the error for an invalid action the step kernel found.

The step kernel checks every action itself (``check_actions``) and records the first invalid one in
``action_fault[env]`` without a host sync: ``(A * H - (agent * H + head)) << 32 | bits of the value``, so that
the largest code is the first (agent, head) in order. :func:`action_fault_error` turns a record back into a
message.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.sampling import discrete_choices

__all__ = ["INT32_LIMIT", "InvalidActionError", "action_fault_error", "action_heads", "action_tables",
           "check_action_range", "check_tensor", "checked_actions"]

INT32_LIMIT = 2**31
"""Action indices live in int32 buffers: wider integers are saturated to ``[-INT32_LIMIT, INT32_LIMIT)``."""


class InvalidActionError(ValueError):
    """An action outside the env's action space reached a step (see ``Env.check_actions``)."""


def action_heads(space: gym.spaces.Space) -> int:
    """H, the values one agent's action holds: 1 for Discrete, one per dimension for MultiDiscrete and Box."""
    if isinstance(space, gym.spaces.Discrete):
        return 1
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.Box)):
        return int(np.prod(space.shape))
    raise TypeError(f"unsupported action space {space}")


def action_tables(space: gym.spaces.Space) -> dict[str, np.ndarray]:
    """The constant arrays the kernels draw and check actions with: ``action_choices`` [H] int32 (discrete
    heads), ``action_low``/``action_high`` [H] float32 (Box heads); the other kind's are zero, explicitly."""
    heads = action_heads(space)
    choices = discrete_choices(space)
    zeros = np.zeros(heads, np.float32)
    if choices is not None:
        return {"action_choices": np.asarray(choices, np.int32), "action_low": zeros, "action_high": zeros}
    assert isinstance(space, gym.spaces.Box)  # discrete_choices raises for other spaces
    return {"action_choices": np.zeros(heads, np.int32),
            "action_low": np.asarray(space.low, np.float32).reshape(heads),
            "action_high": np.asarray(space.high, np.float32).reshape(heads)}


def check_tensor(name: str, value: Any, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...],
                 device: torch.device) -> torch.Tensor:
    """``value`` if it is a tensor of ``shape``, one of ``dtypes`` and on ``device``'s type; else an error naming
    what differs."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape} ([envs, agents, ...])")
    if value.dtype not in dtypes:
        names = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} has dtype {value.dtype}, expected one of: {names}")
    if value.device.type != device.type:
        raise ValueError(f"{name} is on {value.device}, expected it on {device} (the env's device)")
    return value


def checked_actions(actions: Any, buffer: torch.Tensor) -> torch.Tensor:
    """``actions`` as [E, A, H] if they fit the env's action ``buffer`` [E, A, H] (float32 for Box spaces, any
    integer type otherwise; [E, A] is accepted for one head)."""
    shape = tuple(buffer.shape)
    if buffer.dtype == torch.float32:
        dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    else:
        dtypes = (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)
    if isinstance(actions, torch.Tensor) and shape[2] == 1 and tuple(actions.shape) == shape[:2]:
        return check_tensor("actions", actions, shape[:2], dtypes, buffer.device).unsqueeze(-1)
    return check_tensor("actions", actions, shape, dtypes, buffer.device)


def check_action_range(actions: torch.Tensor, space: gym.spaces.Space, mask: torch.Tensor | None) -> None:
    """Raise :class:`InvalidActionError` naming the first action [E, A, H] outside ``space`` (or, with an action
    ``mask`` [E, A, n_1 + ... + n_H], not allowed by it). A host sync: for ``validate`` mode."""
    if isinstance(space, gym.spaces.Box):
        low = torch.as_tensor(space.low.reshape(-1), device=actions.device)
        high = torch.as_tensor(space.high.reshape(-1), device=actions.device)
        bad = ~((actions >= low) & (actions <= high))  # NaN fails both comparisons
        expected = "a value in [{low}, {high}]"
    else:
        high = torch.as_tensor(discrete_choices(space), device=actions.device)
        low = torch.zeros_like(high)
        bad = (actions < 0) | (actions >= high)
        expected = "0 <= index < {high}"
    if bool(bad.any()):
        env, agent, head = (int(i) for i in bad.nonzero()[0])
        value = actions[env, agent, head].item()
        bounds = expected.format(low=low[head].item(), high=high[head].item())
        raise InvalidActionError(
            f"action out of range: actions[{env}, {agent}, {head}] = {value}, expected {bounds} "
            f"(action space {space}); a sampler must produce valid actions: nothing is clipped"
        )
    if mask is not None:
        _check_allowed(actions, space, mask)


def _check_allowed(actions: torch.Tensor, space: gym.spaces.Space, mask: torch.Tensor) -> None:
    """Every (in-range) action index must be allowed by ``mask``."""
    choices = discrete_choices(space)
    assert choices is not None  # Env._check_action_mask_spec: a masked action space is discrete
    offsets = torch.as_tensor(np.cumsum([0, *choices[:-1]]), device=actions.device)
    allowed = mask.gather(2, actions.long() + offsets)
    if not bool(allowed.all()):
        env, agent, head = (int(i) for i in (~allowed).nonzero()[0])
        raise InvalidActionError(
            f"action not allowed: actions[{env}, {agent}, {head}] = {actions[env, agent, head].item()} is "
            f"masked out (env.action_mask[{env}, {agent}] is False there); sample from the allowed actions"
        )


def action_fault_error(env: int, code: int, space: gym.spaces.Space, num_agents: int,
                       masked: bool) -> InvalidActionError:
    """The error for the fault record ``code`` of replica ``env`` (see the module doc)."""
    heads = action_heads(space)
    agent, head = divmod(num_agents * heads - (code >> 32), heads)
    bits = np.uint32(code & 0xFFFFFFFF)
    if isinstance(space, gym.spaces.Box):
        value: float | int | str = float(bits.view(np.float32))
        expected = "a finite value"
    else:
        value = int(bits.view(np.int32))
        expected = f"0 <= index < {discrete_choices(space)[head]}"  # type: ignore[index]
        if masked:
            expected += " and allowed by env.action_mask"
        if value in (-INT32_LIMIT, INT32_LIMIT - 1):
            value = f"{value} (or beyond int32)"
    return InvalidActionError(f"invalid action: actions[{env}, {agent}, {head}] = {value}, expected {expected} "
                              f"(action space {space}); found by the step kernel, which took a safe action "
                              f"instead; a sampler must produce valid actions")
