"""MountainCar: rock an underpowered car out of a valley up to a flag; Gymnasium's MountainCar-v0, batched.

Semantics in full: docs/envs/classic_control.md.

Semantics: ``gymnasium.envs.classic_control.mountain_car.MountainCarEnv`` (Gymnasium 1.x) under the
MountainCar-v0 time limit. One agent per env; the track's height is ``sin(3 x)``.

- Action: Discrete(3): 0 accelerates left, 1 does nothing, 2 accelerates right.
- Dynamics: ``velocity += (action - 1) * 0.001 - 0.0025 cos(3 position)``, clipped to ``[-0.07, 0.07]``;
  ``position += velocity``, clipped to ``[-1.2, 0.6]``; at the left wall a leftward velocity becomes 0.
- Observation (float32, size 2): ``[position, velocity]``.
- Reward: -1 every step, the terminating one included.
- Terminated when ``position >= 0.5`` and ``velocity >= goal_velocity`` (0); truncated after
  ``episode_length`` (200) steps. Metric ``goal_reached``: 1 for an episode that reached the goal.
- Start: position uniform in ``[-0.6, -0.4)``, velocity 0 (``start="random"``), or the config's
  ``initial_state`` (``start="identical"``).

Precision: Gymnasium keeps this env's state in float64 (its step writes Python and NumPy float64 scalars);
so does this one, with Gymnasium's constants and operation order, so that CPU results match Gymnasium's
to the last bit (tests/envs/test_mountain_car.py). The observation is the state rounded to float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from warpdrive.core.compile import per_env
from warpdrive.core.device import kernel_function
from warpdrive.core.exactmath import cos64
from warpdrive.core.random import uniform
from warpdrive.core.typed import ConfigError, bounded, check_length, join_path
from warpdrive.envs.classic_control import ClassicControlEnv

# Gymnasium's constants (MountainCarContinuous-v0 shares all but the force and the goal)
MIN_POSITION = -1.2
MAX_POSITION = 0.6
MAX_SPEED = 0.07
GOAL_POSITION = 0.5
FORCE = 0.001
GRAVITY = 0.0025
START_LOW = -0.6  # random starts: position uniform in [START_LOW, START_HIGH), velocity 0
START_HIGH = -0.4
STATE_SIZE = 2


@dataclass(frozen=True)
class MountainCarConfig:
    """Parameters of MountainCar (defaults: Gymnasium's MountainCar-v0)."""

    episode_length: int = bounded(200, ge=1)
    """Episodes are truncated after this many steps."""
    goal_velocity: float = bounded(0.0, ge=-MAX_SPEED, le=MAX_SPEED)
    """Gymnasium's ``goal_velocity``: the goal counts only at a velocity at least this high (within the car's
    speed limit)."""
    initial_state: tuple[float, ...] | None = None
    """``(position, velocity)`` every episode starts from with ``start="identical"`` (default: ``(-0.5, 0)``,
    the valley's bottom at rest); must be None with ``start="random"``."""

    def validate(self, path: str = "") -> None:
        check_length(path, "initial_state", self.initial_state, STATE_SIZE, "(position, velocity)")
        if self.initial_state is not None:
            position, velocity = self.initial_state
            where = join_path(path, "initial_state")
            if not MIN_POSITION <= position <= MAX_POSITION:
                raise ConfigError(join_path(where, 0), f"expected a position in [{MIN_POSITION}, {MAX_POSITION}], "
                                                       f"got {position!r}")
            if not -MAX_SPEED <= velocity <= MAX_SPEED:
                raise ConfigError(join_path(where, 1), f"expected a velocity in [-{MAX_SPEED}, {MAX_SPEED}] (the "
                                                       f"car's speed limit), got {velocity!r}")


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU); s.state[env] is float64 [position, velocity]


@kernel_function
def _integrate(env, p, s):
    # Gymnasium's MountainCarEnv.step, term for term and in the same order
    position = s.state[env, 0]
    velocity = s.state[env, 1]
    push = (s.actions[env, 0, 0] - 1) * FORCE
    velocity = velocity + (push + cos64(3 * position) * (-GRAVITY))
    velocity = min(max(velocity, -MAX_SPEED), MAX_SPEED)
    position = position + velocity
    position = min(max(position, MIN_POSITION), MAX_POSITION)
    if position == MIN_POSITION and velocity < 0:  # an inelastic wall
        velocity = 0.0
    s.state[env, 0] = position
    s.state[env, 1] = velocity
    terminated = position >= GOAL_POSITION and velocity >= p.goal_velocity
    s.terminated[env] = terminated
    s.metrics[env, 0] = np.float32(1.0) if terminated else np.float32(0.0)
    s.rewards[env, 0] = np.float32(-1.0)


@kernel_function
def observe(env, p, s):
    """``obs[env, 0]`` = the state rounded to float32 (MountainCarContinuous too)."""
    for k in range(STATE_SIZE):
        s.obs[env, 0, k] = np.float32(s.state[env, k])


@kernel_function
def place(env, p, s):
    """Gymnasium's reset distribution, or the identical start (MountainCarContinuous too)."""
    if p.random_start:
        u = np.float64(uniform(p.seed, env, s.episode[env], 0))
        s.state[env, 0] = START_LOW + (START_HIGH - START_LOW) * u
        s.state[env, 1] = 0.0
    else:
        s.state[env, 0] = s.start[0]
        s.state[env, 1] = s.start[1]


class MountainCar(ClassicControlEnv):
    """Gymnasium's MountainCar-v0 as a batch of ``num_envs`` replicas; see the module docstring.

    Arrays beyond the standard ones: ``state`` [envs, 2] float64 ``(position, velocity)``, and ``start`` [2]
    float64, the identical start.
    """

    name = "mountain_car"
    #: where the flag is drawn
    goal_position: ClassVar[float] = GOAL_POSITION
    state_size = STATE_SIZE
    default_start = (-0.5, 0.0)
    Config = MountainCarConfig

    step_phases = (per_env(_integrate), per_env(observe))
    reset_phases = (per_env(place), per_env(observe))

    def single_action_space(self) -> gym.spaces.Space:
        return gym.spaces.Discrete(3)

    def observation_size(self) -> int:
        return STATE_SIZE

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32),
                              np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32), dtype=np.float32)

    def metric_names(self) -> list[str]:
        return ["goal_reached"]

    def kernel_params(self) -> dict[str, np.float64]:
        # float64, as Gymnasium compares with it (the core would round a Python float to float32)
        return {"goal_velocity": np.float64(self.config.goal_velocity)}

    def draw(self, axes: Any, index: int) -> None:
        """The track (height ``sin(3 x)``), the flag at the goal and the car."""
        position = float(self.store["state"][index, 0])
        xs = np.linspace(MIN_POSITION, MAX_POSITION, 200)
        axes.plot(xs, np.sin(3 * xs), color="grey")
        goal = type(self).goal_position
        axes.plot([goal, goal], [math.sin(3 * goal), math.sin(3 * goal) + 0.3], color="tab:green", linewidth=2)
        axes.scatter([position], [math.sin(3 * position)], s=150, color="tab:blue", zorder=3)
        axes.set_xlim(MIN_POSITION, MAX_POSITION)
        axes.set_ylim(-1.2, 1.4)
