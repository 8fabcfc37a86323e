"""The Stable-Baselines3 adapter: SB3's VecEnv contract, and SB3's own PPO learning our CartPole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor

from warpdrive.adapters.sb3 import WarpDriveVecEnv
from warpdrive.envs import make


def test_finished_episodes_carry_their_terminal_observation():
    venv = WarpDriveVecEnv(make("cartpole", num_envs=8, device="cpu", episode_length=12))
    venv.seed(4)
    venv.reset()
    ends = {"terminated": 0, "truncated": 0}
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs, rewards, dones, infos = venv.step(rng.integers(0, 2, size=8))
        store = venv.env.store
        assert np.array_equal(dones, store["done"].numpy()) and (rewards == 1).all()
        for i in range(8):
            if not dones[i]:
                assert infos[i] == {}
                continue
            truncated = bool(store["truncated"][i])
            assert infos[i]["TimeLimit.truncated"] == truncated
            assert np.array_equal(infos[i]["terminal_observation"], store["final_obs"][i, 0].numpy())
            assert not np.array_equal(infos[i]["terminal_observation"], obs[i])
            ends["truncated" if truncated else "terminated"] += 1
    assert ends["truncated"] > 0 and ends["terminated"] > 0  # random pushes: some poles fall, some last 12 steps


def test_seed_makes_resets_reproducible_and_options_are_refused():
    venv = WarpDriveVecEnv(make("cartpole", num_envs=3, device="cpu"))
    venv.seed(9)
    first = venv.reset()
    venv.seed(9)
    assert np.array_equal(venv.reset(), first)
    assert not np.array_equal(venv.reset(), first)  # no seed: the streams carry on
    venv.seed(9)
    assert np.array_equal(venv.reset(), first)
    venv.set_options({"bogus": 1})
    with pytest.raises(ValueError, match="CartPole takes no reset options"):
        venv.reset()
    assert venv.get_attr("render_mode") == [None, None, None] and venv.env_is_wrapped(VecMonitor) == [False] * 3
    with pytest.raises(AttributeError, match="share one warpdrive env"):
        venv.env_method("reset")


def test_ppo_learns_cartpole():
    """SB3's PPO, as its users run it (RL Zoo's CartPole-v1 hyperparameters), on 15k steps of our CartPole, with
    SB3's own check of a VecEnv's data (``VecCheckNan``: no NaN or infinity in actions, observations or rewards).

    Random actions average about 22 per episode; 15k steps took 28-50 s on a busy core and scored 323.
    """
    venv = VecMonitor(VecCheckNan(WarpDriveVecEnv(make("cartpole", num_envs=8, device="cpu", seed=0)),
                                  raise_exception=True))
    assert torch.get_num_threads() == 1
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=lambda progress: 1e-3 * progress,
                clip_range=lambda progress: 0.2 * progress, seed=0, device="cpu")
    model.learn(15_000)
    evaluation = VecMonitor(WarpDriveVecEnv(make("cartpole", num_envs=16, device="cpu", seed=1)))
    mean_return, _ = evaluate_policy(model, evaluation, n_eval_episodes=16, deterministic=True)
    assert mean_return > 150
