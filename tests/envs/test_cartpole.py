"""CartPole against Gymnasium's CartPole-v1, its random starts and its parameters (the contract every env meets is
tests/envs/test_contract.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive.envs.cartpole import CartPole

pytestmark = pytest.mark.xdist_group("cartpole")  # one worker: see test_contract.by_env

# The framework's float32 observation against Gymnasium's (both round the same float64 state).
ATOL = 1e-5


def _run_against_gymnasium(state: np.ndarray, choose_action, *, sutton_barto_reward: bool = False) -> int:
    """Step both envs from ``state`` with the same actions until Gymnasium's episode ends; returns its length.

    ``choose_action(obs) -> int`` sees Gymnasium's observation (so a feedback policy can balance).
    """
    reference = gym.make("CartPole-v1", sutton_barto_reward=sutton_barto_reward)
    reference.reset(seed=0)
    reference.unwrapped.state = state.copy()
    gym_obs = np.asarray(state, dtype=np.float32)
    env = CartPole(backend="cpu", start="identical", initial_state=tuple(float(v) for v in state),
                   sutton_barto_reward=sutton_barto_reward)
    np.testing.assert_allclose(env.reset()[0, 0].numpy(), gym_obs, atol=ATOL, rtol=0)
    for t in range(1, 501):
        action = choose_action(gym_obs)
        gym_obs, gym_reward, gym_terminated, gym_truncated, _ = reference.step(action)
        obs, reward, terminated, truncated, info = env.step(torch.tensor([[action]], dtype=torch.int32))
        done = gym_terminated or gym_truncated
        assert bool(info["done"][0]) == done, f"step {t}"
        assert bool(terminated[0]) == gym_terminated, f"step {t}"
        # Gymnasium's TimeLimit also flags truncation on a terminating last step; the core does not
        assert bool(truncated[0]) == (gym_truncated and not gym_terminated), f"step {t}"
        assert float(reward[0, 0]) == gym_reward, f"step {t}"
        # after an autoreset, the episode's last observation is in final_obs
        ours = (info["final_obs"] if done else obs)[0, 0].numpy()
        np.testing.assert_allclose(ours, gym_obs, atol=ATOL, rtol=0, err_msg=f"step {t}")
        if done:
            return t
        np.testing.assert_allclose(env.store["state"][0].numpy(), reference.unwrapped.state, atol=1e-12, rtol=0,
                                   err_msg=f"float64 state, step {t}")
    raise AssertionError("Gymnasium's episode did not end within 500 steps")


def test_matches_gymnasium_with_random_actions():
    rng = np.random.default_rng(0)
    lengths = []
    for bound in (0.05,) * 10 + (0.2,) * 5:
        state = rng.uniform(-bound, bound, size=4)
        lengths.append(_run_against_gymnasium(state, lambda obs: int(rng.integers(2))))
    assert all(t < 500 for t in lengths)  # every episode ended by termination


def test_matches_gymnasium_over_a_balanced_full_episode():
    # a feedback policy with 10% random actions keeps the pole up for all 500 steps: the float64
    # state must then follow Gymnasium's along an unstable equilibrium (float32 state drifts away)
    rng = np.random.default_rng(1)

    def policy(obs):
        if rng.random() < 0.1:
            return int(rng.integers(2))
        x, x_dot, theta, theta_dot = obs
        return int(theta + 0.3 * theta_dot + 0.01 * x + 0.05 * x_dot > 0)

    assert _run_against_gymnasium(rng.uniform(-0.05, 0.05, size=4), policy) == 500


def test_sutton_barto_reward_matches_gymnasium():
    rng = np.random.default_rng(2)
    for _ in range(3):
        _run_against_gymnasium(rng.uniform(-0.05, 0.05, size=4), lambda obs: int(rng.integers(2)),
                               sutton_barto_reward=True)


def test_random_starts_are_drawn_per_replica_and_in_bounds():
    a = CartPole(num_envs=64, backend="cpu", seed=7)
    first = a.reset().clone()
    assert len({tuple(row) for row in first[:, 0].tolist()}) == 64  # every replica draws its own start
    state = a.store["state"]
    assert bool(((state >= -0.05) & (state < 0.05)).all())
    # a new episode after an autoreset starts from a new draw
    a.reset(seed=7)
    a.actions.fill_(1)
    while not bool(a.step()[4]["done"][0]):
        pass
    assert not torch.equal(a.obs[0], first[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"episode_length": 0}, "^episode_length: expected an integer >= 1, got 0$"),
        ({"episode_length": 2.5}, "^episode_length: expected an integer >= 1, got 2.5$"),
        ({"sutton_barto_reward": "yes"}, "^sutton_barto_reward: expected true or false, got 'yes'$"),
        ({"sutton_barto_reward": 1}, "^sutton_barto_reward: expected true or false, got 1$"),
        ({"initial_state": (0.0, 0.0, 0.0)},
         r"^initial_state: expected 4 values \(x, x_dot, theta, theta_dot\), got 3$"),
        ({"initial_state": (0.0, float("nan"), 0.0, 0.0)},
         r"^initial_state\[1\]: expected a finite float >= -1e\+12 and <= 1e\+12, got nan$"),
        ({"initial_state": (0.0, "high", 0.0, 0.0)},
         r"^initial_state\[1\]: expected a float >= -1e\+12 and <= 1e\+12, got 'high'$"),
        ({"initial_state": "abcd"}, "^initial_state: expected a list, got 'abcd'$"),
        ({"sutton_barto": True}, r"^sutton_barto: unknown key; did you mean 'sutton_barto_reward'\?$"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        CartPole(backend="cpu", start="identical", **overrides)


def test_initial_state_needs_identical_start():
    with pytest.raises(ValueError, match="start='identical'"):
        CartPole(backend="cpu", initial_state=(0.0, 0.0, 0.0, 0.0))
