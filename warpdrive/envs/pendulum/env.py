"""Pendulum: swing a torque-limited pendulum up and hold it; Gymnasium's Pendulum-v1, batched.

Semantics in full: docs/envs/classic_control.md.

Semantics: ``gymnasium.envs.classic_control.pendulum.PendulumEnv`` (Gymnasium 1.x) under the Pendulum-v1
time limit. One agent per env; the angle ``th`` is 0 when the pendulum points up.

- Action: Box([-2], [2]) float32, the torque ``u``. The base class's validation (on by default for the
  CPU backends) rejects torques outside ``[-2, 2]``; with validation off the step clips them, as
  Gymnasium does.
- Observation (float32, size 3): ``[cos th, sin th, thdot]``.
- Reward: ``-(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)`` from the state before the step, where
  ``angle_normalize`` maps an angle to ``[-pi, pi)``.
- Dynamics (``dt = 0.05``, ``m = l = 1``): ``thdot += (3 g / (2 l) sin th + 3 / (m l^2) u) dt``, clipped
  to ``[-8, 8]``, then ``th += thdot dt``.
- Never terminates; truncated after ``episode_length`` (200) steps.
- Start: ``th`` uniform in ``[-pi, pi)`` and ``thdot`` in ``[-1, 1)`` (``start="random"``), or the
  config's ``initial_state`` (``start="identical"``).

Precision: the state ``(th, thdot)`` is stored and stepped in float64 like Gymnasium's; the terms with
the float32 torque are computed in float32 first, as NumPy 2 does in Gymnasium's code (``3.0 * u`` and
``0.001 * u**2`` stay float32), so that CPU results match Gymnasium's to the last bits. The reward is
rounded to float32. ``g`` is a float64 kernel parameter (float parameters are otherwise float32).
On an H100 the CUDA kernels agreed with the CPU's within 4e-9 (observation) and 3e-8 (reward) over
1000 envs and two episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from warpdrive.core.compile import per_env
from warpdrive.core.device import kernel_function
from warpdrive.core.exactmath import mod64, sin64, sincos64
from warpdrive.core.random import uniform
from warpdrive.core.typed import bounded, bounded_magnitude, check_length
from warpdrive.envs.classic_control import ClassicControlEnv

# Gymnasium's constants
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
M = 1.0
L = 1.0
START_SPEED = 1.0  # random starts: thdot uniform in [-START_SPEED, START_SPEED)
# Terms with the float32 torque, rounded to float32 as NumPy 2 rounds a Python float times a float32
_TORQUE_GAIN = np.float32(3.0 / (M * L**2))
_TORQUE_COST = np.float32(0.001)
_MAX_TORQUE_F32 = np.float32(MAX_TORQUE)
STATE_SIZE = 2


@dataclass(frozen=True)
class PendulumConfig:
    """Parameters of Pendulum (defaults: Gymnasium's Pendulum-v1)."""

    episode_length: int = bounded(200, ge=1)
    """Episodes are truncated after this many steps (the pendulum never terminates)."""
    g: float = bounded_magnitude(10.0)
    """Gravity (Gymnasium's ``g`` argument)."""
    initial_state: tuple[float, ...] | None = bounded_magnitude(None)
    """``(th, thdot)`` every episode starts from with ``start="identical"`` (default: hanging down at
    rest, ``(pi, 0)``); must be None with ``start="random"``."""

    def validate(self, path: str = "") -> None:
        check_length(path, "initial_state", self.initial_state, STATE_SIZE, "(th, thdot)")


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU); s.state[env] is float64 [th, thdot]


@kernel_function
def angle_normalize(x):
    """``x`` mapped to ``[-pi, pi)`` (Python's floored ``%``, as in Gymnasium; exact on both targets)."""
    return mod64(x + math.pi, 2.0 * math.pi) - math.pi


@kernel_function
def _integrate(env, p, s):
    # Gymnasium's PendulumEnv.step, term for term and in the same order
    th = s.state[env, 0]
    thdot = s.state[env, 1]
    u = min(max(s.actions[env, 0, 0], -_MAX_TORQUE_F32), _MAX_TORQUE_F32)  # float32, as np.clip leaves it
    g = p.g
    angle = angle_normalize(th)
    costs = angle * angle + 0.1 * (thdot * thdot) + np.float64(_TORQUE_COST * (u * u))
    newthdot = thdot + (3.0 * g / (2.0 * L) * sin64(th) + np.float64(_TORQUE_GAIN * u)) * DT
    newthdot = min(max(newthdot, -MAX_SPEED), MAX_SPEED)
    s.state[env, 0] = th + newthdot * DT
    s.state[env, 1] = newthdot
    s.rewards[env, 0] = np.float32(-costs)


@kernel_function
def _observe(env, p, s):
    sin_th, cos_th = sincos64(s.state[env, 0])
    s.obs[env, 0, 0] = np.float32(cos_th)
    s.obs[env, 0, 1] = np.float32(sin_th)
    s.obs[env, 0, 2] = np.float32(s.state[env, 1])


@kernel_function
def _place(env, p, s):
    if p.random_start:
        u_th = np.float64(uniform(p.seed, env, s.episode[env], 0))
        u_thdot = np.float64(uniform(p.seed, env, s.episode[env], 1))
        s.state[env, 0] = -math.pi + 2.0 * math.pi * u_th
        s.state[env, 1] = -START_SPEED + 2.0 * START_SPEED * u_thdot
    else:
        s.state[env, 0] = s.start[0]
        s.state[env, 1] = s.start[1]


class Pendulum(ClassicControlEnv):
    """Gymnasium's Pendulum-v1 as a batch of ``num_envs`` replicas; see the module docstring.

    Arrays beyond the standard ones: ``state`` [envs, 2] float64 ``(th, thdot)``; constants ``start`` [2]
    float64, the identical start. Actions: [envs, 1, 1] float32 torques.
    """

    name = "pendulum"
    state_size = STATE_SIZE
    default_start = (math.pi, 0.0)  # hanging down (angle 0 is upright)
    Config = PendulumConfig

    step_phases = (per_env(_integrate), per_env(_observe))
    reset_phases = (per_env(_place), per_env(_observe))

    def single_action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-MAX_TORQUE, MAX_TORQUE, (1,), np.float32)

    def observation_size(self) -> int:
        return 3

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32)

    def kernel_params(self) -> dict[str, Any]:
        # float64, as Gymnasium computes with it (the core would pass the float field as float32)
        return {"g": np.float64(self.config.g)}

    def draw(self, axes: Any, index: int) -> None:
        """The pendulum from its pivot (angle 0 points up)."""
        theta = float(self.store["state"][index, 0])
        axes.plot([0, math.sin(theta)], [0, math.cos(theta)], color="tab:red", linewidth=6)
        axes.scatter([0], [0], color="black", zorder=3)
        axes.set_xlim(-1.2, 1.2)
        axes.set_ylim(-1.2, 1.2)
        axes.set_aspect("equal")
