"""A fixed, uniformly random policy: a baseline, or an opponent that does not learn."""

from __future__ import annotations

import torch

from warpdrive.core.sampling import uniform_actions
from warpdrive.training.algorithms.base import Act, Algorithm, register_algorithm
from warpdrive.training.storage import RolloutStorage

__all__ = ["RandomPolicy"]


@register_algorithm
class RandomPolicy(Algorithm):
    """Uniformly random actions from the action space (among the allowed ones where the env masks actions),
    drawn on the device; never learns."""

    name = "random"
    trainable = False

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        out = torch.empty((*obs.shape[:-1], self.action_size), dtype=self.env_action_dtype, device=obs.device)
        actions = uniform_actions(self.action_space, out, self.generator, mask=mask)
        return Act(actions, actions)

    def update(self, storage: RolloutStorage, progress: float) -> dict[str, torch.Tensor | float]:
        return {}
