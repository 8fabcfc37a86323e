"""MountainCarContinuous: MountainCar with a continuous, costly throttle; Gymnasium's
MountainCarContinuous-v0, batched.

Semantics in full: docs/envs/classic_control.md.

Semantics: ``gymnasium.envs.classic_control.continuous_mountain_car.Continuous_MountainCarEnv``
(Gymnasium 1.x) under the MountainCarContinuous-v0 time limit. One agent per env; the track, the limits,
the observation and the starts are MountainCar's (``warpdrive.envs.mountain_car``).

- Action: Box([-1], [1]) float32, the throttle ``a``. The base class's validation (on by default for the
  CPU backends) rejects throttles outside ``[-1, 1]``; with validation off the step clips them for the
  dynamics, as Gymnasium does (the cost is still paid on the unclipped value).
- Dynamics: ``velocity += clip(a, -1, 1) * 0.0015 - 0.0025 cos(3 position)``, clipped to
  ``[-0.07, 0.07]``; ``position += velocity``, clipped to ``[-1.2, 0.6]``; at the left wall a leftward
  velocity becomes 0.
- Reward: ``-0.1 a^2``, plus 100 on the step that reaches the goal.
- Terminated when ``position >= 0.45`` and ``velocity >= goal_velocity`` (0); truncated after
  ``episode_length`` (999) steps. Metric ``goal_reached``: 1 for an episode that reached the goal.

Precision: Gymnasium's reset state is a float64 array, and every step stores a float32 one; NumPy 2 then
does the next step's arithmetic in float32 wherever a float32 scalar meets a Python float (NEP 50), and
in float64 wherever it meets another float64. The state is kept here in float64 and rounded to float32
exactly where NumPy would round it (a float64 operation on float32 operands, rounded to float32, is the
float32 operation), so that CPU results match Gymnasium's to the last bit
(tests/envs/test_mountain_car_continuous.py); an episode's first step is computed in float64 throughout,
as Gymnasium computes it from its float64 start.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from warpdrive.core.compile import per_env
from warpdrive.core.device import kernel_function
from warpdrive.core.exactmath import cos64
from warpdrive.core.typed import bounded
from warpdrive.envs.mountain_car.env import (
    GRAVITY,
    MAX_POSITION,
    MAX_SPEED,
    MIN_POSITION,
    MountainCar,
    MountainCarConfig,
    observe,
    place,
)

# Gymnasium's constants beyond MountainCar's
MAX_ACTION = 1.0
POWER = 0.0015
GOAL_POSITION = 0.45
GOAL_REWARD = 100.0
ACTION_COST = 0.1
# float32 roundings of the constants NumPy meets float32 scalars with
_POWER_F32 = np.float32(POWER)
_MAX_SPEED_F32 = np.float64(np.float32(MAX_SPEED))
_MIN_POSITION_F32 = np.float64(np.float32(MIN_POSITION))
_MAX_POSITION_F32 = np.float64(np.float32(MAX_POSITION))
_GOAL_POSITION_F32 = np.float64(np.float32(GOAL_POSITION))


@dataclass(frozen=True)
class MountainCarContinuousConfig(MountainCarConfig):
    """Parameters of MountainCarContinuous (defaults: Gymnasium's MountainCarContinuous-v0); the fields
    are MountainCar's."""

    episode_length: int = bounded(999, ge=1)
    """Episodes are truncated after this many steps."""


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU); s.state[env] is float64 [position, velocity]


@kernel_function
def _f32(x):
    """``x`` rounded to float32, kept as a float64."""
    return np.float64(np.float32(x))


@kernel_function
def _integrate(env, p, s):
    # Gymnasium's Continuous_MountainCarEnv.step, term for term and in the same order. `stored`: the state
    # is the float32 one a previous step stored (every step but an episode's first), so NumPy computes in
    # float32 where it meets Python floats: round each result and each constant compared with to float32.
    stored = s.t[env] > 1
    position = s.state[env, 0]
    velocity = s.state[env, 1]
    throttle = s.actions[env, 0, 0]  # float32
    angle = _f32(3 * position) if stored else 3 * position
    slope = GRAVITY * cos64(angle)  # a Python float in Gymnasium
    if throttle > MAX_ACTION:  # clipped to the Python float 1.0: float64 arithmetic
        accel = MAX_ACTION * POWER - slope
    elif throttle < -MAX_ACTION:
        accel = -MAX_ACTION * POWER - slope
    else:  # a float32 throttle times a Python float: float32 arithmetic
        accel = _f32(np.float64(throttle * _POWER_F32) - _f32(slope))
    if stored:
        velocity = _f32(velocity + _f32(accel))
        speed_limit = _MAX_SPEED_F32
    else:
        velocity = velocity + accel
        speed_limit = MAX_SPEED
    if velocity > speed_limit:
        velocity = MAX_SPEED
    if velocity < -speed_limit:
        velocity = -MAX_SPEED
    if stored:
        position = _f32(position + _f32(velocity))
        low, high = _MIN_POSITION_F32, _MAX_POSITION_F32
        goal, goal_velocity = _GOAL_POSITION_F32, _f32(p.goal_velocity)
    else:
        position = position + velocity
        low, high = MIN_POSITION, MAX_POSITION
        goal, goal_velocity = GOAL_POSITION, p.goal_velocity
    if position > high:
        position = MAX_POSITION
    if position < low:
        position = MIN_POSITION
    if stored:
        # Gymnasium compares its clipped values (Python floats) in float64, the others in float32; rounded
        # here, the clipped ones (0.6, -1.2, +-0.07) compare the same way in float32 with the constants
        # below (goal_velocity is validated to lie within the speed limits)
        position = _f32(position)
        velocity = _f32(velocity)
    if position == low and velocity < 0:  # an inelastic wall
        velocity = 0.0
    terminated = position >= goal and velocity >= goal_velocity
    s.state[env, 0] = _f32(position)
    s.state[env, 1] = _f32(velocity)
    s.terminated[env] = terminated
    s.metrics[env, 0] = np.float32(1.0) if terminated else np.float32(0.0)
    # the cost of the unclipped throttle, in float64 (math.pow in Gymnasium)
    cost = ACTION_COST * (np.float64(throttle) * np.float64(throttle))
    s.rewards[env, 0] = np.float32((GOAL_REWARD if terminated else 0.0) - cost)


class MountainCarContinuous(MountainCar):
    """Gymnasium's MountainCarContinuous-v0 as a batch of ``num_envs`` replicas; see the module docstring.

    Arrays: MountainCar's; actions are [envs, 1, 1] float32 throttles.
    """

    name = "mountain_car_continuous"
    goal_position = GOAL_POSITION
    Config = MountainCarContinuousConfig

    step_phases = (per_env(_integrate), per_env(observe))
    reset_phases = (per_env(place), per_env(observe))

    def single_action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-MAX_ACTION, MAX_ACTION, (1,), np.float32)
