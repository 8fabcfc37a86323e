"""Evaluation: one episode per env replica, with the trained policies or uniformly random actions."""

from __future__ import annotations

import torch

from warpdrive.training.trainer import Trainer

__all__ = ["evaluate"]


def evaluate(trainer: Trainer, *, random_actions: bool = False, deterministic: bool = False,
             seed: int | None = None) -> dict[str, float]:
    """Reset every replica of ``trainer.env`` and run each one for exactly one episode.

    Counting each replica's first episode only (rather than whichever episodes end first) keeps short
    episodes from being over-represented.

    Args:
        random_actions: act uniformly at random (the baseline) instead of with the policies.
        deterministic: the policies' most likely actions instead of samples.
        seed: env seed for the reset (default: the trainer's).

    Returns:
        ``return/<group>`` (mean over replicas of the group's mean agent return), ``episode_length`` and
        ``env/<metric>`` means, and ``episodes``.
    """
    env = trainer.env
    env.reset(seed=trainer.config.seed if seed is None else seed)
    num_envs = env.num_envs
    returns = torch.zeros_like(env.store["final_return"])
    lengths = torch.zeros(num_envs, device=returns.device)
    metrics = torch.zeros_like(env.store["final_metrics"])
    active = torch.ones(num_envs, dtype=torch.bool, device=returns.device)
    with torch.no_grad():
        for _ in range(env.config.episode_length):
            if random_actions:
                env.sample_actions()
            else:
                trainer.act(deterministic=deterministic)
            _, _, _, _, info = env.step()
            ended = info["done"] & active
            returns = torch.where(ended[:, None], env.store["final_return"], returns)
            lengths = torch.where(ended, env.store["final_length"].float(), lengths)
            metrics = torch.where(ended[:, None], env.store["final_metrics"], metrics)
            active &= ~info["done"]
            if not bool(active.any()):
                break
    result: dict[str, float] = {"episodes": float(num_envs)}
    for group, ids in trainer.groups.items():
        result[f"return/{group}"] = float(returns[:, ids].mean())
    result["episode_length"] = float(lengths.mean())
    for j, name in enumerate(trainer.metric_names):
        result[f"env/{name}"] = float(metrics[:, j].mean())
    return result
