"""Returns and advantages as pure functions of rollout tensors, on the device.

Layout: ``[T, E, A]`` = (rollout step, env, agent); done flags are per env ``[T, E]`` (broadcast over
agents) or per agent ``[T, E, A]``. Entry ``t`` describes the transition taken from the observation at
step ``t``: its reward, and whether the episode ended with it.

Episode ends, with the env's ``SAME_STEP`` autoreset: after a done step the next stored observation is
the first of a *new* episode, so ``values[t + 1]`` must never be used to bootstrap transition ``t`` when
it ended an episode. Instead:

- terminated (the env's rules ended the episode): the next state has value 0, no bootstrap;
- truncated (time limit): the episode could have gone on, so bootstrap from ``V(final_obs)``, the value of
  the last observation of the finished episode (the env's ``final_obs``, stored during the rollout).

:func:`next_state_values` folds these cases into one tensor ``next_values[t]``, the value of the state
that transition ``t`` actually reached; :func:`gae` and :func:`discounted_returns` then cut their recursion
at every done step.
"""

from __future__ import annotations

import numpy as np
import torch

from warpdrive.core.compile import ParallelFor
from warpdrive.core.device import kernel_function

__all__ = ["discounted_returns", "gae", "n_step_returns", "next_state_values"]


def _per_agent(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[T, E] flags broadcast to ``like`` [T, E, A] (returned as is when already per agent)."""
    return flags.unsqueeze(-1) if flags.dim() == like.dim() - 1 else flags


def next_state_values(values: torch.Tensor, last_values: torch.Tensor, final_values: torch.Tensor,
                      terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """Value of the state each transition reached, [T, E, A].

    Args:
        values: [T, E, A] ``V(obs[t])``, the values stored during the rollout.
        last_values: [E, A] ``V`` of the observation after the last step (the bootstrap for ``t = T - 1``).
        final_values: [T, E, A] ``V(final_obs[t])``; read only where ``truncated``.
        terminated, truncated: [T, E] or [T, E, A] bool.

    Returns:
        ``values[t + 1]`` (``last_values`` for the last step) where the episode goes on,
        ``final_values[t]`` where it was truncated, 0 where it terminated.
    """
    following = torch.cat([values[1:], last_values.unsqueeze(0)], dim=0)
    reached = torch.where(_per_agent(truncated, values), final_values, following)
    return torch.where(_per_agent(terminated, values), torch.zeros_like(reached), reached)


@kernel_function
def _gae_column(i, args):
    rewards, values, next_values, not_done, gamma_lam, gamma, advantages = args
    running = np.float32(0.0)
    for t in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[t, i] + gamma * next_values[t, i] - values[t, i]
        running = delta + gamma_lam * not_done[t, i] * running
        advantages[t, i] = running


@kernel_function
def _returns_column(i, args):
    rewards, next_values, not_done, gamma, returns = args
    running = next_values[rewards.shape[0] - 1, i]
    for t in range(rewards.shape[0] - 1, -1, -1):
        following = running if not_done[t, i] > 0 else next_values[t, i]
        running = rewards[t, i] + gamma * following
        returns[t, i] = running


_gae_scan = ParallelFor(_gae_column, "warpdrive.training.returns.gae")
_returns_scan = ParallelFor(_returns_column, "warpdrive.training.returns.discounted_returns")


def _columns(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` broadcast to ``like`` [T, ...] as a contiguous float32 [T, N] (one column per env and agent)."""
    return x.to(torch.float32).expand_as(like).reshape(like.shape[0], -1).contiguous()


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

    ``delta[t] = r[t] + gamma * next_values[t] - values[t]`` and
    ``A[t] = delta[t] + gamma * lam * (1 - done[t]) * A[t + 1]``, with ``A[T] = 0``.

    One kernel launch: a backward scan per (env, agent) column, on the device of the inputs.

    Args:
        rewards, values, next_values: [T, E, A] (``next_values`` from :func:`next_state_values`).
        dones: [T, E] or [T, E, A] bool, terminated or truncated: the recursion stops there.

    Returns:
        ``(advantages, returns)``, both [T, E, A] float32; ``returns = advantages + values`` (the critic's
        target).
    """
    not_done = _columns(~_per_agent(dones, values), values)
    r, v, nv = (_columns(x, values) for x in (rewards, values, next_values))
    advantages = torch.empty_like(r)
    _gae_scan(r.shape[1], (r, v, nv, not_done, np.float32(gamma * lam), np.float32(gamma), advantages))
    advantages = advantages.view(values.shape)
    return advantages, advantages + values


def discounted_returns(rewards: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """n-step discounted returns, bootstrapped at the end of the rollout and at truncations.

    ``R[t] = r[t] + gamma * (next_values[t] if done[t] or t = T - 1 else R[t + 1])``: every step looks
    ahead to the end of its episode or of the rollout, whichever comes first (A2C's targets). One kernel
    launch, as :func:`gae`.

    Args:
        rewards, next_values: [T, E, A] (``next_values`` from :func:`next_state_values`).
        dones: [T, E] or [T, E, A] bool.

    Returns:
        [T, E, A] float32 returns.
    """
    not_done = _columns(~_per_agent(dones, rewards), rewards)
    r, nv = _columns(rewards, rewards), _columns(next_values, rewards)
    returns = torch.empty_like(r)
    _returns_scan(r.shape[1], (r, nv, not_done, np.float32(gamma), returns))
    return returns.view(rewards.shape)


def n_step_returns(rewards: torch.Tensor, dones: torch.Tensor, n: int,
                   gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n-step returns for a replay: each transition's discounted rewards over up to ``n`` steps, stopping after
    the step that ends its episode and at the end of the rollout, and where it stopped.

    ``R[t] = sum_{k < m} gamma^k r[t + k]`` with ``m`` = the fewest of ``n``, the steps to the end of the rollout
    (``T - t``) and to the end of the episode (``k + 1`` for the first ``done[t + k]``). The transition then
    bootstraps from the state step ``t + m - 1`` reached, discounted by ``gamma^m`` (zero if that step
    terminated). ``n = 1`` gives the rewards themselves.

    Args:
        rewards: [T, E, A]. dones: [T, E] bool (terminated or truncated).

    Returns:
        ``R`` [T, E, A] float32 and ``last`` [T, E] int64, the step ``t + m - 1`` each transition stops at.
    """
    steps, envs = dones.shape
    t = torch.arange(steps, device=dones.device).unsqueeze(1).expand(steps, envs)
    e = torch.arange(envs, device=dones.device).unsqueeze(0).expand(steps, envs)
    total = torch.zeros_like(rewards)
    last = t
    going = torch.ones_like(dones)  # no episode end before step t + k
    for k in range(n):
        at = t + k
        taken = going & (at < steps)
        at = at.clamp(max=steps - 1)
        total = total + torch.where(taken.unsqueeze(-1), rewards[at, e] * np.float32(gamma**k), 0.0)
        last = torch.where(taken, at, last)
        going = taken & ~dones[at, e]
    return total, last
