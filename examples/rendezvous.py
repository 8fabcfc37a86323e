"""Rendezvous: the env written in the README's tutorial, in one file.

Agents on a square of side L move by one of five discrete actions (stay, +x, -x, +y, -y, each of length
``step_size``). Every agent is rewarded with minus its distance to the centre of mass of all agents of its
env, so the group learns to meet. An episode ends (terminated) when every agent is within ``radius`` of the
centre, or is truncated after ``episode_length`` steps.

Observation of an agent (4 floats): [own x / L, own y / L, centre x / L, centre y / L].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive import ArraySpec, Env, atomic_add, kernel_function, per_agent, per_env
from warpdrive.core.random import uniform
from warpdrive.core.typed import bounded, bounded_magnitude

MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32)


@dataclass(frozen=True)
class RendezvousConfig:
    """Each field's type and limits are checked when the env is built; int, float and bool fields reach the
    kernels as ``p.<name>`` (``p.size``, ...)."""

    num_agents: int = bounded(8, ge=2)
    """Agents per env."""
    size: float = bounded_magnitude(10.0, gt=0)
    """L: side of the square."""
    step_size: float = bounded_magnitude(0.5, gt=0)
    """Distance an agent moves per step."""
    radius: float = bounded_magnitude(1.0, gt=0)
    """The episode is won when every agent is this close to the centre."""
    episode_length: int = bounded(100, ge=1)
    """Steps before truncation."""


# --- the logic: kernel functions, each run for one agent (or once per env) -------------------------------


@kernel_function
def move(env, agent, p, s):
    action = s.actions[env, agent, 0]
    x = s.x[env, agent] + p.step_size * s.moves[action, 0]
    y = s.y[env, agent] + p.step_size * s.moves[action, 1]
    s.x[env, agent] = min(max(x, np.float32(0.0)), p.size)
    s.y[env, agent] = min(max(y, np.float32(0.0)), p.size)


@kernel_function
def sum_centre(env, p, s):
    # once per env, in agent order: float sums depend on their order, so atomics (whose order the GPU's threads
    # decide) would make the CPU and the GPU differ in the last bits
    x = np.float32(0.0)
    y = np.float32(0.0)
    for agent in range(p.num_agents):
        x += s.x[env, agent] / np.float32(p.num_agents)
        y += s.y[env, agent] / np.float32(p.num_agents)
    s.centre[env, 0] = x
    s.centre[env, 1] = y
    s.far[env] = 0  # counted by reward_and_observe


@kernel_function
def reward_and_observe(env, agent, p, s):
    dx = s.x[env, agent] - s.centre[env, 0]
    dy = s.y[env, agent] - s.centre[env, 1]
    distance = math.sqrt(dx * dx + dy * dy)
    s.rewards[env, agent] = -distance
    if distance > p.radius:
        atomic_add(s.far, env, 1)
    observe(env, agent, p, s)


@kernel_function
def observe(env, agent, p, s):
    s.obs[env, agent, 0] = s.x[env, agent] / p.size
    s.obs[env, agent, 1] = s.y[env, agent] / p.size
    s.obs[env, agent, 2] = s.centre[env, 0] / p.size
    s.obs[env, agent, 3] = s.centre[env, 1] / p.size


@kernel_function
def check_meeting(env, p, s):
    s.terminated[env] = s.far[env] == 0


@kernel_function
def place(env, agent, p, s):
    # counter-based random numbers: the same on the CPU and the GPU, different per env and episode
    s.x[env, agent] = p.size * uniform(p.seed, env, s.episode[env], 2 * agent)
    s.y[env, agent] = p.size * uniform(p.seed, env, s.episode[env], 2 * agent + 1)


class Rendezvous(Env):
    """Agents meet at their centre of mass; see the module docstring."""

    name = "rendezvous"
    Config = RendezvousConfig
    start_modes = ("random",)  # every episode starts from fresh random positions

    # Between two phases every agent of an env sees the others' results (a barrier on the GPU).
    step_phases = (
        per_agent(move),
        per_env(sum_centre),
        per_agent(reward_and_observe),
        per_env(check_meeting),
    )
    reset_phases = (
        per_agent(place),
        per_env(sum_centre),
        per_agent(observe),
    )

    @classmethod
    def num_agents_of(cls, config: RendezvousConfig) -> int:
        return config.num_agents

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(len(MOVES))

    def observation_size(self) -> int:
        return 4

    def state_arrays(self) -> list[ArraySpec]:
        return [
            ArraySpec("x", "agent", torch.float32),
            ArraySpec("y", "agent", torch.float32),
            ArraySpec("centre", "env", torch.float32, "scratch", (2,)),
            ArraySpec("far", "env", torch.int32, "scratch"),
            ArraySpec("moves", "global", torch.float32, "constant", MOVES.shape),
        ]

    def start_state(self) -> dict[str, np.ndarray]:
        return {"moves": MOVES}

    def draw(self, axes: Any, index: int) -> None:
        """Optional: what ``env.render()`` and ``warpdrive render`` show (default: the returns so far)."""
        from warpdrive.core.render import draw_agents_on_plane

        draw_agents_on_plane(axes, self, self.store["x"][index].cpu().numpy(),
                             self.store["y"][index].cpu().numpy(),
                             self.config.size)
