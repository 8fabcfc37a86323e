"""MountainCarContinuous against Gymnasium's MountainCarContinuous-v0, CPU against CUDA kernels, seeding and
bad inputs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from warpdrive.envs.mountain_car_continuous import MountainCarContinuous

pytestmark = pytest.mark.xdist_group("mountain_car_continuous")  # one worker: see test_contract.by_env

LOW = np.array([-1.2, -0.07])
HIGH = np.array([0.6, 0.07])


def _episode_beside_gymnasium(run_beside_gymnasium, state: np.ndarray, choose_action, *,
                              validate: bool | None = None) -> int:
    reference = gym.make("MountainCarContinuous-v0")
    reference.reset(seed=0)
    reference.unwrapped.state = state.copy()  # float64, as Gymnasium's reset leaves it
    env = MountainCarContinuous(backend="cpu", start="identical", initial_state=tuple(state.tolist()),
                                validate=validate)
    np.testing.assert_array_equal(env.reset()[0, 0].numpy(), state.astype(np.float32))
    # Gymnasium's float32 and float64 steps reproduced bit for bit
    return run_beside_gymnasium(env, reference, choose_action, state_atol=0.0)


def _full_throttle_with_velocity(rng: np.random.Generator, noise: float):
    """Throttle in the direction of motion, with Gaussian noise: reaches the flag (about 100 steps)."""
    return lambda obs: float(np.clip(np.sign(obs[1]) + noise * rng.normal(), -1.0, 1.0))


def test_matches_gymnasium_over_episodes(run_beside_gymnasium):
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(2):  # Gymnasium's start distribution, random throttles: truncated at 999 steps
        state = np.array([rng.uniform(-0.6, -0.4), 0.0])
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, state, lambda obs: rng.uniform(-1.0, 1.0)))
    for noise in (0.0, 0.3, 1.0):  # the flag is reached
        state = np.array([rng.uniform(-0.6, -0.4), 0.0])
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, state,
                                                 _full_throttle_with_velocity(rng, noise)))
    for _ in range(3):  # anywhere: the walls are hit
        lengths.append(_episode_beside_gymnasium(run_beside_gymnasium, rng.uniform(LOW, HIGH),
                                                 _full_throttle_with_velocity(rng, 1.0)))
    assert lengths[:2] == [999] * 2
    assert all(t < 999 for t in lengths[2:5])


def test_unvalidated_out_of_range_throttle_is_clipped_like_gymnasium(run_beside_gymnasium):
    # the dynamics see the clipped throttle, the cost the unclipped one
    rng = np.random.default_rng(1)
    policy = _full_throttle_with_velocity(rng, 0.5)
    for _ in range(2):
        state = np.array([rng.uniform(-0.6, -0.4), 0.0])
        _episode_beside_gymnasium(run_beside_gymnasium, state, lambda obs: 3.0 * policy(obs), validate=False)


@pytest.mark.parametrize("first_step", [True, False])
def test_matches_gymnasium_one_step_from_many_states(step_once_beside_gymnasium, first_step):
    """From the float64 start an episode's first step begins with, and from the float32 state every other
    step begins with."""
    rng = np.random.default_rng(2)
    states = rng.uniform(LOW, HIGH, size=(300, 2))
    edges = [[-1.2, -0.07], [-1.2, 0.0], [-1.19, -0.02], [0.6, 0.07], [0.44, 0.01], [0.45, 0.0], [0.45, -1e-9]]
    states = np.concatenate([states, np.array(edges)])
    throttles = rng.uniform(-2.0, 2.0, size=len(states))
    throttles[:3] = [-1.0, 1.0, 0.0]
    env = MountainCarContinuous(num_envs=len(states), backend="cpu", validate=False)
    env.reset()
    if not first_step:
        states = states.astype(np.float32).astype(np.float64)
        env.store["t"].fill_(1)
    step_once_beside_gymnasium(env, gym.make("MountainCarContinuous-v0"), states, throttles.tolist(),
                               state_atol=0.0, gym_dtype=np.float64 if first_step else np.float32)
    assert 0 < int(env.store["terminated"].sum()) < len(states)  # both outcomes were compared


@pytest.mark.parametrize("start", [
    {"start": "identical", "initial_state": (0.3, 0.04)},  # rolling up to the flag: terminations
])
def test_cpu_and_cuda_kernels_agree(agree_on_both_targets, start):
    agree_on_both_targets(MountainCarContinuous, start)


def test_random_starts_are_drawn_per_replica_in_gymnasiums_range():
    a = MountainCarContinuous(num_envs=64, backend="cpu", seed=7)
    a.reset()
    position, velocity = a.store["state"].unbind(1)
    assert len(set(position.tolist())) == 64  # every replica draws its own start
    assert bool(((position >= -0.6) & (position < -0.4)).all()) and bool((velocity == 0).all())


def test_defaults_are_gymnasiums():
    env = MountainCarContinuous(backend="cpu")
    reference = gym.make("MountainCarContinuous-v0")
    assert env.config.episode_length == reference.spec.max_episode_steps == 999
    assert env.single_action_space() == reference.action_space
    assert env.single_observation_space == reference.observation_space


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"episode_length": 0}, "^episode_length: expected an integer >= 1, got 0$"),
        ({"goal_velocity": -0.5}, "^goal_velocity: expected a float >= -0.07 and <= 0.07, got -0.5$"),
        ({"goal_velocity": "high"}, "^goal_velocity: expected a float >= -0.07 and <= 0.07, got 'high'$"),
        ({"initial_state": (0.0, 0.0, 0.0)}, r"^initial_state: expected 2 values \(position, velocity\), got 3$"),
        ({"initial_state": (-1.3, 0.0)}, r"^initial_state\[0\]: expected a position in \[-1.2, 0.6\], got -1.3$"),
        ({"episode_lenght": 999}, r"^episode_lenght: unknown key; did you mean 'episode_length'\?$"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        MountainCarContinuous(backend="cpu", start="identical", **overrides)
