"""Acrobot against Gymnasium's Acrobot-v1, CPU against CUDA kernels, seeding and bad inputs."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive.envs.acrobot import Acrobot

pytestmark = pytest.mark.xdist_group("acrobot")  # one worker: see test_contract.by_env

# the state's bounds: angles wrapped into [-pi, pi], angular velocities clipped
HIGH = np.array([math.pi, math.pi, 4 * math.pi, 9 * math.pi])
# Observations: one float32 rounding of values up to 9 pi may round the other way (measured: none do).
OBS_ATOL = 1e-5


def _gymnasium_start(rng: np.random.Generator) -> np.ndarray:
    """A start as Gymnasium's reset draws it: uniform in [-0.1, 0.1), rounded to float32."""
    return rng.uniform(-0.1, 0.1, size=4).astype(np.float32).astype(np.float64)


def _episode_beside_gymnasium(run_beside_gymnasium, state: np.ndarray, choose_action) -> int:
    reference = gym.make("Acrobot-v1")
    reference.reset(seed=0)
    reference.unwrapped.state = state.copy()
    env = Acrobot(backend="cpu", start="identical", initial_state=tuple(state.tolist()))
    np.testing.assert_allclose(env.reset()[0, 0].numpy(), reference.unwrapped._get_ob(), atol=OBS_ATOL, rtol=0)
    # Both integrate in float64 in the same operation order; NumPy's and the C library's sin and cos may
    # differ in the last bit, which the chaotic double pendulum amplifies over an episode (measured: up
    # to 2e-11 in 500 steps).
    return run_beside_gymnasium(env, reference, choose_action, state_atol=1e-9, obs_atol=OBS_ATOL)


def _pump(rng: np.random.Generator):
    """Torque in the direction of the second joint's motion, 10% random: reaches the height in about 90 steps."""
    return lambda obs: int(rng.integers(3)) if rng.random() < 0.1 else int(np.sign(obs[5])) + 1


def test_matches_gymnasium_over_episodes(run_beside_gymnasium):
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(2):  # Gymnasium's start distribution, random torques: truncated at 500 steps
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, _gymnasium_start(rng),
                                                 lambda obs: int(rng.integers(3))))
    for _ in range(3):  # pumping energy in: the height is reached
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, _gymnasium_start(rng), _pump(rng)))
    for _ in range(3):  # anywhere, random torques
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, rng.uniform(-HIGH, HIGH),
                                                 lambda obs: int(rng.integers(3))))
    assert lengths[:2] == [500] * 2
    assert all(t < 500 for t in lengths[2:5])


def test_matches_gymnasium_one_step_from_many_states(step_once_beside_gymnasium):
    rng = np.random.default_rng(1)
    states = rng.uniform(-HIGH, HIGH, size=(400, 4))
    states[:50, 2:] = rng.choice([-1, 1], size=(50, 2)) * HIGH[2:]  # at the speed limits: clipped
    actions = rng.integers(3, size=len(states)).tolist()
    env = Acrobot(num_envs=len(states), backend="cpu")
    env.reset()
    # one RK4 step from the same state: only last-bit differences of sin and cos remain (measured: at most
    # 5.3e-14 over 20000 random states, 99.6% of them bit for bit)
    step_once_beside_gymnasium(env, gym.make("Acrobot-v1"), states, actions, state_atol=1e-13, obs_atol=OBS_ATOL)
    assert 0 < int(env.store["terminated"].sum()) < len(states)  # both outcomes were compared
    speeds = env.store["state"][:, 2:].abs()
    assert bool((speeds[:, 0] == 4 * math.pi).any()) and bool((speeds[:, 1] == 9 * math.pi).any())


@pytest.mark.parametrize("start", [
    {"start": "identical", "initial_state": (1.5, 0.0, 3.0, 0.0)},  # swinging up past the height: terminations
])
def test_cpu_and_cuda_kernels_agree(agree_on_both_targets, start):
    agree_on_both_targets(Acrobot, start)


def test_random_starts_are_drawn_per_replica_like_gymnasiums():
    a = Acrobot(num_envs=64, backend="cpu", seed=7)
    a.reset()
    state = a.store["state"]
    assert len({tuple(row) for row in state.tolist()}) == 64  # every replica draws its own start
    assert bool(((state >= -0.1) & (state < 0.1)).all())
    assert torch.equal(state, state.float().double())  # float32 values, as Gymnasium's reset rounds them
    assert float(state.min()) < -0.09 and float(state.max()) > 0.09  # the whole range is used


def test_defaults_are_gymnasiums():
    env = Acrobot(backend="cpu")
    reference = gym.make("Acrobot-v1")
    assert env.config.episode_length == reference.spec.max_episode_steps == 500
    assert env.single_action_space() == reference.action_space
    assert env.single_observation_space == reference.observation_space


def test_goal_reached_metric():
    env = Acrobot(num_envs=2, backend="cpu", episode_length=1)
    env.reset()
    # replica 0 nearly upright (theta1 = pi), replica 1 hanging down
    env.store["state"].copy_(torch.tensor([[math.pi - 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    _, rewards, terminated, truncated, _ = env.step(torch.ones(2, 1, dtype=torch.int32))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, True]
    assert rewards[:, 0].tolist() == [0.0, -1.0]
    assert env.store["final_metrics"][:, 0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"episode_length": 0}, "^episode_length: expected an integer >= 1, got 0$"),
        ({"episode_length": True}, "^episode_length: expected an integer >= 1, got True$"),
        ({"initial_state": (0.0, 0.0)},
         r"^initial_state: expected 4 values \(theta1, theta2, dtheta1, dtheta2\), got 2$"),
        ({"initial_state": (0.0, 0.0, float("inf"), 0.0)},
         r"^initial_state\[2\]: expected a finite float >= -1e\+12 and <= 1e\+12, got inf$"),
        ({"initial_state": (0.0, 0.0, 0.0, 1e6)},  # would have the angle wrap loop for a million turns
         r"^initial_state\[3\]: expected a value in \[-28\.2743, 28\.2743\] \(the state space\), got 1000000\.0$"),
        ({"initial_state": (3.2, 0.0, 0.0, 0.0)},
         r"^initial_state\[0\]: expected a value in \[-3\.14159, 3\.14159\] \(the state space\), got 3\.2$"),
        ({"initial_state": (0.0, "high", 0.0, 0.0)},
         r"^initial_state\[1\]: expected a float >= -1e\+12 and <= 1e\+12, got 'high'$"),
        ({"initial_state": 0.0}, "^initial_state: expected a list, got 0.0$"),
        ({"episode_lenght": 100}, r"^episode_lenght: unknown key; did you mean 'episode_length'\?$"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        Acrobot(backend="cpu", start="identical", **overrides)


def test_initial_state_needs_identical_start():
    with pytest.raises(ValueError, match="start='identical'"):
        Acrobot(backend="cpu", initial_state=(0.0, 0.0, 0.0, 0.0))
