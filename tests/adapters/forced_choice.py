"""A tiny env with an action mask, for the adapters' tests (importable: pytest puts this folder on sys.path).

Three agents; head 0 (3 choices) allows only ``t % 3``; with ``two_heads``, head 1 (2 choices) allows only
``agent % 2``. The env's validation refuses any other action. Reward 1 per step; episodes last 5 steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive import ArraySpec, Env, kernel_function
from warpdrive.core.compile import per_agent


@kernel_function
def _write_mask(env, agent, p, s):
    for j in range(3):
        s.action_mask[env, agent, j] = j == s.t[env] % 3
    if p.two_heads:
        for j in range(2):
            s.action_mask[env, agent, 3 + j] = j == agent % 2
    s.obs[env, agent, 0] = np.float32(s.t[env] % 3)


@kernel_function
def _reward(env, agent, p, s):
    s.rewards[env, agent] = np.float32(1.0)


@dataclass(frozen=True)
class ForcedConfig:
    two_heads: bool = False
    episode_length: int = 5

    def validate(self) -> None:
        pass


class ForcedChoice(Env):
    name = "forced_choice"
    Config = ForcedConfig
    step_phases = (per_agent(_reward, _write_mask),)
    reset_phases = (per_agent(_write_mask),)

    @classmethod
    def num_agents_of(cls, config: ForcedConfig) -> int:
        return 3

    def single_action_space(self) -> gym.spaces.Space:
        return gym.spaces.MultiDiscrete([3, 2]) if self.config.two_heads else gym.spaces.Discrete(3)

    def observation_size(self) -> int:
        return 1

    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("action_mask", "agent", torch.bool, "action_mask", (5 if self.config.two_heads else 3,))]

    def kernel_params(self) -> dict[str, Any]:
        return {"two_heads": self.config.two_heads}
