"""MountainCar against Gymnasium's MountainCar-v0, CPU against CUDA kernels, seeding and bad inputs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive.envs.mountain_car import MountainCar

pytestmark = pytest.mark.xdist_group("mountain_car")  # one worker: see test_contract.by_env

LOW = np.array([-1.2, -0.07])
HIGH = np.array([0.6, 0.07])


def _episode_beside_gymnasium(run_beside_gymnasium, state: np.ndarray, choose_action, **config) -> int:
    reference = gym.make("MountainCar-v0", **config)
    reference.reset(seed=0)
    reference.unwrapped.state = state.copy()
    env = MountainCar(backend="cpu", start="identical", initial_state=tuple(state.tolist()), **config)
    np.testing.assert_array_equal(env.reset()[0, 0].numpy(), state.astype(np.float32))
    # float64 like Gymnasium's, in the same operation order: bit for bit
    return run_beside_gymnasium(env, reference, choose_action, state_atol=0.0)


def _push_with_velocity(obs: np.ndarray) -> int:
    """Accelerate in the direction of motion: pumps energy in and reaches the flag (about 100 steps)."""
    return 2 if obs[1] >= 0 else 0


def test_matches_gymnasium_over_episodes(run_beside_gymnasium):
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(3):  # Gymnasium's start distribution, random actions: truncated at 200 steps
        state = np.array([rng.uniform(-0.6, -0.4), 0.0])
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, state, lambda obs: int(rng.integers(3))))
    for _ in range(3):  # anywhere, random actions: the walls are hit
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, rng.uniform(LOW, HIGH),
                                                 lambda obs: int(rng.integers(3))))
    for _ in range(3):  # pumping energy: the flag is reached
        state = np.array([rng.uniform(-0.6, -0.4), 0.0])
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, state, _push_with_velocity))
    assert lengths[:3] == [200] * 3
    assert all(t < 200 for t in lengths[6:])  # terminated at the flag
    # a goal velocity: the car must reach the flag faster than that
    length = _episode_beside_gymnasium(run_beside_gymnasium, np.array([-0.5, 0.0]), _push_with_velocity,
                                       goal_velocity=0.02)
    assert length > lengths[6]


def test_matches_gymnasium_one_step_from_many_states(step_once_beside_gymnasium):
    rng = np.random.default_rng(1)
    states = rng.uniform(LOW, HIGH, size=(300, 2))
    edges = [[-1.2, -0.07], [-1.2, 0.0], [-1.19, -0.02], [0.6, 0.07], [0.49, 0.01], [0.5, 0.0], [0.5, -1e-9]]
    states = np.concatenate([states, np.array(edges)])
    actions = rng.integers(3, size=len(states)).tolist()
    env = MountainCar(num_envs=len(states), backend="cpu")
    env.reset()
    step_once_beside_gymnasium(env, gym.make("MountainCar-v0"), states, actions, state_atol=0.0)
    terminated = env.store["terminated"]
    assert 0 < int(terminated.sum()) < len(states)  # both outcomes were compared
    assert bool(((env.store["state"][:, 0] == -1.2) & (env.store["state"][:, 1] == 0.0)).any())  # stopped at the wall


@pytest.mark.parametrize("start", [
    {"start": "identical", "initial_state": (0.3, 0.04)},  # rolling up to the flag: terminations
])
def test_cpu_and_cuda_kernels_agree(agree_on_both_targets, start):
    agree_on_both_targets(MountainCar, start)


def test_random_starts_are_drawn_per_replica_in_gymnasiums_range():
    a = MountainCar(num_envs=64, backend="cpu", seed=7)
    a.reset()
    position, velocity = a.store["state"].unbind(1)
    assert len(set(position.tolist())) == 64  # every replica draws its own start
    assert bool(((position >= -0.6) & (position < -0.4)).all()) and bool((velocity == 0).all())
    assert float(position.min()) < -0.58 and float(position.max()) > -0.42  # the whole range is used


def test_defaults_are_gymnasiums():
    env = MountainCar(backend="cpu")
    reference = gym.make("MountainCar-v0")
    assert env.config.episode_length == reference.spec.max_episode_steps == 200
    assert env.single_action_space() == reference.action_space
    assert env.single_observation_space == reference.observation_space


def test_goal_reached_metric():
    env = MountainCar(num_envs=2, backend="cpu", episode_length=1)
    env.reset()
    env.store["state"].copy_(torch.tensor([[0.49, 0.02], [-0.5, 0.0]], dtype=torch.float64))
    _, _, terminated, truncated, _ = env.step(torch.ones(2, 1, dtype=torch.int32))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, True]
    assert env.store["final_metrics"][:, 0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"episode_length": 0}, "^episode_length: expected an integer >= 1, got 0$"),
        ({"goal_velocity": 0.1}, "^goal_velocity: expected a float >= -0.07 and <= 0.07, got 0.1$"),
        ({"goal_velocity": "high"}, "^goal_velocity: expected a float >= -0.07 and <= 0.07, got 'high'$"),
        ({"goal_velocity": True}, "^goal_velocity: expected a float >= -0.07 and <= 0.07, got True$"),
        ({"initial_state": (0.0,)}, r"^initial_state: expected 2 values \(position, velocity\), got 1$"),
        ({"initial_state": (0.0, float("nan"))}, r"^initial_state\[1\]: expected a finite float, got nan$"),
        ({"initial_state": (0.7, 0.0)}, r"^initial_state\[0\]: expected a position in \[-1.2, 0.6\], got 0.7$"),
        ({"initial_state": (0.0, -0.08)},
         r"^initial_state\[1\]: expected a velocity in \[-0.07, 0.07\] \(the car's speed limit\), got -0.08$"),
        ({"goal_velocty": 0.0}, r"^goal_velocty: unknown key; did you mean 'goal_velocity'\?$"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        MountainCar(backend="cpu", start="identical", **overrides)


def test_initial_state_needs_identical_start():
    with pytest.raises(ValueError, match="start='identical'"):
        MountainCar(backend="cpu", initial_state=(-0.5, 0.0))
