"""Learning happens: trained policies clearly beat random ones within a small budget, on the CPU.

Each test trains with a packaged config (``warpdrive/envs/<env>/train.yaml``), then evaluates the final
policies on fresh envs, one episode per replica, against uniformly random actions.
"""

from __future__ import annotations

import pytest
from training_helpers import train_and_judge

from warpdrive.training.config import load_config


def train_and_evaluate(name: str, overrides: list[str], episodes: int, deterministic: bool = False):
    judged = train_and_judge(load_config(name, ["device=cpu", *overrides]), episodes, deterministic)
    return judged.trained, judged.random


def test_taggers_learn_to_catch_the_runner() -> None:
    """Two taggers on a 5x5 grid against a random runner: episodes end (the runner is caught) in less than
    half as many steps as with random taggers (measured: about 5 vs 21 steps, after 60k env-steps)."""
    trained, random = train_and_evaluate(
        "tag_gridworld", ["policies.runner.algorithm=random", "total_env_steps=60000"], episodes=200)
    assert random["episode_length"] > 15
    assert trained["episode_length"] < 0.5 * random["episode_length"]
    assert trained["return/taggers"] > random["return/taggers"]


@pytest.mark.slow
def test_ppo_solves_cartpole() -> None:
    """PPO reaches a mean return of at least 475 (of 500) within 500k env-steps (measured: 500)."""
    trained, random = train_and_evaluate("cartpole", ["total_env_steps=500000"], episodes=100)
    assert random["return/agents"] < 50
    assert trained["return/agents"] >= 475


@pytest.mark.slow
def test_ddpg_swings_up_the_pendulum() -> None:
    """DDPG beats random torques clearly within 25k env-steps: mean return above -400 (measured: about -150;
    random: about -1200)."""
    trained, random = train_and_evaluate("pendulum", ["total_env_steps=25000"], episodes=100, deterministic=True)
    assert random["return/agents"] < -1000
    assert trained["return/agents"] > -400
