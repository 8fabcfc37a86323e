"""An iteration's metrics, brought to the host in one transfer.

Names (stable): ``charts/episodic_return/<group>``, ``charts/episodic_length``, ``charts/episodes``,
``charts/SPS`` (env-steps per second, rollout + update), ``env/<metric>`` (the env's per-episode
statistics), ``losses/<policy>/<name>`` (``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``,
``clipfrac``, ``explained_variance``, ...), ``time/rollout_s``, ``time/update_s``. Episode statistics cover
episodes that finished during the iteration (summed by the env's step kernel itself,
:meth:`~warpdrive.core.env.Env.episode_totals`); they are absent when none did.

In a multi-process run (:mod:`~warpdrive.training.distributed`) the episode statistics are summed over the
ranks before they are divided (the means are over every rank's episodes), the losses are averaged over the
ranks, ``charts/SPS`` counts every rank's env-steps, and the times are rank 0's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from warpdrive.core.env import Env

if TYPE_CHECKING:
    from warpdrive.training.distributed import Ranks

__all__ = ["IterationMetrics", "metric_name"]


def metric_name(key: str) -> str:
    """Loss-dict key -> metric name: ``loss_policy`` -> ``policy_loss``; other keys stay as they are."""
    return f"{key[5:]}_loss" if key.startswith("loss_") else key


class IterationMetrics:
    """Reduces what an iteration produced (the env's episode sums, the updates' losses) to host floats;
    with ``ranks``, over every rank."""

    def __init__(self, env: Env, ranks: Ranks | None = None) -> None:
        self.env = env
        self.ranks = ranks
        self.groups = env.groups()
        self.metric_names = env.metric_names()
        # a group's episodic return is the mean over its agents of their returns
        self.group_weights = torch.zeros(env.num_agents, len(self.groups), device=env.device)
        for column, ids in enumerate(self.groups.values()):
            self.group_weights[ids, column] = 1.0 / len(ids)

    def collect(self, losses: dict[str, torch.Tensor | float], env_steps: int, rollout_s: float,
                update_s: float, flags: dict[str, torch.Tensor] | None = None
                ) -> tuple[dict[str, float], dict[str, bool]]:
        """This iteration's metrics, with one device -> host transfer; clears the env's episode sums.

        Args:
            losses: ``losses/...`` metrics of the updates (device tensors or floats).
            env_steps: env-steps the iteration consumed (by every rank).
            rollout_s, update_s: wall-clock seconds of the rollout and of the update.
            flags: 0-dim bool device tensors (the non-finite guard's, see
                :func:`~warpdrive.training.guard.finite_flags`), brought to the host in the same transfer.

        Returns:
            ``(metrics, flags)``: the metrics by name, and ``flags`` as host bools.
        """
        flags = flags or {}
        device = self.group_weights.device
        totals = self.env.episode_totals(clear=True)
        group_returns = totals["return"] @ self.group_weights
        stats = [totals["episodes"].view(1), totals["length"].view(1), group_returns, totals["metrics"]]
        losses_1d = [torch.as_tensor(v, dtype=torch.float32, device=device).reshape(1) for v in losses.values()]
        # 1.0 where a tensor was not finite: summed over ranks, nonzero when any rank's was not
        flags_1d = [(~flag).to(torch.float32).reshape(1) for flag in flags.values()]
        values = torch.cat([*stats, *losses_1d, *flags_1d])
        count = values.numel() - len(losses_1d) - len(flags_1d)
        if self.ranks is not None:
            values = self.ranks.reduce_metrics(values, means=slice(count, count + len(losses_1d)))
        host = values.tolist()
        split = len(host) - len(flags_1d)
        host_flags = {name: value == 0.0 for name, value in zip(flags, host[split:], strict=True)}
        host = host[:split]

        metrics: dict[str, float] = {}
        episodes = host[0]
        metrics["charts/episodes"] = episodes
        if episodes > 0:
            for group, total in zip(self.groups, host[2: 2 + len(self.groups)], strict=True):
                metrics[f"charts/episodic_return/{group}"] = total / episodes
            metrics["charts/episodic_length"] = host[1] / episodes
            for name, total in zip(self.metric_names, host[2 + len(self.groups): count], strict=True):
                metrics[f"env/{name}"] = total / episodes
        metrics["charts/SPS"] = env_steps / (rollout_s + update_s)
        metrics["time/rollout_s"] = rollout_s
        metrics["time/update_s"] = update_s
        metrics.update(zip(losses, host[count:], strict=True))
        return metrics, host_flags
