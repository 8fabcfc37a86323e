"""Tag-continuous: the reference's semantics step by step, hand-worked rules, CPU vs CUDA in its neighbour-search
modes, its parameters (the contract every env meets is tests/envs/test_contract.py)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from warpdrive.core import spatial
from warpdrive.core.checker import check_consistency
from warpdrive.envs import make
from warpdrive.envs.tag_continuous import TagContinuous, TagContinuousConfig
from warpdrive.envs.tag_continuous.env import action_tables, start_state_of

pytestmark = pytest.mark.xdist_group("tag_continuous")  # one worker: see test_contract.by_env

# The reference's shipped training config (warp_drive/training/run_configs/tag_continuous.yaml).
SHIPPED: dict[str, Any] = dict(
    num_taggers=10, num_runners=100, grid_length=20.0, episode_length=500, max_acceleration=0.1,
    min_acceleration=-0.1, max_turn=2.356, min_turn=-2.356, num_acceleration_levels=20, num_turn_levels=20,
    skill_level_runner=1.0, skill_level_tagger=1.0, max_speed=1.0, use_full_observation=False,
    runner_exits_game_after_tagged=True, num_other_agents_observed=10, tag_reward_for_tagger=10.0,
    tag_penalty_for_runner=-10.0, step_penalty_for_tagger=0.0, step_reward_for_runner=0.0, edge_hit_penalty=0.0,
    end_of_game_reward_for_runner=1.0, tagging_distance=0.02,
)
# Small, with every reward term non-zero and frequent tags.
RICH: dict[str, Any] = dict(
    num_taggers=3, num_runners=6, grid_length=5.0, episode_length=40, max_acceleration=0.5, min_acceleration=-0.5,
    edge_hit_penalty=-0.5, step_penalty_for_tagger=-0.1, step_reward_for_runner=0.05, tagging_distance=0.15,
    skill_level_runner=0.8, skill_level_tagger=1.2, tag_reward_for_tagger=2.0, tag_penalty_for_runner=-3.0,
    end_of_game_reward_for_runner=4.0,
)
SQRT2 = math.sqrt(2.0)


@pytest.fixture(scope="module")
def reference() -> Any:
    return pytest.importorskip("example_envs.tag_continuous.tag_continuous", reason="rl-warp-drive (test extra)")


def as_array(per_agent: dict) -> np.ndarray:
    """The reference's {agent: value} dict as an array [agents, ...]."""
    return np.stack([np.asarray(per_agent[i], np.float64) for i in range(len(per_agent))])


def explicit_start_of(ref: Any) -> dict[str, tuple]:
    """The reference env's initial state as explicit config values."""
    return dict(
        tagger_ids=tuple(sorted(int(i) for i in ref.taggers)),
        starting_location_x=tuple(np.asarray(ref.starting_location_x, np.float32).tolist()),
        starting_location_y=tuple(np.asarray(ref.starting_location_y, np.float32).tolist()),
        starting_directions=tuple(np.asarray(ref.starting_directions, np.float32).tolist()),
    )


def assert_close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-5, err_msg=what)


def make_env(backend: str = "cpu", num_envs: int = 1, **params: Any) -> TagContinuous:
    return TagContinuous(num_envs=num_envs, backend=backend, start="identical", **params)


def act(*pairs: tuple[int, int], num_envs: int = 1) -> torch.Tensor:
    """Actions [envs, agents, 2] from one (acceleration, turn) pair per agent, the same in every env."""
    return torch.tensor([list(pairs)] * num_envs, dtype=torch.int32)


# --------------------------------------------------------------------------------------------------
# the reference, step by step


REFERENCE_CASES = {
    "defaults-full": ({}, 250),
    "defaults-partial": ({"use_full_observation": False}, 250),
    "rich-full": (RICH, 100),
    # (10 agents: k = N = 10 shares its compiled program with the shipped config's k = 10)
    "rich-partial-k=N-runners-stay": (dict(RICH, num_runners=7, use_full_observation=False,
                                           num_other_agents_observed=10, runner_exits_game_after_tagged=False), 100),
    "rich-partial-grid": (dict(RICH, use_full_observation=False, num_other_agents_observed=3,
                               grid_cells_per_side=3), 100),
    "shipped-partial": (SHIPPED, 60),
    "shipped-partial-grid": (dict(SHIPPED, grid_cells_per_side=6), 60),
    "shipped-full": (dict(SHIPPED, use_full_observation=True), 40),
    "200-agents-adaptive-grid": (dict(SHIPPED, num_taggers=20, num_runners=180, tagging_distance=0.05,
                                      max_acceleration=0.3, min_acceleration=-0.3), 30),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_matches_reference_step_by_step(reference: Any, case: str) -> None:
    params, steps = REFERENCE_CASES[case]
    ours_only = {k: v for k, v in params.items() if k == "grid_cells_per_side"}
    ref_params = {k: v for k, v in params.items() if k not in ours_only}
    ref = reference.TagContinuous(seed=7, **ref_params)
    num_envs = 2
    env = make_env(num_envs=num_envs, **ref_params, **ours_only, **explicit_start_of(ref))
    if case == "200-agents-adaptive-grid":
        assert env.params.grid_max_side > 1 and env.params.grid_adaptive
    n = env.num_agents
    nvec = env.single_action_space().nvec
    rng = np.random.default_rng(3)

    expected_obs = as_array(ref.reset())
    obs = env.reset()
    for e in range(num_envs):
        assert_close(obs[e], expected_obs, "reset")
    episodes = 0
    for step in range(1, steps + 1):
        actions = rng.integers(0, nvec, size=(n, 2))
        ref_obs, ref_rew, ref_done, _ = ref.step({i: actions[i] for i in range(n)})
        obs, rewards, terminated, truncated, info = env.step(
            torch.as_tensor(actions, dtype=torch.int32).expand(num_envs, n, 2).contiguous()
        )
        done = ref_done["__all__"]
        for e in range(num_envs):
            where = f"{case}: step {step}, env {e}"
            assert_close(rewards[e], as_array(ref_rew), f"rewards, {where}")
            assert bool(info["done"][e]) == done, where
            assert bool(terminated[e]) == (done and ref.num_runners == 0), where
            assert bool(truncated[e]) == (done and ref.num_runners > 0), where
            assert_close(info["final_obs"][e] if done else obs[e], as_array(ref_obs), f"obs, {where}")
        if done:
            episodes += 1
            expected_obs = as_array(ref.reset())
            for e in range(num_envs):
                assert_close(obs[e], expected_obs, f"{case}: first obs after the autoreset at step {step}")
    if steps > 2 * ref.episode_length:
        assert episodes >= 2


def test_default_start_is_the_reference_draw(reference: Any) -> None:
    for seed in (0, 1, 274880):
        for params in ({}, {"num_taggers": 10, "num_runners": 100, "grid_length": 20.0}):
            ref = reference.TagContinuous(seed=seed, **params)
            start = start_state_of(TagContinuousConfig(seed=seed, **params))
            np.testing.assert_array_equal(start.tagger_ids, sorted(ref.taggers))
            np.testing.assert_array_equal(start.x, np.float32(ref.starting_location_x))
            np.testing.assert_array_equal(start.y, np.float32(ref.starting_location_y))
            np.testing.assert_array_equal(start.direction, np.float32(ref.starting_directions))
    # explicit positions: the directions are the next draw after the tagger ids, as in the reference
    xs = tuple(float(v) for v in np.linspace(0, 10, 11))
    ref = reference.TagContinuous(seed=5, starting_location_x=np.array(xs), starting_location_y=np.array(xs))
    start = start_state_of(TagContinuousConfig(seed=5, starting_location_x=xs, starting_location_y=xs))
    np.testing.assert_array_equal(start.direction, np.float32(ref.starting_directions))
    np.testing.assert_array_equal(start.tagger_ids, sorted(ref.taggers))


def test_seeded_identical_start_matches_the_reference_reset(reference: Any) -> None:
    ref = reference.TagContinuous(seed=11, use_full_observation=False, num_other_agents_observed=3)
    # the config's seed (the reference-style draw) goes in the config: the constructor's seed= keyword is the
    # seed of the per-replica random streams of random starts
    env = TagContinuous({"seed": 11}, num_envs=2, backend="cpu", start="identical", use_full_observation=False,
                        num_other_agents_observed=3)
    obs = env.reset()
    assert_close(obs[0], as_array(ref.reset()), "reset")
    assert torch.equal(obs[0], obs[1])
    assert env.groups()["taggers"] == sorted(int(i) for i in ref.taggers)
    np.testing.assert_array_equal(env.store["acc_table"].numpy(), ref.acceleration_actions)
    np.testing.assert_array_equal(env.store["turn_table"].numpy(), ref.turn_actions)


# --------------------------------------------------------------------------------------------------
# hand-worked rules

# One tagger (0) and one runner (1) far apart in a large arena: tables [0, -0.5, 0.5] and [0, -pi/2, pi/2].
MOTION = dict(num_taggers=1, num_runners=1, grid_length=100.0, episode_length=20, max_speed=2.0,
              min_acceleration=-0.5, max_acceleration=0.5, num_acceleration_levels=2, min_turn=-math.pi / 2,
              max_turn=math.pi / 2, num_turn_levels=2, tagging_distance=0.0, tagger_ids=(0,),
              starting_location_x=(10.0, 50.0), starting_location_y=(10.0, 50.0),
              starting_directions=(0.0, math.pi / 2))


def state(env: TagContinuous, agent: int) -> dict[str, float]:
    return {k: float(env.store[k][0, agent]) for k in ("x", "y", "speed", "acc", "direction")}


def test_acceleration_accumulates_and_resets_at_the_speed_limits() -> None:
    env = make_env(**MOTION)
    env.reset()
    np.testing.assert_allclose(env.store["acc_table"].numpy(), [0.0, -0.5, 0.5])
    env.step(act((2, 0), (0, 2)))  # tagger accelerates; runner turns left on the spot
    assert state(env, 0) == pytest.approx(dict(x=10.5, y=10.0, speed=0.5, acc=0.5, direction=0.0))
    assert state(env, 1) == pytest.approx(dict(x=50.0, y=50.0, speed=0.0, acc=0.0, direction=math.pi), abs=1e-6)
    env.step(act((2, 0), (1, 0)))  # acc 1.0 (accumulated); the runner brakes at rest: speed clips at 0
    assert state(env, 0) == pytest.approx(dict(x=12.0, y=10.0, speed=1.5, acc=1.0, direction=0.0))
    assert state(env, 1)["speed"] == 0.0 and state(env, 1)["acc"] == 0.0  # acceleration reset at speed 0
    env.step(act((0, 0), (0, 0)))  # "no change" keeps acc 1.0: speed 2.5 clips to 2.0 and acc resets
    assert state(env, 0) == pytest.approx(dict(x=14.0, y=10.0, speed=2.0, acc=0.0, direction=0.0))
    env.step(act((0, 2), (0, 0)))  # turn left: move along +y at speed 2
    assert state(env, 0) == pytest.approx(dict(x=14.0, y=12.0, speed=2.0, acc=0.0, direction=math.pi / 2),
                                          abs=1e-5)
    env.step(act((1, 1), (0, 0)))  # brake and turn back right: speed 1.5 along +x
    assert state(env, 0) == pytest.approx(dict(x=15.5, y=12.0, speed=1.5, acc=-0.5, direction=0.0), abs=1e-5)


def test_direction_wraps_modulo_two_pi_and_skill_scales_the_top_speed() -> None:
    env = make_env(**dict(MOTION, skill_level_runner=0.5, starting_directions=(0.0, 3 * math.pi / 2)))
    env.reset()
    env.step(act((0, 1), (2, 2)))  # tagger turns right from 0; runner turns left from 3pi/2 and accelerates
    assert 0.0 <= state(env, 0)["direction"] < 2 * math.pi
    assert state(env, 0)["direction"] == pytest.approx(1.5 * math.pi, abs=1e-5)
    assert state(env, 1)["direction"] == pytest.approx(0.0, abs=1e-5)
    env.step(act((0, 0), (2, 0)))  # runner: acc 1.0, speed 1.5 > 0.5 * 2.0: clipped to 1.0, acc reset
    assert state(env, 1)["speed"] == pytest.approx(1.0) and state(env, 1)["acc"] == 0.0
    assert float(env.store["top_speed"][1]) == pytest.approx(1.0)


def test_edge_clipping_and_penalty() -> None:
    env = make_env(**dict(MOTION, starting_location_x=(99.0, 50.0), edge_hit_penalty=-0.25,
                          step_reward_for_runner=0.5, step_penalty_for_tagger=-0.125))
    env.reset()
    _, rewards, *_ = env.step(act((2, 0), (0, 0)))  # x = 99.5: inside
    assert rewards[0].tolist() == [-0.125, 0.5]
    _, rewards, *_ = env.step(act((2, 0), (0, 0)))  # x = 101: clipped to 100, penalised
    assert state(env, 0)["x"] == 100.0 and state(env, 0)["speed"] == 1.5
    assert rewards[0].tolist() == [-0.25 - 0.125, 0.5]
    _, rewards, *_ = env.step(act((0, 0), (0, 0)))  # pushes against the edge again: still penalised
    assert state(env, 0)["x"] == 100.0 and rewards[0, 0].item() == -0.375


# Tagger 0 at (5, 5); runners 1 and 2 within reach of it (threshold 0.02 * 10 = 0.2), runner 3 far away.
TAGS = dict(num_taggers=1, num_runners=3, grid_length=10.0, episode_length=5, tagging_distance=0.02,
            tagger_ids=(0,), starting_location_x=(5.0, 5.125, 5.0, 9.0), starting_location_y=(5.0, 5.0, 4.875, 9.0),
            starting_directions=(0.0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_one_tagger_is_credited_for_every_runner_it_tags(backend: str, gpu_backend: str) -> None:
    env = make_env(backend=gpu_backend if backend == "gpu" else "cpu", num_envs=2, **TAGS)
    env.reset()
    _, rewards, terminated, truncated, _ = env.step(act((0, 0), (0, 0), (0, 0), (0, 0), num_envs=2))
    for e in range(2):
        assert rewards[e].tolist() == [2.0, -1.0, -1.0, 0.0]  # two tags, no update lost
        assert env.store["still"][e].tolist() == [True, False, False, True]
        assert int(env.store["runners_left"][e]) == 1
        assert env.store["metrics"][e].tolist() == pytest.approx([2.0, 2.0 / 3.0])
    assert not terminated.any() and not truncated.any()


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_nearest_tagger_lowest_id_on_ties_and_termination(backend: str, gpu_backend: str) -> None:
    # taggers 0 and 2 are both 0.125 from runner 1 (exact in float32): tagger 0 gets the credit
    env = make_env(backend=gpu_backend if backend == "gpu" else "cpu", num_taggers=2, num_runners=1,
                   grid_length=10.0, tagging_distance=0.02, tagger_ids=(0, 2),
                   starting_location_x=(4.0, 4.125, 4.25), starting_location_y=(5.0, 5.0, 5.0),
                   starting_directions=(0.0, 0.0, 0.0))
    env.reset()
    _, rewards, terminated, truncated, info = env.step(act((0, 0), (0, 0), (0, 0)))
    assert rewards[0].tolist() == [1.0, -1.0, 0.0]
    assert bool(terminated[0]) and not bool(truncated[0]) and bool(info["done"][0])
    assert env.store["final_metrics"][0].tolist() == [1.0, 1.0]
    assert int(env.store["final_length"][0]) == 1
    assert env.store["still"][0].all()  # autoreset in the same step: everyone back in the game


def test_end_of_game_bonus_and_truncation() -> None:
    env = make_env(**dict(TAGS, episode_length=2))
    env.reset()
    _, rewards, terminated, truncated, _ = env.step(act((0, 0), (0, 0), (0, 0), (0, 0)))
    assert rewards[0].tolist() == [2.0, -1.0, -1.0, 0.0] and not bool(truncated[0])
    _, rewards, terminated, truncated, _ = env.step(act((0, 0), (0, 0), (0, 0), (0, 0)))
    assert rewards[0].tolist() == [0.0, 0.0, 0.0, 1.0]  # only the runner still in the game gets the bonus
    assert bool(truncated[0]) and not bool(terminated[0])


def test_runners_that_stay_in_the_game_are_tagged_again_and_get_the_bonus() -> None:
    env = make_env(**dict(TAGS, episode_length=2, runner_exits_game_after_tagged=False))
    env.reset()
    _, rewards, terminated, *_ = env.step(act((0, 0), (0, 0), (0, 0), (0, 0)))
    assert rewards[0].tolist() == [2.0, -1.0, -1.0, 0.0] and not bool(terminated[0])
    _, rewards, terminated, truncated, _ = env.step(act((0, 0), (0, 0), (0, 0), (0, 0)))
    assert rewards[0].tolist() == [2.0, -1.0 + 1.0, -1.0 + 1.0, 1.0]
    assert bool(truncated[0]) and not bool(terminated[0])
    assert env.store["final_metrics"][0].tolist() == pytest.approx([4.0, 4.0 / 3.0])


def pos(x: float, y: float, ox: float, oy: float, length: float) -> tuple[float, float]:
    scale = SQRT2 * length
    return (x - ox) / scale, (y - oy) / scale


@pytest.mark.parametrize("grid", [None, 4])
def test_partial_observation_order_ties_and_padding(grid: int | None) -> None:
    # agents 1 and 2 are both 1.0 from agent 0: the lower id comes first; k = N leaves one padded slot
    env = make_env(num_taggers=1, num_runners=2, grid_length=10.0, use_full_observation=False,
                   num_other_agents_observed=3, tagger_ids=(0,), starting_location_x=(5.0, 6.0, 4.0),
                   starting_location_y=(5.0, 5.0, 5.0), starting_directions=(0.0, math.pi, 0.5 * math.pi),
                   grid_cells_per_side=grid)
    obs = env.reset()[0]
    dx = [pos(6, 5, 5, 5, 10)[0], pos(4, 5, 5, 5, 10)[0], 0.0]
    ddir = [0.5, 0.25, 0.0]
    expected = [*dx, 0, 0, 0, 0, 0, 0, 0, 0, 0, *ddir, 0, 0, 0, 1, 1, 0, 0.0]
    np.testing.assert_allclose(obs[0].numpy(), expected, atol=1e-6)
    # agent 1 (at 6): agent 0 at 1.0, then agent 2 at 2.0; agent 0 is the tagger
    np.testing.assert_allclose(obs[1, :3].numpy(), [-1 / (SQRT2 * 10), -2 / (SQRT2 * 10), 0.0], atol=1e-6)
    np.testing.assert_allclose(obs[1, 15:21].numpy(), [1, 0, 0, 1, 1, 0])


def test_search_lanes_change_only_the_speed() -> None:
    """Three threads sharing each agent's k-nearest search find the same neighbours as one, over whole episodes.
    (The ring search in 3 x 3 cells with k = 3: the one-lane program is the partial-grid consistency case's,
    compiled once. The one-cell scan's lanes are checked against a brute-force search in tests/core/test_spatial.py
    and CPU vs simulator in test_cpu_and_cuda_compilations_agree.)"""
    kwargs = dict(num_taggers=3, num_runners=20, grid_length=3.0, episode_length=8, tagging_distance=0.1,
                  use_full_observation=False, num_other_agents_observed=3, grid_cells_per_side=3, num_envs=3,
                  seed=4, backend="cpu")
    one, shared = TagContinuous(**kwargs), TagContinuous(search_lanes=3, **kwargs)
    assert shared.store["nearest"].shape[2] == 3
    assert torch.equal(one.reset(seed=2), shared.reset(seed=2))
    for _ in range(20):  # two and a half episodes: autoresets included
        expected, got = one.random_step(), shared.random_step()
        for a, b in zip((*expected[:4], expected[4]["final_obs"]), (*got[:4], got[4]["final_obs"]), strict=True):
            assert torch.equal(a, b)
    assert int(one.store["episode"].min()) >= 2


@pytest.mark.parametrize("full", [True, False])
def test_observation_of_and_by_agents_out_of_the_game(full: bool) -> None:
    env = make_env(num_taggers=1, num_runners=2, grid_length=10.0, episode_length=4, tagging_distance=0.02,
                   use_full_observation=full, num_other_agents_observed=2, tagger_ids=(0,),
                   starting_location_x=(5.0, 5.125, 8.0), starting_location_y=(5.0, 5.0, 5.0),
                   starting_directions=(0.0, 0.0, 0.0))
    env.reset()
    stay = act((0, 0), (0, 0), (0, 0))
    obs, rewards, *_ = env.step(stay)  # runner 1 is tagged: its observation was made before the tag
    assert rewards[0].tolist() == [1.0, -1.0, 0.0]
    assert obs[0, 1, -1].item() == pytest.approx(0.25)  # time 1/4, still in the game when observed
    obs, rewards, *_ = env.step(stay)
    assert rewards[0].tolist() == [0.0, 0.0, 0.0]  # out of the game: no reward
    out, tagger = obs[0, 1], obs[0, 0]
    if full:
        # out of the game: zeros but the others' type and still; the others see its still = 0
        np.testing.assert_allclose(out.numpy(), [0] * 10 + [1, 0, 1, 1, 0.0])
        np.testing.assert_allclose(tagger[10:14].numpy(), [0, 0, 0, 1])
        assert tagger[-1].item() == pytest.approx(0.5)
    else:
        np.testing.assert_array_equal(out.numpy(), np.zeros(15))
        # the tagger sees only runner 2 (3.0 away) now; the second slot is padding
        np.testing.assert_allclose(tagger[[0, 1, 10, 11, 12, 13]].numpy(), [3 / (SQRT2 * 10), 0, 0, 0, 1, 0],
                                   atol=1e-6)


def test_full_observation_layout_at_reset() -> None:
    env = make_env(num_taggers=1, num_runners=2, grid_length=10.0, tagger_ids=(1,),
                   starting_location_x=(1.0, 2.0, 3.0), starting_location_y=(4.0, 6.0, 8.0),
                   starting_directions=(0.0, math.pi, 0.5 * math.pi))
    obs = env.reset()[0]
    assert obs.shape == (3, 7 * 2 + 1)
    scale = SQRT2 * 10
    # agent 2 sees agents 0 and 1, in id order
    expected = [-2 / scale, -1 / scale, -4 / scale, -2 / scale, 0, 0, 0, 0, -0.25, 0.25, 0, 1, 1, 1, 0.0]
    np.testing.assert_allclose(obs[2].numpy(), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# CPU vs CUDA, and the GPU compilation

CONSISTENCY_CASES = {
    "partial-one-cell": dict(use_full_observation=False, num_other_agents_observed=3),
    "partial-grid": dict(use_full_observation=False, num_other_agents_observed=3, grid_cells_per_side=3),
    "partial-adaptive": dict(use_full_observation=False, num_other_agents_observed=3),
    "partial-search-lanes": dict(use_full_observation=False, num_other_agents_observed=3, search_lanes=3),
    # the search as a kernel of its own (the CPU program is the one above: launch boundaries are CUDA-only)
    "partial-separate-search": dict(use_full_observation=False, num_other_agents_observed=3, grid_cells_per_side=3,
                                    separate_search_launch=True),
}


@pytest.mark.parametrize("case", list(CONSISTENCY_CASES))
@pytest.mark.parametrize("start", ["random", "identical"])
def test_cpu_and_cuda_compilations_agree(gpu_backend: str, case: str, start: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    params = dict(num_taggers=3, num_runners=8, grid_length=3.0, episode_length=8, tagging_distance=0.1,
                  max_acceleration=0.5, min_acceleration=-0.5, **CONSISTENCY_CASES[case])
    if case == "partial-adaptive":
        monkeypatch.setattr(spatial, "AUTOMATIC_MIN_AGENTS", 0)  # an adaptive grid at this small size
    kwargs = dict(num_envs=2, start=start, seed=4, **params)
    cpu, gpu = TagContinuous(backend="cpu", **kwargs), TagContinuous(backend=gpu_backend, **kwargs)
    assert getattr(cpu.params, "grid_adaptive", False) == (case == "partial-adaptive")
    report = check_consistency(cpu, gpu, seed=2)
    assert report.ok, str(report)
    assert report.episodes_finished > 0
    assert len(gpu._program("step").kernels()) == (4 if case == "partial-separate-search" else 1)
    assert torch.equal(cpu.store["final_metrics"], gpu.store["final_metrics"])
    assert float(cpu.store["final_metrics"][:, 0].sum()) > 0  # runners were tagged


# --------------------------------------------------------------------------------------------------
# seeding and starts


def test_random_starts_differ_per_replica_and_episode() -> None:
    env = TagContinuous(num_envs=4, backend="cpu", episode_length=2, seed=9)
    env.reset()
    x = env.store["x"].clone()
    assert len({tuple(row.tolist()) for row in x}) == 4
    length = env.config.grid_length
    assert float(x.min()) >= 0.0 and float(x.max()) <= length
    assert set(np.round(env.store["direction"].numpy() / (math.pi / 2)).astype(int).ravel()) <= {0, 1, 2, 3}
    assert env.store["speed"].eq(0).all() and env.store["acc"].eq(0).all() and env.store["still"].all()
    assert env.groups()["taggers"] == [int(i) for i in start_state_of(env.config).tagger_ids]  # fixed ids
    env.sample_actions(torch.Generator().manual_seed(0))
    env.step()
    env.step()  # the episode ends at t = 2: every replica starts a new, different one
    assert env.store["episode"].eq(2).all()
    assert not torch.equal(env.store["x"], x)


def test_identical_start_in_every_replica() -> None:
    config = TagContinuousConfig(seed=21)
    env = TagContinuous(config, num_envs=3, backend="cpu", start="identical")
    env.reset()
    start = start_state_of(config)
    for e in range(3):
        np.testing.assert_array_equal(env.store["x"][e].numpy(), start.x)
        np.testing.assert_array_equal(env.store["y"][e].numpy(), start.y)
        np.testing.assert_array_equal(env.store["direction"][e].numpy(), start.direction)
    agent_type = env.store["agent_type"].numpy()
    assert np.flatnonzero(agent_type).tolist() == start.tagger_ids.tolist()


def test_spaces_groups_and_registry() -> None:
    env = make("tag_continuous", num_envs=1, backend="cpu", num_taggers=2, num_runners=5, tagger_ids=(6, 1),
               use_full_observation=False, num_other_agents_observed=4, num_acceleration_levels=3)
    assert isinstance(env, TagContinuous)
    assert env.groups() == {"taggers": [1, 6], "runners": [0, 2, 3, 4, 5]}
    assert env.single_action_space().nvec.tolist() == [4, 11]
    assert env.observation_size() == 7 * 4 + 1 and env.obs.shape == (1, 7, 29)
    assert env.metric_names() == ["runners_tagged", "tag_rate"]
    acc, turn = action_tables(env.config)
    assert acc.dtype == np.float32 and acc.tolist() == pytest.approx([0.0, -1.0, 0.0, 1.0])
    assert turn[0] == 0.0 and turn[1] == pytest.approx(-math.pi / 2) and len(turn) == 11
    full = TagContinuous(num_envs=1, backend="cpu", num_runners=5)
    assert full.observation_size() == 7 * 5 + 1


def test_lists_from_yaml_become_tuples() -> None:
    config = TagContinuousConfig(num_runners=1, tagger_ids=[1], starting_location_x=[1, 2],
                                 starting_location_y=np.array([3.0, 4.0]))
    assert config.tagger_ids == (1,) and config.starting_location_x == (1, 2)
    assert config.starting_location_y == (3.0, 4.0)
    assert config == TagContinuousConfig(num_runners=1, tagger_ids=(1,), starting_location_x=(1, 2),
                                         starting_location_y=(3.0, 4.0))


# --------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"edge_hit_penalty": 0.5}, r"^edge_hit_penalty: expected a float >= -1e\+12 and <= 0, got 0.5$"),
        ({"tagging_distance": 1.5}, r"^tagging_distance: expected a float >= 0 and <= 1, got 1.5$"),
        ({"tagging_distance": -0.1}, r"^tagging_distance: expected a float >= 0 and <= 1, got -0.1$"),
        ({"tag_reward_for_tagger": -1.0}, r"^tag_reward_for_tagger: expected a float >= 0 and <= 1e\+12, got -1.0$"),
        ({"step_penalty_for_tagger": 0.1}, r"^step_penalty_for_tagger: expected a float >= -1e\+12 and <= 0, got 0.1$"),
        ({"tag_penalty_for_runner": 1.5}, r"^tag_penalty_for_runner: expected a float >= -1e\+12 and <= 0, got 1.5$"),
        ({"step_reward_for_runner": -0.5}, r"^step_reward_for_runner: expected a float >= 0 and <= 1e\+12, got -0.5$"),
        ({"end_of_game_reward_for_runner": -1.0},
         r"^end_of_game_reward_for_runner: expected a float >= 0 and <= 1e\+12, got -1.0$"),
        # positive in float64, zero in float32 (the kernels' precision)
        ({"grid_length": 1e-46}, r"^grid_length: expected 0 or at least .* \(it is 0 in float32"),
        # finite in float32, but its position scale 1 / (L sqrt 2) is not
        ({"grid_length": 1e-45}, r"kernel parameter inv_position_scale = .* not finite in float32"),
        ({"num_other_agents_observed": 12},
         r"^num_other_agents_observed: expected <= the number of agents \(11\), got 12$"),
        ({"use_full_observation": False, "num_other_agents_observed": 0},
         r"^num_other_agents_observed: expected >= 1 with partial observation, got 0$"),
        ({"num_taggers": 0}, r"^num_taggers: expected an integer >= 1, got 0$"),
        ({"num_runners": 0}, r"^num_runners: expected an integer >= 1, got 0$"),
        ({"episode_length": 0}, r"^episode_length: expected an integer >= 1, got 0$"),
        ({"grid_length": 0.0}, r"^grid_length: expected a float > 0 and <= 1e\+12, got 0.0$"),
        ({"max_speed": 0.0}, r"^max_speed: expected a float > 0 and <= 1e\+12, got 0.0$"),
        ({"skill_level_runner": -1.0}, r"^skill_level_runner: expected a float >= 0 and <= 1e\+12, got -1.0$"),
        ({"min_acceleration": 2.0}, r"^min_acceleration: expected <= max_acceleration=1.0, got 2.0$"),
        ({"min_turn": 2.0}, r"^min_turn: expected <= max_turn=1.57\d*, got 2.0$"),
        ({"num_turn_levels": -1}, r"^num_turn_levels: expected an integer >= 0 and <= 65536, got -1$"),
        ({"grid_cells_per_side": 0}, r"^grid_cells_per_side: expected an integer >= 1 and <= 1024, got 0$"),
        ({"max_turn": float("nan")}, r"^max_turn: expected a finite float >= -1e\+12 and <= 1e\+12, got nan$"),
        ({"tagger_ids": (0, 0), "num_taggers": 2}, r"^tagger_ids: expected distinct ids, got \[0, 0\]$"),
        ({"tagger_ids": (11,)}, r"^tagger_ids: expected ids in \[0, N=11\), got \[11\]$"),
        ({"tagger_ids": (0, 1)}, r"^tagger_ids: expected 1 values \(num_taggers\), got 2$"),
        ({"starting_location_x": (1.0,) * 10, "starting_location_y": (1.0,) * 11},
         r"^starting_location_x: expected 11 values \(N = num_taggers \+ num_runners\), got 10$"),
        ({"starting_location_x": (1.0,) * 11, "starting_location_y": (1.0,) * 12},
         r"^starting_location_y: expected 11 values"),
        ({"starting_directions": (0.0,) * 3}, r"^starting_directions: expected 11 values"),
        ({"starting_location_x": (11.0,) * 11, "starting_location_y": (1.0,) * 11},
         r"^starting_location_x: expected values in \[0, grid_length=10.0\], got 11.0$"),
        ({"starting_location_x": (1.0,) * 11}, r"^starting_location_y: give both starting_location_x and"),
        # types
        ({"num_runners": 2.5}, r"^num_runners: expected an integer >= 1, got 2.5$"),
        ({"num_taggers": True}, r"^num_taggers: expected an integer >= 1, got True$"),
        ({"use_full_observation": 1}, r"^use_full_observation: expected true or false, got 1$"),
        ({"grid_length": "ten"}, r"^grid_length: expected a float > 0 and <= 1e\+12, got 'ten'$"),
        ({"tagger_ids": 3}, r"^tagger_ids: expected a list, got 3$"),
        ({"tagger_ids": (0.5,)}, r"^tagger_ids\[0\]: expected an integer, got 0.5$"),
        ({"starting_directions": ("a",) * 11},
         r"^starting_directions\[0\]: expected a float >= -1e\+12 and <= 1e\+12, got 'a'$"),
        ({"separate_search_launch": 1}, r"^separate_search_launch: expected true or false, got 1$"),
        ({"num_tagers": 1}, r"^num_tagers: unknown key; did you mean 'num_taggers'\?$"),
    ],
)
def test_bad_parameters_are_named(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TagContinuous(backend="cpu", **params)


def test_a_derived_kernel_parameter_float32_cannot_hold_is_named_without_numpy_warnings() -> None:
    """grid_length=1e-40 passes the config's ranges, but 1 / (L sqrt 2) overflows float32: one error naming the
    derived parameter, without NumPy's overflow warnings ahead of it (they were printed before the CLI's line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"kernel parameter inv_position_scale = np\.float32\(inf\), which is not "
                                             r"finite in float32"):
            TagContinuous(backend="cpu", grid_length=1e-40)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_bad_config_seed_is_named(seed: int) -> None:
    """The config's seed (NumPy's legacy seeding of the identical start), not the constructor's ``seed=``."""
    with pytest.raises(ValueError, match=rf"^seed: expected an integer >= 0 and < 4294967296, got {seed}$"):
        TagContinuous({"seed": seed}, backend="cpu")
