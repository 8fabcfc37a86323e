"""The PettingZoo adapter: PettingZoo's own API and seed tests, and agreement with the batched env."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from forced_choice import ForcedChoice
from pettingzoo.test import parallel_api_test, parallel_seed_test

from warpdrive.adapters.pettingzoo import WarpDriveParallelEnv
from warpdrive.envs import REGISTRY, make

# every registered env (the multi-agent ones small, with short episodes so that the tests see several), and
# the MPE envs with continuous actions too
SMALL: dict[str, dict[str, Any]] = {
    "tag_gridworld": {"num_taggers": 2, "grid_length": 5, "episode_length": 30},
    "tag_continuous": {"num_taggers": 2, "num_runners": 3, "grid_length": 3.0, "episode_length": 30},
    "simple_tag": {"num_good": 1, "num_adversaries": 2, "num_obstacles": 1, "episode_length": 30},
    "simple_spread": {"num_agents": 3, "episode_length": 30},
    "simple_adversary": {"num_good": 2, "num_adversaries": 1, "episode_length": 30},
    "simple_spread_continuous": {"num_agents": 3, "episode_length": 30, "continuous_actions": True},
    **{name: {} for name in ("cartpole", "pendulum", "acrobot", "mountain_car", "mountain_car_continuous")},
}
assert set(REGISTRY) <= set(SMALL), f"add {sorted(set(REGISTRY) - set(SMALL))} to SMALL"


def _parallel_env(case: str, **kwargs: Any) -> WarpDriveParallelEnv:
    name = case.removesuffix("_continuous") if case.startswith("simple_") else case
    return WarpDriveParallelEnv(make(name, num_envs=1, device="cpu", **SMALL[case]), **kwargs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_pettingzoo_api_and_seed_tests_pass(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PettingZoo reports some API problems only as warnings
        parallel_api_test(_parallel_env(name), num_cycles=100)
        parallel_seed_test(lambda: _parallel_env(name), num_cycles=40)


def test_agents_are_named_by_group_and_step_as_in_the_batched_env():
    env = _parallel_env("tag_gridworld")
    assert env.possible_agents == ["taggers_0", "taggers_1", "runner_0"]
    reference = make("tag_gridworld", num_envs=1, device="cpu", **SMALL["tag_gridworld"])
    observations, _ = env.reset(seed=3)
    expected = reference.reset(seed=3)
    assert all(np.array_equal(observations[a], expected[0, i].numpy()) for i, a in enumerate(env.possible_agents))
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents:
        choices = rng.integers(0, 5, size=3)
        observations, rewards, terminations, truncations, _ = env.step(dict(zip(env.agents, choices, strict=True)))
        reference.actions.copy_(torch.as_tensor(choices, dtype=torch.int32).view(1, 3, 1))
        reference.step_without_reset()
        steps += 1
        for i, agent in enumerate(env.possible_agents):
            assert np.array_equal(observations[agent], reference.obs[0, i].numpy())
            assert rewards[agent] == float(reference.store["rewards"][0, i])
            assert terminations[agent] == bool(reference.store["terminated"][0])
            assert truncations[agent] == bool(reference.store["truncated"][0])
    assert steps == int(reference.store["t"][0]) and env.agents == []
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({})
    # without a seed the random stream carries on: the next episode starts elsewhere
    assert not np.array_equal(env.reset()[0]["runner_0"], env.reset(seed=3)[0]["runner_0"])


@pytest.mark.parametrize("two_heads", [False, True])
def test_action_masks_reach_pettingzoos_sampler(two_heads: bool):
    def build(checked: bool = True) -> WarpDriveParallelEnv:
        return WarpDriveParallelEnv(ForcedChoice(num_envs=1, device="cpu", validate=checked, check_actions=checked,
                                                 two_heads=two_heads))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(build(), num_cycles=20)  # the env's validation rejects any action the mask forbids
        # PettingZoo's seed test samples without the masks: it checks determinism, so both action checks are off
        parallel_seed_test(lambda: build(checked=False), num_cycles=10)
    env = build()
    observations, _ = env.reset(seed=0)
    head_0 = np.array([1, 0, 0], dtype=np.int8)
    for k, agent in enumerate(env.possible_agents):
        mask = observations[agent]["action_mask"]
        assert observations[agent] in env.observation_space(agent)
        if two_heads:
            assert np.array_equal(mask[0], head_0) and np.array_equal(mask[1], np.eye(2, dtype=np.int8)[k % 2])
        else:
            assert np.array_equal(mask, head_0)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="build the env with num_envs=1, got 2"):
        WarpDriveParallelEnv(make("tag_gridworld", num_envs=2, device="cpu", **SMALL["tag_gridworld"]))
    env = _parallel_env("tag_gridworld")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing \['runner_0'\], unknown \['ghost'\]"):
        env.step({"taggers_0": 0, "taggers_1": 0, "ghost": 1})
    with pytest.raises(ValueError, match="action out of range"):
        env.step({"taggers_0": 0, "taggers_1": 0, "runner_0": 7})
    with pytest.raises(KeyError, match="unknown agent 'ghost'"):
        env.action_space("ghost")


@pytest.mark.parametrize("name", ["tag_gridworld", "simple_spread"])
def test_render_gives_the_game_as_an_rgb_array(name: str):
    env = _parallel_env(name, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame is not None and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert np.array_equal(frame, env.env.render(0))  # the replica the adapter plays
    assert frame.std() > 0  # something is drawn
    with pytest.warns(UserWarning, match="without a render mode"):
        assert _parallel_env(name).render() is None
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['rgb_array'\], got 'human'"):
        _parallel_env(name, render_mode="human")
