"""Tag-gridworld: the reference's semantics step by step, hand-worked rules, its parameters (the contract every
env meets is tests/envs/test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from warpdrive.envs.tag_gridworld import TagGridWorld

pytestmark = pytest.mark.xdist_group("tag_gridworld")  # one worker: see test_contract.by_env

reference = pytest.importorskip("example_envs.tag_gridworld.tag_gridworld", reason="rl-warp-drive (test extra)")


def reference_obs(obs: dict) -> np.ndarray:
    return np.stack([obs[i] for i in range(len(obs))]).astype(np.float32)


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("explicit_start", [False, True])
def test_matches_reference_step_by_step(full: bool, explicit_start: bool) -> None:
    num_taggers, length, steps_per_run = 3, 6, 12
    rng = np.random.default_rng(0)
    start = {}
    if explicit_start:
        start = {"starting_location_x": tuple(int(v) for v in rng.integers(0, length + 1, num_taggers + 1)),
                 "starting_location_y": tuple(int(v) for v in rng.integers(0, length + 1, num_taggers + 1))}
    kwargs = dict(num_taggers=num_taggers, grid_length=length, episode_length=10, use_full_observation=full)
    num_envs = 3
    env = TagGridWorld(num_envs=num_envs, backend="cpu", start="identical", **kwargs, **start)
    refs = [reference.TagGridWorld(**kwargs, **{k: np.array(v) for k, v in start.items()}) for _ in range(num_envs)]
    obs = env.reset(seed=0)
    ref_obs = [reference_obs(r.reset()) for r in refs]
    for e in range(num_envs):
        np.testing.assert_allclose(obs[e].numpy(), ref_obs[e], atol=1e-6)
    for _ in range(3 * steps_per_run):
        actions = rng.integers(0, 5, (num_envs, num_taggers + 1))
        obs, rewards, _, _, info = env.step(torch.as_tensor(actions, dtype=torch.int32))
        for e, ref in enumerate(refs):
            r_obs, r_rew, r_done, _ = ref.step({i: int(a) for i, a in enumerate(actions[e])})
            r_rewards = np.array([r_rew[i] for i in range(num_taggers + 1)], np.float32)
            np.testing.assert_allclose(rewards[e].numpy(), r_rewards, atol=1e-6)
            assert bool(info["done"][e]) == r_done["__all__"]
            if r_done["__all__"]:
                np.testing.assert_allclose(info["final_obs"][e].numpy(), reference_obs(r_obs), atol=1e-6)
                np.testing.assert_allclose(obs[e].numpy(), reference_obs(ref.reset()), atol=1e-6)
            else:
                np.testing.assert_allclose(obs[e].numpy(), reference_obs(r_obs), atol=1e-6)


def test_wall_penalty_tag_rewards_and_done() -> None:
    env = TagGridWorld(num_taggers=2, grid_length=4, episode_length=5, backend="cpu", start="identical",
                       starting_location_x=(0, 2, 3), starting_location_y=(0, 2, 2))
    env.reset()
    # tagger 0 walks into the wall (-x at x=0); tagger 1 stays; the runner (2) moves -x onto tagger 1
    _, rewards, terminated, truncated, info = env.step(torch.tensor([[2, 0, 2]], dtype=torch.int32))
    assert rewards[0].tolist() == pytest.approx([10.0 - 0.1, 10.0, -2.0])
    assert bool(terminated[0]) and not bool(truncated[0]) and bool(info["done"][0])
    assert int(env.store["final_length"][0]) == 1
    env.reset()
    _, rewards, terminated, _, _ = env.step(torch.tensor([[0, 0, 1]], dtype=torch.int32))  # no tag
    assert rewards[0].tolist() == pytest.approx([-0.01, -0.01, 0.01])
    assert not bool(terminated[0])


def test_time_limit_truncates_and_autoresets() -> None:
    env = TagGridWorld(num_taggers=1, grid_length=8, episode_length=3, backend="cpu", start="identical",
                       starting_location_x=(8, 0), starting_location_y=(8, 0))
    first = env.reset().clone()
    stay = torch.zeros(1, 2, 1, dtype=torch.int32)
    for t in (1, 2):
        _, _, terminated, truncated, _ = env.step(stay)
        assert not bool(terminated[0]) and not bool(truncated[0]) and int(env.store["t"][0]) == t
    obs, _, terminated, truncated, info = env.step(stay)
    assert bool(truncated[0]) and not bool(terminated[0])
    assert info["final_obs"][0, 0, -1].item() == pytest.approx(1.0)  # time t/T of the last observation
    torch.testing.assert_close(obs, first)  # autoreset in the same step
    assert int(env.store["t"][0]) == 0


def test_partial_observation_targets_nearest_tagger_lowest_id_on_ties() -> None:
    env = TagGridWorld(num_taggers=3, grid_length=10, backend="cpu", start="identical", use_full_observation=False,
                       starting_location_x=(7, 3, 5, 5), starting_location_y=(5, 5, 9, 5))
    obs = env.reset()
    # taggers 0 and 1 are both 2 cells from the runner at (5, 5); tagger 2 is 4 away: the runner targets 0
    assert obs[0, 3].tolist() == pytest.approx([0.5, 0.5, 0.7, 0.5, 1.0, 0.0])
    assert obs[0, 1].tolist() == pytest.approx([0.3, 0.5, 0.5, 0.5, 0.0, 0.0])


def test_random_starts_differ_per_env() -> None:
    env = TagGridWorld(num_taggers=4, grid_length=20, num_envs=6, backend="cpu", seed=1)
    first = env.reset(seed=1).clone()
    assert len({tuple(first[e, 0].tolist()) for e in range(6)}) == 6  # each replica starts elsewhere
    xs = env.store["x"][:, :-1]
    assert int(xs.min()) >= 1 and int(xs.max()) <= 19  # taggers drawn from {1..L-1}
    assert env.store["x"][:, -1].eq(0).all()  # the runner starts at (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_taggers": 0}, "^num_taggers: expected an integer >= 1, got 0$"),
        ({"grid_length": 1}, r"^grid_length: expected an integer >= 2 and <= 32767, got 1$"),
        ({"grid_length": 32768}, r"^grid_length: expected an integer >= 2 and <= 32767, got 32768$"),
        ({"grid_length": 2.5}, r"^grid_length: expected an integer >= 2 and <= 32767, got 2.5$"),
        ({"episode_length": 0}, "^episode_length: expected an integer >= 1, got 0$"),
        ({"use_full_observation": 1}, "^use_full_observation: expected true or false, got 1$"),
        ({"wall_hit_penalty": "high"}, r"^wall_hit_penalty: expected a float >= -1e\+12 and <= 1e\+12, got 'high'$"),
        ({"num_tagers": 3}, "^num_tagers: unknown key; did you mean 'num_taggers'\\?$"),
        ({"num_taggers": 1, "starting_location_x": (0, 1, 2), "starting_location_y": (0, 1, 2)},
         "^starting_location_x: expected one value per agent \\(2\\), got 3$"),
        ({"num_taggers": 1, "starting_location_x": (0, 11), "starting_location_y": (0, 1)},
         "^starting_location_x: expected values in \\[0, grid_length=10\\]"),
        ({"num_taggers": 1, "starting_location_x": (0, 1)}, "^starting_location_y: give both"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TagGridWorld(backend="cpu", **kwargs)


def test_too_large_a_configuration_says_how_much_it_needs() -> None:
    with pytest.raises(MemoryError, match=r"needs [0-9.]+ GiB for its arrays.*at most \d+ envs fit"):
        TagGridWorld(num_taggers=999, num_envs=10**7, backend="cpu")
