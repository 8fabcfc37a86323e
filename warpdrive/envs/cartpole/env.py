"""CartPole: push a cart left or right to keep a pole upright; Gymnasium's CartPole-v1, batched.

Semantics in full: docs/envs/classic_control.md.

Semantics: ``gymnasium.envs.classic_control.cartpole.CartPoleEnv`` (Gymnasium 1.x) under the CartPole-v1
time limit, with its default explicit Euler integrator. One agent per env.

- Action: Discrete(2): 0 pushes the cart left, 1 pushes it right (force 10 N).
- Observation (float32, size 4): ``[x, x_dot, theta, theta_dot]``.
- Reward: 1 every step, the terminating one included; with ``sutton_barto_reward``: 0 every step and -1
  on the terminating one.
- Terminated when ``|x| > 2.4`` or ``|theta| > 12 degrees``; truncated after ``episode_length`` (500)
  steps. Unlike Gymnasium's ``TimeLimit``, a step that terminates at the time limit is not also flagged
  truncated (the base class's rule).
- Start: every state component uniform in ``[-0.05, 0.05)`` (``start="random"``), or the config's
  ``initial_state`` (``start="identical"``).

Precision: the state is stored in float64 and the step is computed in float64 with Gymnasium's
constants and operation order, as Gymnasium does on its float64 ``state``; the observation is the state
rounded to float32. Float32 storage is not enough: the upright pole is an unstable equilibrium (errors
grow about e-fold every 0.25 s), so rounding the state to float32 each step drifted up to 30 (in x)
from Gymnasium over a balanced 500-step episode, while float64 stays within the float32 rounding of the
observation (tests/envs/test_cartpole.py). The GPU computes the same bits: sin and cos come from
:mod:`warpdrive.core.exactmath`, and the CUDA kernels do not contract multiply-adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from warpdrive.core.compile import per_env
from warpdrive.core.device import kernel_function
from warpdrive.core.exactmath import sincos64
from warpdrive.core.random import uniform
from warpdrive.core.typed import bounded, bounded_magnitude, check_length
from warpdrive.envs.classic_control import ClassicControlEnv

# Gymnasium's constants, computed as it computes them (Python floats: float64 inside the kernels)
GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds per step
THETA_THRESHOLD_RADIANS = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
START_BOUND = 0.05  # random starts: each component uniform in [-START_BOUND, START_BOUND)
STATE_SIZE = 4


@dataclass(frozen=True)
class CartPoleConfig:
    """Parameters of CartPole (defaults: Gymnasium's CartPole-v1)."""

    episode_length: int = bounded(500, ge=1)
    """Episodes are truncated after this many steps."""
    sutton_barto_reward: bool = False
    """Gymnasium's ``sutton_barto_reward``: reward 0 per step and -1 on termination, instead of 1 per step."""
    initial_state: tuple[float, ...] | None = bounded_magnitude(None)
    """``(x, x_dot, theta, theta_dot)`` every episode starts from with ``start="identical"`` (default: all
    zero); must be None with ``start="random"``."""

    def validate(self, path: str = "") -> None:
        check_length(path, "initial_state", self.initial_state, STATE_SIZE, "(x, x_dot, theta, theta_dot)")


# --------------------------------------------------------------------------------------------------
# kernel functions (one source for the CPU and the GPU); s.state[env] is float64 [x, x_dot, th, th_dot]


@kernel_function
def _integrate(env, p, s):
    # Gymnasium's CartPoleEnv.step, term for term and in the same order, so that float64 results agree
    x = s.state[env, 0]
    x_dot = s.state[env, 1]
    theta = s.state[env, 2]
    theta_dot = s.state[env, 3]
    force = FORCE_MAG if s.actions[env, 0, 0] == 1 else -FORCE_MAG
    sintheta, costheta = sincos64(theta)
    temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    x = x + TAU * x_dot
    x_dot = x_dot + TAU * xacc
    theta = theta + TAU * theta_dot
    theta_dot = theta_dot + TAU * thetaacc
    s.state[env, 0] = x
    s.state[env, 1] = x_dot
    s.state[env, 2] = theta
    s.state[env, 3] = theta_dot

    terminated = x < -X_THRESHOLD or x > X_THRESHOLD or theta < -THETA_THRESHOLD_RADIANS \
        or theta > THETA_THRESHOLD_RADIANS
    s.terminated[env] = terminated
    if p.sutton_barto_reward:
        s.rewards[env, 0] = np.float32(-1.0) if terminated else np.float32(0.0)
    else:
        s.rewards[env, 0] = np.float32(1.0)


@kernel_function
def _observe(env, p, s):
    for k in range(STATE_SIZE):
        s.obs[env, 0, k] = np.float32(s.state[env, k])


@kernel_function
def _place(env, p, s):
    for k in range(STATE_SIZE):
        if p.random_start:
            u = np.float64(uniform(p.seed, env, s.episode[env], k))
            s.state[env, k] = -START_BOUND + 2.0 * START_BOUND * u
        else:
            s.state[env, k] = s.start[k]


class CartPole(ClassicControlEnv):
    """Gymnasium's CartPole-v1 as a batch of ``num_envs`` replicas; see the module docstring.

    Arrays beyond the standard ones: ``state`` [envs, 4] float64 ``(x, x_dot, theta, theta_dot)``, and
    ``start`` [4] float64, the identical start.
    """

    name = "cartpole"
    state_size = STATE_SIZE
    Config = CartPoleConfig

    step_phases = (per_env(_integrate), per_env(_observe))
    reset_phases = (per_env(_place), per_env(_observe))

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(2)

    def observation_size(self) -> int:
        return STATE_SIZE

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        """Gymnasium's bounds: twice the termination thresholds for x and theta."""
        high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD_RADIANS * 2, np.inf], dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32)

    def draw(self, axes: Any, index: int) -> None:
        """The cart on its track and the pole (1 unit drawn for Gymnasium's half-length 0.5)."""
        from matplotlib.patches import Rectangle

        x, _, theta, _ = self.store["state"][index].double().cpu().tolist()
        axes.plot([-2.4, 2.4], [0, 0], color="grey")
        axes.add_patch(Rectangle((x - 0.25, -0.1), 0.5, 0.2, color="tab:blue"))
        axes.plot([x, x + math.sin(theta)], [0, math.cos(theta)], color="tab:brown", linewidth=4)
        axes.set_xlim(-2.6, 2.6)
        axes.set_ylim(-0.5, 1.5)
        axes.set_aspect("equal")
