"""Tag on a grid: taggers chase one runner over integer cells.

Semantics in full: docs/envs/tag_gridworld.md.

Semantics: the reference WarpDrive's Tag-gridworld (rl-warp-drive 2.7.1, CPU version), which
``tests/envs/test_tag_gridworld.py`` steps beside this env.
Agents ``0 .. N-2`` are taggers, agent ``N-1`` is the runner. Positions are integers in ``[0, L]``.
Actions: Discrete(5): 0 stay, 1 +x, 2 -x, 3 +y, 4 -y.

Observations (float32):
- full, size ``4N + 1``: ``[x_0..x_{N-1}]/L, [y_0..y_{N-1}]/L, [type_0..type_{N-1}], one-hot(self), t/T``
  (type 1 = runner);
- partial, size 6: ``[own x/L, own y/L, target x/L, target y/L, is_runner, t/T]``; a tagger's target is the
  runner, the runner's target the nearest tagger by squared distance (lowest id on ties).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.compile import per_agent, per_env
from warpdrive.core.device import atomic_min, kernel_function
from warpdrive.core.env import Env
from warpdrive.core.random import randint
from warpdrive.core.store import ArraySpec
from warpdrive.core.typed import ConfigError, bounded, bounded_magnitude, join_path

# (dx, dy) of each action
MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.int32)
#: the largest grid_length whose squared distances fit the 31 bits the nearest-tagger key keeps for them
MAX_GRID_LENGTH = 32767


@dataclass(frozen=True)
class TagGridWorldConfig:
    """Parameters of Tag-gridworld (defaults: the reference's).

    The reward parameters may have either sign (as in the reference) and a magnitude up to
    :data:`~warpdrive.core.typed.MAGNITUDE_LIMIT` (1e12), so that every reward and return the kernels sum
    stays finite in float32 (:func:`~warpdrive.core.typed.bounded_magnitude` gives the rule).
    """

    num_taggers: int = bounded(10, ge=1)
    """Number of taggers; there is always one runner."""
    grid_length: int = bounded(10, ge=2, le=MAX_GRID_LENGTH)
    """L: positions are integers in [0, L] on each axis."""
    episode_length: int = bounded(100, ge=1)
    """T: the episode is truncated after T steps."""
    wall_hit_penalty: float = bounded_magnitude(0.1)
    """Subtracted from an agent's reward when its move is clipped at the border."""
    tag_reward_for_tagger: float = bounded_magnitude(10.0)
    """Every tagger's reward in the step the runner is tagged."""
    tag_penalty_for_runner: float = bounded_magnitude(2.0)
    """Subtracted from the runner's reward when it is tagged."""
    step_cost_for_tagger: float = bounded_magnitude(0.01)
    """Each step without a tag: taggers lose this, the runner gains it."""
    use_full_observation: bool = True
    """Full (4N + 1 values) or partial (6 values) observation."""
    starting_location_x: tuple[int, ...] | None = None
    """Identical start: x of every agent (N values); default taggers at int(L/2), the runner at 0."""
    starting_location_y: tuple[int, ...] | None = None
    """Identical start: y of every agent (N values)."""

    def validate(self, path: str = "") -> None:
        n = self.num_taggers + 1
        for name in ("starting_location_x", "starting_location_y"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != n:
                raise ConfigError(join_path(path, name), f"expected one value per agent ({n}), got {len(value)}")
            if any(not (0 <= v <= self.grid_length) for v in value):
                raise ConfigError(join_path(path, name), f"expected values in [0, grid_length={self.grid_length}], "
                                                         f"got {list(value)}")
        if (self.starting_location_x is None) != (self.starting_location_y is None):
            raise ConfigError(join_path(path, "starting_location_y" if self.starting_location_y is None
                                        else "starting_location_x"),
                              "give both starting_location_x and starting_location_y, or neither")


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU)


_NO_TAGGER = np.int64(0x7FFFFFFFFFFFFFFF)
_SHIFT = np.int64(32)
_ID_MASK = np.int64(0xFFFFFFFF)
@kernel_function
def _begin_step(env, p, s):
    s.tagged[env] = False
    s.nearest_tagger_key[env] = _NO_TAGGER


@kernel_function
def _begin_episode(env, p, s):
    s.nearest_tagger_key[env] = _NO_TAGGER


@kernel_function
def _move(env, agent, p, s):
    action = s.actions[env, agent, 0]
    x = s.x[env, agent] + s.moves[action, 0]
    y = s.y[env, agent] + s.moves[action, 1]
    clipped_x = min(max(x, 0), p.grid_length)
    clipped_y = min(max(y, 0), p.grid_length)
    s.x[env, agent] = clipped_x
    s.y[env, agent] = clipped_y
    hit_wall = clipped_x != x or clipped_y != y
    s.rewards[env, agent] = -p.wall_hit_penalty if hit_wall else np.float32(0.0)


@kernel_function
def _check_tag(env, agent, p, s):
    runner = p.num_agents - 1
    if agent != runner and s.x[env, agent] == s.x[env, runner] and s.y[env, agent] == s.y[env, runner]:
        s.tagged[env] = True  # every writer writes the same value


@kernel_function
def _reward(env, agent, p, s):
    is_runner = agent == p.num_agents - 1
    if s.tagged[env]:
        s.rewards[env, agent] += -p.tag_penalty_for_runner if is_runner else p.tag_reward_for_tagger
    else:
        s.rewards[env, agent] += p.step_cost_for_tagger if is_runner else -p.step_cost_for_tagger


@kernel_function
def _offer_to_runner(env, agent, p, s):
    """Partial observation: each tagger offers itself as the runner's nearest, keyed by (squared distance,
    id), so that the minimum over all offers is the nearest tagger with the lowest id on ties. An integer
    atomic minimum: every order of the offers gives the same result."""
    runner = p.num_agents - 1
    if not p.use_full_observation and agent != runner:
        dx = np.int64(s.x[env, agent] - s.x[env, runner])
        dy = np.int64(s.y[env, agent] - s.y[env, runner])
        atomic_min(s.nearest_tagger_key, env, ((dx * dx + dy * dy) << _SHIFT) | np.int64(agent))


@kernel_function
def _observe(env, agent, p, s):
    n = p.num_agents
    length = np.float32(p.grid_length)
    time = np.float32(s.t[env]) / np.float32(p.episode_length)
    obs = s.obs
    if p.use_full_observation:
        for j in range(n):
            obs[env, agent, j] = np.float32(s.x[env, j]) / length
            obs[env, agent, n + j] = np.float32(s.y[env, j]) / length
            obs[env, agent, 2 * n + j] = np.float32(1.0) if j == n - 1 else np.float32(0.0)
            obs[env, agent, 3 * n + j] = np.float32(1.0) if j == agent else np.float32(0.0)
        obs[env, agent, 4 * n] = time
    else:
        runner = n - 1
        target = runner if agent != runner else np.int64(s.nearest_tagger_key[env] & _ID_MASK)
        obs[env, agent, 0] = np.float32(s.x[env, agent]) / length
        obs[env, agent, 1] = np.float32(s.y[env, agent]) / length
        obs[env, agent, 2] = np.float32(s.x[env, target]) / length
        obs[env, agent, 3] = np.float32(s.y[env, target]) / length
        obs[env, agent, 4] = np.float32(1.0) if agent == runner else np.float32(0.0)
        obs[env, agent, 5] = time


@kernel_function
def _end_step(env, p, s):
    s.terminated[env] = s.tagged[env]


@kernel_function
def _place(env, agent, p, s):
    if p.random_start and agent != p.num_agents - 1:
        # taggers anywhere in {1, .., L-1}; the runner keeps its start (the reference's random variant)
        s.x[env, agent] = 1 + randint(p.seed, env, s.episode[env], 2 * agent, p.grid_length - 1)
        s.y[env, agent] = 1 + randint(p.seed, env, s.episode[env], 2 * agent + 1, p.grid_length - 1)
    else:
        s.x[env, agent] = s.start_x[agent]
        s.y[env, agent] = s.start_y[agent]


class TagGridWorld(Env):
    """Tag on an integer grid: ``num_taggers`` taggers and one runner; see the module docstring."""

    name = "tag_gridworld"
    Config = TagGridWorldConfig
    code_variants = ({"use_full_observation": False},)  # the partial observation compiles other code
    # 70 registers let 3 blocks of 256 threads reside per multiprocessor, 64 let 4: measured on an H200 at 1000
    # agents x 2000 envs, +8% (benchmarks/RESULTS.md)
    max_registers = 64

    step_phases = (
        per_env(_begin_step),
        per_agent(_move),
        per_agent(_check_tag, _offer_to_runner),
        per_agent(_reward, _observe),  # both read only this agent's reward and others' positions
        per_env(_end_step),
    )
    reset_phases = (
        per_env(_begin_episode),
        per_agent(_place),
        per_agent(_offer_to_runner),
        per_agent(_observe),
    )

    @classmethod
    def num_agents_of(cls, config: TagGridWorldConfig) -> int:
        return config.num_taggers + 1

    @classmethod
    def config_for_agents(cls, num_agents: int) -> dict[str, Any] | None:
        return {"num_taggers": num_agents - 1} if num_agents >= 2 else None

    def groups(self) -> dict[str, list[int]]:
        return {"taggers": list(range(self.num_agents - 1)), "runner": [self.num_agents - 1]}

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(len(MOVES))

    def observation_size(self) -> int:
        return 4 * self.num_agents + 1 if self.config.use_full_observation else 6

    def state_arrays(self) -> list[ArraySpec]:
        n = self.num_agents
        return [
            ArraySpec("x", "agent", torch.int32),
            ArraySpec("y", "agent", torch.int32),
            ArraySpec("tagged", "env", torch.bool),
            ArraySpec("nearest_tagger_key", "env", torch.int64, "scratch"),
            ArraySpec("start_x", "global", torch.int32, "constant", (n,)),
            ArraySpec("start_y", "global", torch.int32, "constant", (n,)),
            ArraySpec("moves", "global", torch.int32, "constant", MOVES.shape),
        ]

    def start_state(self) -> dict[str, np.ndarray]:
        c, n = self.config, self.num_agents
        if c.starting_location_x is None:
            x = np.full(n, int(0.5 * c.grid_length), np.int32)
            y = x.copy()
            x[-1] = y[-1] = 0
        else:
            x = np.asarray(c.starting_location_x, np.int32)
            y = np.asarray(c.starting_location_y, np.int32)
        return {"start_x": x, "start_y": y, "moves": MOVES}

    def draw(self, axes: Any, index: int) -> None:
        """Agents on the grid, coloured by group; a star on the runner in the step it is tagged."""
        from warpdrive.core.render import draw_agents_on_plane

        s = self.store
        marked = self.num_agents - 1 if bool(s["tagged"][index]) else None
        draw_agents_on_plane(axes, self, s["x"][index].cpu().numpy(), s["y"][index].cpu().numpy(),
                             self.config.grid_length, grid=True, marked=marked)
