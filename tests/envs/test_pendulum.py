"""Pendulum against Gymnasium's Pendulum-v1, CPU against CUDA kernels, seeding and bad inputs."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive.envs.pendulum import Pendulum

pytestmark = pytest.mark.xdist_group("pendulum")  # one worker: see test_contract.by_env

# The framework's float32 observation and reward against Gymnasium's.
ATOL = 1e-5


def _run_against_gymnasium(state: np.ndarray, torques: np.ndarray, *, g: float = 10.0,
                           validate: bool | None = None) -> None:
    """Step both envs from ``state`` with ``torques`` [200] (one Pendulum-v1 episode), comparing every step."""
    reference = gym.make("Pendulum-v1", g=g)
    reference.reset(seed=0)
    reference.unwrapped.state = state.copy()
    env = Pendulum(backend="cpu", start="identical", initial_state=tuple(float(v) for v in state), g=g,
                   validate=validate)
    expected = np.array([math.cos(state[0]), math.sin(state[0]), state[1]], dtype=np.float32)
    np.testing.assert_allclose(env.reset()[0, 0].numpy(), expected, atol=ATOL, rtol=0)
    for t, u in enumerate(torques, start=1):
        gym_obs, gym_reward, gym_terminated, gym_truncated, _ = reference.step(np.array([u], dtype=np.float32))
        obs, reward, terminated, truncated, info = env.step(torch.tensor([[[u]]], dtype=torch.float32))
        assert not gym_terminated and not bool(terminated[0]), f"step {t}"
        assert bool(truncated[0]) == gym_truncated == (t == 200), f"step {t}"
        np.testing.assert_allclose(float(reward[0, 0]), gym_reward, atol=ATOL, rtol=0, err_msg=f"step {t}")
        # the last step autoresets: the episode's last observation is in final_obs
        ours = (info["final_obs"] if gym_truncated else obs)[0, 0].numpy()
        np.testing.assert_allclose(ours, gym_obs, atol=ATOL, rtol=0, err_msg=f"step {t}")
        if not gym_truncated:
            np.testing.assert_allclose(env.store["state"][0].numpy(), reference.unwrapped.state, atol=1e-12,
                                       rtol=0, err_msg=f"float64 state, step {t}")


def test_matches_gymnasium_with_random_actions():
    rng = np.random.default_rng(0)
    starts = [rng.uniform([-np.pi, -1.0], [np.pi, 1.0]) for _ in range(4)]
    starts.append(np.array([7.5, -6.0]))  # outside [-pi, pi): exercises angle_normalize
    for state in starts:
        _run_against_gymnasium(state, rng.uniform(-2.0, 2.0, size=200).astype(np.float32))
    # the box's edges, and gravity other than the default
    _run_against_gymnasium(np.array([0.1, 0.0]), np.tile(np.float32([2.0, -2.0, 2.0, 2.0]), 50), g=9.81)


def test_unvalidated_out_of_range_torque_is_clipped_like_gymnasium():
    rng = np.random.default_rng(1)
    torques = rng.uniform(-5.0, 5.0, size=200).astype(np.float32)
    _run_against_gymnasium(np.array([3.0, 0.5]), torques, validate=False)


def test_random_starts_are_drawn_per_replica_and_in_bounds():
    a = Pendulum(num_envs=64, backend="cpu", seed=7)
    a.reset()
    state = a.store["state"]
    assert len(set(state[:, 0].tolist())) == 64  # every replica draws its own start
    assert bool(((state[:, 0] >= -math.pi) & (state[:, 0] < math.pi)).all())
    assert bool(((state[:, 1] >= -1.0) & (state[:, 1] < 1.0)).all())
    assert float(state[:, 0].min()) < -2.0 and float(state[:, 0].max()) > 2.0  # the whole circle is used


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"episode_length": 0}, "^episode_length: expected an integer >= 1, got 0$"),
        ({"g": float("inf")}, r"^g: expected a finite float >= -1e\+12 and <= 1e\+12, got inf$"),
        ({"g": "high"}, r"^g: expected a float >= -1e\+12 and <= 1e\+12, got 'high'$"),
        ({"g": True}, r"^g: expected a float >= -1e\+12 and <= 1e\+12, got True$"),
        ({"initial_state": (0.0,)}, r"^initial_state: expected 2 values \(th, thdot\), got 1$"),
        ({"initial_state": (0.0, float("nan"))},
         r"^initial_state\[1\]: expected a finite float >= -1e\+12 and <= 1e\+12, got nan$"),
        ({"gravity": 9.8}, "^gravity: unknown key; known keys: episode_length, g, initial_state$"),
        ({"episode_lenght": 100}, r"^episode_lenght: unknown key; did you mean 'episode_length'\?$"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        Pendulum(backend="cpu", start="identical", **overrides)


def test_initial_state_needs_identical_start():
    with pytest.raises(ValueError, match="start='identical'"):
        Pendulum(backend="cpu", initial_state=(0.0, 0.0))
