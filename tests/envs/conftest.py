"""Fixtures shared by the tests of envs that re-implement a Gymnasium env: stepping one beside the original.

Our envs and Gymnasium's are compared from the same state with the same actions. Gymnasium's rewards
are Python floats; ours are their float32 rounding, so rewards are compared after rounding Gymnasium's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive.core.env import Env

ActionChooser = Callable[[np.ndarray], "int | float"]


def _both_actions(env: Env, actions: Sequence[int | float]) -> tuple[torch.Tensor, list]:
    """``actions`` (one per replica) as our action tensor [N, 1, 1] and as Gymnasium's actions."""
    if env.action_dtype() == torch.float32:
        values = np.asarray(actions, dtype=np.float32)
        return torch.from_numpy(values).reshape(-1, 1, 1), [np.array([v], dtype=np.float32) for v in values]
    return torch.tensor(actions, dtype=torch.int32).reshape(-1, 1, 1), [int(a) for a in actions]


def _gymnasium_state(reference: gym.Env) -> np.ndarray:
    return np.asarray(reference.unwrapped.state, dtype=np.float64)


@pytest.fixture(scope="session")
def run_beside_gymnasium() -> Callable[..., int]:
    """``run(env, reference, choose_action, *, state_atol, obs_atol=0.0) -> episode length``.

    Steps ``env`` (one replica, ``state`` array in float64) and Gymnasium's ``reference`` (made with
    ``gym.make``, so under its time limit), both already in the same state, with the same actions until
    Gymnasium's episode ends, and compares after every step: done flags exactly (Gymnasium's
    ``TimeLimit`` also flags truncation on a terminating last step; the core does not), rewards, the
    observation (``final_obs`` on the last step) to ``obs_atol`` and the state to ``state_atol``.
    ``choose_action(obs)`` gets our current observation [D] and returns an action index or a Box value.
    """

    def run(env: Env, reference: gym.Env, choose_action: ActionChooser, *, state_atol: float,
            obs_atol: float = 0.0) -> int:
        for t in range(1, env.config.episode_length + 1):
            ours, (theirs,) = _both_actions(env, [choose_action(env.obs[0, 0].numpy().copy())])
            gym_obs, gym_reward, gym_terminated, gym_truncated, _ = reference.step(theirs)
            obs, reward, terminated, truncated, info = env.step(ours)
            done = gym_terminated or gym_truncated
            at = f"step {t}"
            assert bool(info["done"][0]) == done, at
            assert bool(terminated[0]) == gym_terminated, at
            assert bool(truncated[0]) == (gym_truncated and not gym_terminated), at
            assert float(reward[0, 0]) == float(np.float32(gym_reward)), f"{at}: {float(reward[0, 0])} vs {gym_reward}"
            # after an autoreset, the episode's last observation is in final_obs
            np.testing.assert_allclose((info["final_obs"] if done else obs)[0, 0].numpy(), gym_obs, atol=obs_atol,
                                       rtol=0, err_msg=at)
            if done:
                return t
            np.testing.assert_allclose(env.store["state"][0].numpy(), _gymnasium_state(reference), atol=state_atol,
                                       rtol=0, err_msg=f"float64 state, {at}")
        raise AssertionError(f"Gymnasium's episode did not end within {env.config.episode_length} steps")

    return run


@pytest.fixture(scope="session")
def step_once_beside_gymnasium() -> Callable[..., None]:
    """``step(env, reference, states, actions, *, state_atol, obs_atol=0.0, gym_dtype=np.float64)``.

    Writes ``states`` [N, S] into the N replicas of ``env``, steps each once with its action (without
    autoreset, so that terminating steps are seen too), and compares each replica with one step of
    Gymnasium's unwrapped ``reference`` from the same state (given to it as a ``gym_dtype`` array):
    terminated and reward exactly, observation and state to the tolerances.
    """

    def step(env: Env, reference: gym.Env, states: np.ndarray, actions: Sequence[int | float], *,
             state_atol: float, obs_atol: float = 0.0, gym_dtype: type = np.float64) -> None:
        ours, theirs = _both_actions(env, actions)
        env.store["state"].copy_(torch.from_numpy(states))
        env.actions.copy_(ours)
        env.step_without_reset()
        for i, (state, action) in enumerate(zip(states, theirs, strict=True)):
            reference.unwrapped.state = state.astype(gym_dtype)
            gym_obs, gym_reward, gym_terminated, _, _ = reference.unwrapped.step(action)
            at = f"replica {i}: state {state.tolist()}, action {action}"
            assert bool(env.store["terminated"][i]) == gym_terminated, at
            assert float(env.store["rewards"][i, 0]) == float(np.float32(gym_reward)), at
            np.testing.assert_allclose(env.obs[i, 0].numpy(), gym_obs, atol=obs_atol, rtol=0, err_msg=at)
            np.testing.assert_allclose(env.store["state"][i].numpy(), _gymnasium_state(reference), atol=state_atol,
                                       rtol=0, err_msg=at)

    return step


@pytest.fixture(scope="session")
def agree_on_both_targets(gpu_backend: str) -> Callable[..., None]:
    """``check(env_class, start)``: 4 replicas of 20-step episodes stepped 45 times on the CPU and on the CUDA
    target from the same seed and actions agree, from identical-start kwargs ``start`` from which episodes
    terminate (more episodes end than the 8 that truncation alone ends). The contract
    (tests/envs/test_contract.py) compares random starts; this adds the env-specific terminations."""

    def check(env_class: type[Env], start: dict) -> None:
        from warpdrive.core.checker import check_consistency

        reference = env_class(num_envs=4, backend="cpu", seed=3, episode_length=20, **start)
        candidate = env_class(num_envs=4, backend=gpu_backend, seed=3, episode_length=20, **start)
        report = check_consistency(reference, candidate, steps=45, seed=3)
        assert report.ok, str(report)
        assert report.episodes_finished > 8

    return check
