"""The Gymnasium vector adapter: registered ids, Gymnasium's own checks, SAME_STEP final observations."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils import env_checker
from gymnasium.utils.passive_env_checker import check_obs
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from warpdrive.adapters.gymnasium import GYMNASIUM_IDS, WarpDriveVectorEnv, register_envs
from warpdrive.envs import make

register_envs()

CARTPOLE_START_BOUND = 0.05
CARTPOLE_X_LIMIT, CARTPOLE_THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360


@pytest.mark.parametrize("env_id", sorted(GYMNASIUM_IDS))
def test_make_vec_builds_the_env_with_gymnasiums_spaces(env_id: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # make_vec warns about missing or wrong autoreset metadata
        envs = gym.make_vec(env_id, num_envs=3, device="cpu", max_episode_steps=7)
    assert isinstance(envs, WarpDriveVectorEnv) and envs.num_envs == 3 and envs.spec.id == env_id
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.env.config.episode_length == 7 and envs.env.name == GYMNASIUM_IDS[env_id]
    gymnasium_env = gym.make(env_id.removeprefix("warpdrive/"))
    assert envs.single_observation_space == gymnasium_env.observation_space
    assert envs.single_action_space == gymnasium_env.action_space
    assert envs.observation_space.shape == (3, *gymnasium_env.observation_space.shape)


@pytest.mark.parametrize("env_id", sorted(GYMNASIUM_IDS))
def test_gymnasiums_reset_checks_pass(env_id: str):
    envs = gym.make_vec(env_id, num_envs=4, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checks report some problems only as warnings
        env_checker.check_reset_return_type(envs)
        env_checker.check_reset_seed_determinism(envs)
        env_checker.check_reset_options(envs)
        env_checker.check_reset_return_info_deprecation(envs)
        env_checker.check_seed_deprecation(envs)
    # this check expects one flag per step, so it runs on a single replica
    env_checker.check_returned_data_not_reused(gym.make_vec(env_id, num_envs=1, device="cpu"))


@pytest.mark.parametrize("env_id", sorted(GYMNASIUM_IDS))
def test_steps_are_deterministic_and_in_the_spaces(env_id: str):
    envs = gym.make_vec(env_id, num_envs=4, device="cpu")
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(30)]
    runs = []
    for _ in range(2):
        obs, _ = envs.reset(seed=5)
        run = [obs]
        for action in actions:
            obs, rewards, terminated, truncated, info = envs.step(action)
            check_obs(obs, envs.observation_space, "step")
            assert rewards.shape == terminated.shape == truncated.shape == (4,)
            assert terminated.dtype == truncated.dtype == np.bool_
            run.append((obs, rewards, terminated, truncated, info))
        runs.append(run)
    assert env_checker.data_equivalence(runs[0], runs[1], exact=True)


def test_a_reset_without_seed_draws_fresh_starts():
    envs = gym.make_vec("warpdrive/CartPole-v1", num_envs=4, device="cpu")
    seeded, _ = envs.reset(seed=2)
    fresh, _ = envs.reset()
    assert not np.isin(fresh, seeded).any()
    assert envs.unwrapped.env.store["episode"].tolist() == [2, 2, 2, 2]
    assert np.array_equal(envs.reset(seed=2)[0], seeded)


def test_cartpole_same_step_autoreset_under_record_episode_statistics():
    envs = RecordEpisodeStatistics(gym.make_vec("warpdrive/CartPole-v1", num_envs=6, device="cpu"))
    inner: WarpDriveVectorEnv = envs.unwrapped
    envs.reset(seed=3)
    envs.action_space.seed(3)
    episodes = 0
    for _ in range(200):
        obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        done = terminated | truncated
        assert (rewards == 1).all()
        assert ("final_obs" in info) == done.any()
        if not done.any():
            continue
        episodes += int(done.sum())
        assert np.array_equal(info["_final_obs"], done) and np.array_equal(info["_final_info"], done)
        assert info["final_info"] == {}
        assert all((info["final_obs"][i] is None) != done[i] for i in range(6))
        # CartPole's last observation is past a termination limit; the one returned is a fresh start
        last = np.stack(list(info["final_obs"][done]))
        past_limit = (np.abs(last[:, 0]) > CARTPOLE_X_LIMIT) | (np.abs(last[:, 2]) > CARTPOLE_THETA_LIMIT)
        assert np.array_equal(past_limit, terminated[done])
        assert (np.abs(obs[done]) <= CARTPOLE_START_BOUND).all()
        # RecordEpisodeStatistics counts as the env does (reward 1 per step)
        lengths = inner.env.store["final_length"].numpy()[done]
        assert np.array_equal(info["episode"]["l"][done], lengths)
        assert np.array_equal(info["episode"]["r"][done], lengths.astype(np.float64))
    assert episodes > 20 and envs.episode_count == episodes
    assert len(envs.return_queue) == min(episodes, 100)


def test_reset_mask_restarts_only_those_replicas():
    envs = RecordEpisodeStatistics(gym.make_vec("warpdrive/CartPole-v1", num_envs=4, device="cpu"))
    envs.reset(seed=0)
    for _ in range(3):
        obs, *_ = envs.step(np.ones(4, dtype=np.int64))
    mask = np.array([True, False, False, True])
    restarted, _ = envs.reset(options={"reset_mask": mask})
    assert np.array_equal(restarted[~mask], obs[~mask])
    assert (np.abs(restarted[mask]) <= CARTPOLE_START_BOUND).all() and not np.array_equal(restarted[mask], obs[mask])
    assert envs.unwrapped.env.store["t"].tolist() == [0, 3, 3, 0]


def test_bad_input_is_refused():
    envs = gym.make_vec("warpdrive/CartPole-v1", num_envs=2, device="cpu")
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions have shape \(3,\), expected \(2,\)"):
        envs.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="action out of range"):
        envs.step(np.array([0, 2]))
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['bogus'\]"):
        envs.reset(options={"bogus": 1})
    with pytest.raises(ValueError, match="must be a NumPy bool array of shape"):
        envs.reset(options={"reset_mask": np.ones(2, dtype=np.int64)})
    with pytest.raises(TypeError, match="seed must be one int"):
        envs.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="max_episode_steps=5 and episode_length=6 disagree"):
        gym.make_vec("warpdrive/CartPole-v1", num_envs=2, device="cpu", max_episode_steps=5, episode_length=6)
    with pytest.raises(ValueError, match="is for single-agent envs; TagGridWorld has 3 agents"):
        WarpDriveVectorEnv(make("tag_gridworld", num_taggers=2, grid_length=5, device="cpu"))


def test_torch_threads_are_set_on_the_cpu_only_when_asked():
    torch.set_num_threads(2)
    WarpDriveVectorEnv(make("cartpole", device="cpu"), torch_threads=None)
    assert torch.get_num_threads() == 2
    WarpDriveVectorEnv(make("cartpole", device="cpu"))
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="torch_threads must be an integer >= 1 or None"):
        WarpDriveVectorEnv(make("cartpole", device="cpu"), torch_threads=0)


def test_render_gives_every_replica_as_an_rgb_array():
    envs = gym.make_vec("warpdrive/CartPole-v1", num_envs=2, device="cpu", render_mode="rgb_array")
    assert envs.render_mode == "rgb_array" and envs.metadata["render_modes"] == ["rgb_array"]
    envs.reset(seed=1)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    for i, frame in enumerate(frames):
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert np.array_equal(frame, envs.env.render(i))
    assert not np.array_equal(frames[0], frames[1])  # two replicas, two starts
    with pytest.warns(UserWarning, match="without a render mode"):
        assert gym.make_vec("warpdrive/CartPole-v1", num_envs=1, device="cpu").render() is None
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['rgb_array'\], got 'human'"):
        gym.make_vec("warpdrive/CartPole-v1", num_envs=1, device="cpu", render_mode="human")
