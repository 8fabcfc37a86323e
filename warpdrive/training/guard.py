"""The non-finite guard: a NaN or inf in what a policy saw or learned stops the run.

Once per iteration, after the update, :func:`finite_flags` reduces on the device, per trainable policy,
whether its rollout's observations and rewards and its weights after the update are all finite: one
0-dim bool tensor each. They reach the host in the iteration's single metrics transfer
(:meth:`~warpdrive.training.metrics.IterationMetrics.collect`), so the guard adds no host sync, and its
cost is a handful of tiny device reductions per iteration: one over the rollout's observations, one over
its rewards, one per weight tensor; nothing per rollout step. The losses and the gradient norms
(``grad_norm``; ``critic_grad_norm``, ``actor_grad_norm``, ... of the algorithms that step several
networks) are among the metrics already, device scalars reduced with the update and brought to the host in
the same transfer. :func:`check_finite` then raises :class:`NonFiniteError`, before the iteration is
logged or checkpointed, so the last checkpoint keeps finite weights.
"""

from __future__ import annotations

import math

import torch

from warpdrive.training.policies import Policy

__all__ = ["NonFiniteError", "check_finite", "finite_flags"]


class NonFiniteError(RuntimeError):
    """A policy's observations, rewards, losses, gradient norms or weights held a NaN or inf.

    Attributes:
        iteration: the iteration (from 1, as logged) whose rollout or update produced it.
        policy: the policy's name.
        tensors: what was not finite, in the order observations, rewards, losses and gradient norms (metric
            names, in the metrics' order), weights.
    """

    def __init__(self, iteration: int, policy: str, tensors: list[str]) -> None:
        self.iteration, self.policy, self.tensors = iteration, policy, tensors
        super().__init__(f"non-finite {', '.join(tensors)} (NaN or inf) in policy {policy!r} at iteration "
                         f"{iteration}; the run stopped and nothing of this iteration was saved (the last "
                         f"checkpoint is the last good one). Lower the learning rate or check the env's "
                         f"observations and rewards; guard_nonfinite=false trains on regardless")


def finite_flags(policies: list[Policy]) -> dict[str, torch.Tensor]:
    """``"<policy>/<tensor>"`` -> 0-dim bool device tensor, True where every element is finite, for each
    trainable policy: ``observations`` (the rollout's, ``last_obs`` included), ``rewards`` and ``weights``
    (every floating tensor of its networks, after the update). Nothing is synced with the host."""
    flags: dict[str, torch.Tensor] = {}
    for policy in policies:
        storage = policy.storage
        if storage is None:
            continue
        obs_finite = torch.isfinite(storage.obs).all() & torch.isfinite(storage.last_obs).all()
        flags[f"{policy.name}/observations"] = obs_finite
        flags[f"{policy.name}/rewards"] = torch.isfinite(storage.rewards).all()
        weights = [torch.isfinite(t).all() for module in policy.algorithm.modules().values()
                   for t in module.state_dict().values() if t.is_floating_point()]
        if weights:
            flags[f"{policy.name}/weights"] = torch.stack(weights).all()
    return flags


def _checked(metric: str) -> bool:
    """Whether the guard requires a policy's metric (its name after ``losses/<policy>/``) to be finite: the
    losses and the gradient norms."""
    return metric.endswith("_loss") or metric == "grad_norm" or metric.endswith("_grad_norm")


def check_finite(iteration: int, policies: list[Policy], flags: dict[str, bool], metrics: dict[str, float]) -> None:
    """Raise :class:`NonFiniteError` for the first policy with a non-finite tensor.

    Args:
        iteration: the iteration just done, counted from 1.
        flags: :func:`finite_flags`' result as host bools.
        metrics: the iteration's metrics; of a policy's ``losses/<policy>/...`` entries, the losses
            (``*_loss``) and gradient norms (``grad_norm``, ``*_grad_norm``) must be finite (others, such as
            ``explained_variance``, may be NaN by definition).
    """
    for policy in policies:
        prefix = f"losses/{policy.name}/"
        bad = [name for name in ("observations", "rewards") if not flags.get(f"{policy.name}/{name}", True)]
        bad += [key[len(prefix):] for key, value in metrics.items()
                if key.startswith(prefix) and _checked(key[len(prefix):]) and not math.isfinite(value)]
        if not flags.get(f"{policy.name}/weights", True):
            bad.append("weights")
        if bad:
            raise NonFiniteError(iteration, policy.name, bad)
