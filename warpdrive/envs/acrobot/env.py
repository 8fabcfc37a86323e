"""Acrobot: swing a two-link chain, actuated at its middle joint, until its tip is high enough; Gymnasium's
Acrobot-v1, batched.

Semantics in full: docs/envs/classic_control.md.

Semantics: ``gymnasium.envs.classic_control.acrobot.AcrobotEnv`` (Gymnasium 1.x) under the Acrobot-v1
time limit, with its defaults: the book's dynamics (``book_or_nips="book"``), no torque noise, one RK4
step of ``dt = 0.2`` s per env step. One agent per env. ``theta1`` is the first link's angle from hanging
straight down, ``theta2`` the second link's angle relative to the first.

- Action: Discrete(3): torque -1, 0 or +1 on the joint between the links.
- Dynamics: the book's equations of motion integrated by one classical Runge-Kutta step; then both angles
  are wrapped into ``[-pi, pi]`` and the angular velocities clipped to ``[-4 pi, 4 pi]`` and
  ``[-9 pi, 9 pi]``.
- Observation (float32, size 6): ``[cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2]``.
- Reward: -1 every step, 0 on the terminating one.
- Terminated when the tip is more than one link length above the pivot, ``-cos(theta1) - cos(theta1 +
  theta2) > 1``; truncated after ``episode_length`` (500) steps. Metric ``goal_reached``: 1 for an
  episode that reached the height.
- Start: every state component uniform in ``[-0.1, 0.1)`` and rounded to float32, as Gymnasium draws it
  (``start="random"``), or the config's ``initial_state`` (``start="identical"``).

Precision: Gymnasium integrates in float64 (its float32 start is widened by ``np.append``); the state is
stored and integrated here in float64 too, with Gymnasium's constants and operation order. Only ``sin``
and ``cos`` may differ in the last bit (NumPy's against :mod:`warpdrive.core.exactmath`'s correctly rounded
ones, which give the same bits on the CPU and the GPU), so that one step from the same state agreed with
Gymnasium's bit for bit in 99.6% of 20000 random states and within 5.3e-14 in all; over whole episodes the
chaotic double pendulum amplifies those bits (the test allows 1e-9; tests/envs/test_acrobot.py). The
observation, the state rounded to float32, agreed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from warpdrive.core.compile import per_env
from warpdrive.core.device import kernel_function
from warpdrive.core.exactmath import cos64, sincos64
from warpdrive.core.random import uniform
from warpdrive.core.typed import ConfigError, bounded, bounded_magnitude, check_length, join_path
from warpdrive.envs.classic_control import ClassicControlEnv

# Gymnasium's constants
DT = 0.2  # seconds per step, one RK4 step
LINK_LENGTH_1 = 1.0
LINK_MASS_1 = 1.0
LINK_MASS_2 = 1.0
LINK_COM_POS_1 = 0.5  # position of each link's centre of mass along it
LINK_COM_POS_2 = 0.5
LINK_MOI = 1.0  # both links' moments of inertia
GRAVITY = 9.8
MAX_VEL_1 = 4 * math.pi
MAX_VEL_2 = 9 * math.pi
START_BOUND = 0.1  # random starts: each component uniform in [-START_BOUND, START_BOUND)
STATE_SIZE = 4


@dataclass(frozen=True)
class AcrobotConfig:
    """Parameters of Acrobot (defaults: Gymnasium's Acrobot-v1)."""

    episode_length: int = bounded(500, ge=1)
    """Episodes are truncated after this many steps."""
    initial_state: tuple[float, ...] | None = bounded_magnitude(None)
    """``(theta1, theta2, dtheta1, dtheta2)`` every episode starts from with ``start="identical"`` (default:
    hanging straight down at rest, all zero); must be None with ``start="random"``. Within the state space:
    angles in [-pi, pi], angular velocities within Gymnasium's bounds (4 pi and 9 pi)."""

    def validate(self, path: str = "") -> None:
        check_length(path, "initial_state", self.initial_state, STATE_SIZE, "(theta1, theta2, dtheta1, dtheta2)")
        if self.initial_state is None:
            return
        bounds = (math.pi, math.pi, MAX_VEL_1, MAX_VEL_2)
        for i, (value, bound) in enumerate(zip(self.initial_state, bounds, strict=True)):
            if not abs(value) <= bound:
                raise ConfigError(join_path(join_path(path, "initial_state"), i),
                                  f"expected a value in [-{bound:.6g}, {bound:.6g}] (the state space), got {value!r}")


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU); s.state[env] is float64
# [theta1, theta2, dtheta1, dtheta2]


@kernel_function
def _derivatives(theta1, theta2, dtheta1, dtheta2, torque):
    """The book's equations of motion: ``(dtheta1, dtheta2, ddtheta1, ddtheta2)`` (Gymnasium's ``_dsdt``,
    term for term and in the same order)."""
    m1 = LINK_MASS_1
    m2 = LINK_MASS_2
    l1 = LINK_LENGTH_1
    lc1 = LINK_COM_POS_1
    lc2 = LINK_COM_POS_2
    i1 = LINK_MOI
    i2 = LINK_MOI
    sin2, cos2 = sincos64(theta2)  # (one evaluation for Gymnasium's five calls: the same values)
    d1 = m1 * (lc1 * lc1) + m2 * ((l1 * l1) + (lc2 * lc2) + 2 * l1 * lc2 * cos2) + i1 + i2
    d2 = m2 * ((lc2 * lc2) + l1 * lc2 * cos2) + i2
    phi2 = m2 * lc2 * GRAVITY * cos64(theta1 + theta2 - math.pi / 2.0)
    phi1 = (
        -m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin2
        - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
        + (m1 * lc1 + m2 * l1) * GRAVITY * cos64(theta1 - math.pi / 2)
        + phi2
    )
    ddtheta2 = (
        torque + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin2 - phi2
    ) / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


@kernel_function
def _wrap(x):
    """``x`` shifted by whole turns into ``[-pi, pi]`` (Gymnasium's ``wrap``)."""
    while x > math.pi:
        x = x - 2 * math.pi
    while x < -math.pi:
        x = x + 2 * math.pi
    return x


@kernel_function
def _integrate(env, p, s):
    # one classical Runge-Kutta step as Gymnasium's rk4 computes it; the torque stays constant
    y0, y1, y2, y3 = s.state[env, 0], s.state[env, 1], s.state[env, 2], s.state[env, 3]
    torque = np.float64(s.actions[env, 0, 0] - 1)
    half = DT / 2.0
    a0, a1, a2, a3 = _derivatives(y0, y1, y2, y3, torque)
    b0, b1, b2, b3 = _derivatives(y0 + half * a0, y1 + half * a1, y2 + half * a2, y3 + half * a3, torque)
    c0, c1, c2, c3 = _derivatives(y0 + half * b0, y1 + half * b1, y2 + half * b2, y3 + half * b3, torque)
    d0, d1, d2, d3 = _derivatives(y0 + DT * c0, y1 + DT * c1, y2 + DT * c2, y3 + DT * c3, torque)
    sixth = DT / 6.0
    theta1 = _wrap(y0 + sixth * (a0 + 2 * b0 + 2 * c0 + d0))
    theta2 = _wrap(y1 + sixth * (a1 + 2 * b1 + 2 * c1 + d1))
    dtheta1 = min(max(y2 + sixth * (a2 + 2 * b2 + 2 * c2 + d2), -MAX_VEL_1), MAX_VEL_1)
    dtheta2 = min(max(y3 + sixth * (a3 + 2 * b3 + 2 * c3 + d3), -MAX_VEL_2), MAX_VEL_2)
    s.state[env, 0] = theta1
    s.state[env, 1] = theta2
    s.state[env, 2] = dtheta1
    s.state[env, 3] = dtheta2
    terminated = -cos64(theta1) - cos64(theta2 + theta1) > 1.0
    s.terminated[env] = terminated
    s.metrics[env, 0] = np.float32(1.0) if terminated else np.float32(0.0)
    s.rewards[env, 0] = np.float32(0.0) if terminated else np.float32(-1.0)


@kernel_function
def _observe(env, p, s):
    theta1 = s.state[env, 0]
    theta2 = s.state[env, 1]
    sin1, cos1 = sincos64(theta1)
    sin2, cos2 = sincos64(theta2)
    s.obs[env, 0, 0] = np.float32(cos1)
    s.obs[env, 0, 1] = np.float32(sin1)
    s.obs[env, 0, 2] = np.float32(cos2)
    s.obs[env, 0, 3] = np.float32(sin2)
    s.obs[env, 0, 4] = np.float32(s.state[env, 2])
    s.obs[env, 0, 5] = np.float32(s.state[env, 3])


@kernel_function
def _place(env, p, s):
    for k in range(STATE_SIZE):
        if p.random_start:
            u = np.float64(uniform(p.seed, env, s.episode[env], k))
            s.state[env, k] = np.float64(np.float32(-START_BOUND + 2.0 * START_BOUND * u))
        else:
            s.state[env, k] = s.start[k]


class Acrobot(ClassicControlEnv):
    """Gymnasium's Acrobot-v1 as a batch of ``num_envs`` replicas; see the module docstring.

    Arrays beyond the standard ones: ``state`` [envs, 4] float64 ``(theta1, theta2, dtheta1, dtheta2)``, and
    ``start`` [4] float64, the identical start.
    """

    name = "acrobot"
    state_size = STATE_SIZE
    Config = AcrobotConfig

    step_phases = (per_env(_integrate), per_env(_observe))
    reset_phases = (per_env(_place), per_env(_observe))

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(3)

    def observation_size(self) -> int:
        return 6

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32)

    def metric_names(self) -> list[str]:
        return ["goal_reached"]

    def draw(self, axes: Any, index: int) -> None:
        """The two links from the pivot (angles 0 hang down) and the height the tip must reach (1)."""
        theta1, theta2 = self.store["state"][index, :2].double().cpu().tolist()
        elbow = (math.sin(theta1), -math.cos(theta1))
        tip = (elbow[0] + math.sin(theta1 + theta2), elbow[1] - math.cos(theta1 + theta2))
        axes.plot([-2.2, 2.2], [1, 1], color="grey", linestyle="--")
        axes.plot([0, elbow[0], tip[0]], [0, elbow[1], tip[1]], color="tab:blue", linewidth=5, marker="o")
        axes.set_xlim(-2.2, 2.2)
        axes.set_ylim(-2.2, 2.2)
        axes.set_aspect("equal")
