"""A task that needs memory, written as users write envs (loaded by path: ``tests/memory_env.py:MemoryCue``).

Each agent is shown a cue, one of ``num_cues``, in the first observation of an episode only; every later
observation hides it. At the episode's last step (step ``episode_length``) the agent is rewarded 1 if its
action names its cue, 0 otherwise; every other step is worth 0 whatever the action. A feed-forward policy sees
no cue when it matters and can do no better than guess (expected return ``1 / num_cues``); a recurrent one can
carry the cue to the end (return 1).

Observation of an agent (``num_cues + 1`` floats): [one-hot cue (all zero after the first step), t / L].
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from warpdrive import ArraySpec, Env, atomic_add, kernel_function, per_agent, per_env
from warpdrive.core.random import randint
from warpdrive.core.typed import bounded


@dataclass(frozen=True)
class MemoryCueConfig:
    num_agents: int = bounded(1, ge=1)
    """Agents per env, each with a cue of its own."""
    num_cues: int = bounded(4, ge=2)
    """How many cues there are (and actions)."""
    episode_length: int = bounded(8, ge=2)
    """L: the step whose action is scored (the episode then terminates)."""


@kernel_function
def score(env, agent, p, s):
    last = s.t[env] >= p.episode_length  # t already counts this step
    correct = last and s.actions[env, agent, 0] == s.cue[env, agent]
    s.rewards[env, agent] = np.float32(1.0) if correct else np.float32(0.0)
    if correct:  # the same addend from every agent: the sum does not depend on their order
        atomic_add(s.metrics, (env, 0), np.float32(1.0) / np.float32(p.num_agents))
    observe(env, agent, p, s)


@kernel_function
def observe(env, agent, p, s):
    for j in range(p.num_cues):
        shown = s.t[env] == 0 and s.cue[env, agent] == j
        s.obs[env, agent, j] = np.float32(1.0) if shown else np.float32(0.0)
    s.obs[env, agent, p.num_cues] = np.float32(s.t[env]) / np.float32(p.episode_length)


@kernel_function
def end_at_the_last_step(env, p, s):
    s.terminated[env] = s.t[env] >= p.episode_length


@kernel_function
def draw_cue(env, agent, p, s):
    s.cue[env, agent] = randint(p.seed, env, s.episode[env], agent, p.num_cues)
    observe(env, agent, p, s)


class MemoryCue(Env):
    """Remember the first observation's cue until the last step; see the module docstring."""

    name = "memory_cue"
    Config = MemoryCueConfig
    start_modes = ("random",)

    step_phases = (per_agent(score), per_env(end_at_the_last_step))
    reset_phases = (per_agent(draw_cue),)

    @classmethod
    def num_agents_of(cls, config: MemoryCueConfig) -> int:
        return config.num_agents

    @classmethod
    def config_for_agents(cls, num_agents: int) -> dict[str, int]:
        return {"num_agents": num_agents}

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(self.config.num_cues)

    def observation_size(self) -> int:
        return self.config.num_cues + 1

    def metric_names(self) -> list[str]:
        return ["correct"]

    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("cue", "agent", torch.int32)]
