"""Properties that hold for any valid parameters and actions (hypothesis draws both), on the CPU:

- every env: observations and rewards stay finite; ``t`` counts the steps of the episode; an episode is
  truncated exactly at ``episode_length`` (unless it terminated then), ``done`` is ``terminated or truncated``,
  and the replica starts over at ``t = 0``, its last length in ``final_length``;
- Tag-continuous: agents stay in the arena; ``runners_left`` is the number of runners in the game; every tag
  moves exactly one tag reward to the taggers and one tag penalty to the runners (beside the per-step rewards of
  those in the game), and takes one runner out of the game where tagged runners leave it;
- Tag-gridworld: every agent moves by its action, clipped to the grid; the runner is tagged exactly when a tagger
  shares its cell after the moves; every reward is the wall penalty plus the tag rewards or the step costs, to the
  bit;
- classic control: the observations stay within Gymnasium's bounds (CartPole's while the pole is up); MPE: no
  agent is faster than its type's ``max_speed``; simple_tag's adversaries share one reward per collision that
  the good agents pay for;
- classic control, for any parameters and start (random or a drawn ``initial_state``): the state stays finite
  and within the references' bounds (Pendulum |thdot| <= 8, Acrobot's velocity limits, MountainCar's position
  and speed limits), an episode terminates exactly when the reference's rule holds (CartPole: |x| > 2.4 or
  |theta| > 12 degrees; Acrobot: the tip above one link length; MountainCar(Continuous): position >= 0.5 (0.45)
  and velocity >= goal_velocity; Pendulum never), and the rewards are the reference's (Pendulum's within
  [-(pi^2 + 0.1 * 8^2 + 0.001 * 2^2), 0]);
- simple_spread and simple_adversary, for any agent and landmark counts, ``local_ratio``, ``continuous_actions``
  and ``k_nearest``: everything stays finite; simple_spread's reward is ``global (1 - local_ratio) + local
  local_ratio`` with ``global <= 0`` and ``local`` minus a whole number of collisions; simple_adversary's
  adversaries get minus a distance and the good agents one team reward, at most the adversaries' distances.

Each env's tests share its pytest-xdist group (tests/envs/test_contract.py), whose worker has compiled its kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from small_envs import SMALL

from warpdrive.envs import REGISTRY, env_class
from warpdrive.envs.mpe.simple_tag import COLLISION_REWARD


def by_env(name: str) -> object:
    """``name`` in its env's pytest-xdist group (as in tests/envs/test_contract.py)."""
    return pytest.param(name, marks=pytest.mark.xdist_group("mpe" if name.startswith("simple_") else name))


PROPERTY_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])


def run(env, steps: int, seed: int, check_step) -> None:
    """Random actions for ``steps`` steps; ``check_step(before, after)`` with copies of the store around each."""
    generator = torch.Generator().manual_seed(seed)
    env.reset(seed=seed)
    for _ in range(steps):
        before = {name: env.store[name].clone() for name in env.store.names()}
        env.sample_actions(generator)
        env.step()
        after = {name: env.store[name].clone() for name in env.store.names()}
        check_step(before, after)


@pytest.mark.parametrize("name", [by_env(name) for name in sorted(REGISTRY)])
@PROPERTY_SETTINGS
@given(num_envs=st.integers(1, 4), episode_length=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
def test_episodes_count_truncate_and_restart_as_specified(name: str, num_envs: int, episode_length: int,
                                                          seed: int) -> None:
    env = env_class(name)(**{**SMALL[name], "episode_length": episode_length}, num_envs=num_envs, backend="cpu",
                          seed=seed)

    def check_step(before: dict, after: dict) -> None:
        assert torch.isfinite(after["obs"]).all() and torch.isfinite(after["rewards"]).all()
        t = before["t"] + 1  # this step's count
        assert torch.equal(after["truncated"], (t == episode_length) & ~after["terminated"])
        assert torch.equal(after["done"], after["terminated"] | after["truncated"])
        done = after["done"]
        assert torch.equal(after["t"], torch.where(done, 0, t))
        assert torch.equal(after["final_length"][done], t[done])
        assert torch.equal(after["episode"], before["episode"] + done.long())
        assert bool((after["t"] < episode_length).all())

    run(env, 2 * episode_length + 2, seed, check_step)


def f32(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats that float32 holds (the kernels' precision; the configs refuse others)."""
    return st.floats(float(np.float32(low)), float(np.float32(high)), width=32, allow_subnormal=False)


TAG_CONTINUOUS = dict(
    num_taggers=st.integers(1, 3), num_runners=st.integers(1, 6), grid_length=f32(0.5, 6.0),
    max_speed=f32(0.05, 2.0), max_acceleration=f32(0.0, 1.0), min_acceleration=f32(-1.0, 0.0),
    tagging_distance=f32(0.0, 0.6), tag_reward_for_tagger=f32(0.0, 10.0),
    tag_penalty_for_runner=f32(-10.0, 0.0), step_penalty_for_tagger=f32(-1.0, 0.0),
    step_reward_for_runner=f32(0.0, 1.0), end_of_game_reward_for_runner=f32(0.0, 5.0),
    runner_exits_game_after_tagged=st.booleans(), use_full_observation=st.booleans(),
    episode_length=st.integers(2, 9), seed=st.integers(0, 2**31 - 1),
)


@pytest.mark.parametrize("_", [by_env("tag_continuous")])
@PROPERTY_SETTINGS
@given(**TAG_CONTINUOUS)
def test_tag_continuous_keeps_agents_in_the_arena_and_accounts_for_every_tag(_: str, seed: int,
                                                                              **params: object) -> None:
    env = env_class("tag_continuous")(**params, num_other_agents_observed=2, edge_hit_penalty=0.0, num_envs=3,
                                      backend="cpu", seed=seed)
    c = env.config
    is_tagger = env.store["agent_type"].bool()
    length = np.float32(c.grid_length)

    def check_step(before: dict, after: dict) -> None:
        x, y = after["x"], after["y"]
        assert bool(((x >= 0) & (x <= length) & (y >= 0) & (y <= length)).all())
        runners_in_game = (after["still"] & ~is_tagger).sum(1)
        if c.runner_exits_game_after_tagged:
            assert torch.equal(after["runners_left"], runners_in_game.int())
        ongoing = ~after["done"]  # (the others were reset: their arrays hold the next episode)
        tags = (after["metrics"][:, 0] - before["metrics"][:, 0]).double()
        rewards = after["rewards"].double()
        taggers = rewards[:, is_tagger].sum(1)
        expected_taggers = tags * np.float32(c.tag_reward_for_tagger) + c.num_taggers * np.float32(
            c.step_penalty_for_tagger)
        runners_before = (before["still"] & ~is_tagger).sum(1).double()
        expected_runners = (tags * np.float32(c.tag_penalty_for_runner)
                            + runners_before * np.float32(c.step_reward_for_runner))
        for e in torch.nonzero(ongoing).flatten().tolist():
            assert taggers[e] == pytest.approx(float(expected_taggers[e]), rel=1e-5, abs=1e-4)
            assert rewards[e, ~is_tagger].sum() == pytest.approx(float(expected_runners[e]), rel=1e-5, abs=1e-4)
            if c.runner_exits_game_after_tagged:
                assert tags[e] == runners_before[e] - runners_in_game[e]  # each tag took one runner out

    run(env, 2 * c.episode_length + 1, seed, check_step)


@pytest.mark.parametrize("_", [by_env("tag_gridworld")])
@PROPERTY_SETTINGS
@given(num_taggers=st.integers(1, 6), grid_length=st.integers(2, 6), use_full_observation=st.booleans(),
       episode_length=st.integers(1, 9), wall_hit_penalty=f32(0.0, 1.0), tag_reward_for_tagger=f32(0.0, 10.0),
       tag_penalty_for_runner=f32(0.0, 10.0), step_cost_for_tagger=f32(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_tag_gridworld_moves_tags_and_rewards_as_specified(_: str, seed: int, **params: object) -> None:
    env = env_class("tag_gridworld")(**params, num_envs=3, backend="cpu", seed=seed)
    c = env.config
    moves = torch.as_tensor(env.store["moves"]).long()
    runner = env.num_agents - 1
    zero = torch.zeros((), dtype=torch.float32)

    def check_step(before: dict, after: dict) -> None:
        move = moves[after["actions"][..., 0].long()]  # [E, N, 2]
        wanted_x, wanted_y = before["x"] + move[..., 0], before["y"] + move[..., 1]
        x, y = wanted_x.clamp(0, c.grid_length), wanted_y.clamp(0, c.grid_length)
        ongoing = ~after["done"]  # (the others were reset: their positions are the next episode's)
        assert torch.equal(after["x"][ongoing], x[ongoing].int()) and torch.equal(after["y"][ongoing], y[ongoing].int())
        tagged = ((x[:, :runner] == x[:, runner:]) & (y[:, :runner] == y[:, runner:])).any(1)
        assert torch.equal(after["terminated"], tagged)
        # the move's wall penalty, then the tag rewards or the step costs: float32, in the kernel's order
        hit = (x != wanted_x) | (y != wanted_y)
        rewards = torch.where(hit, -torch.tensor(c.wall_hit_penalty, dtype=torch.float32), zero)
        tagger_term = torch.where(tagged, torch.tensor(c.tag_reward_for_tagger, dtype=torch.float32),
                                  -torch.tensor(c.step_cost_for_tagger, dtype=torch.float32))
        runner_term = torch.where(tagged, -torch.tensor(c.tag_penalty_for_runner, dtype=torch.float32),
                                  torch.tensor(c.step_cost_for_tagger, dtype=torch.float32))
        expected = rewards + torch.cat([tagger_term[:, None].expand(-1, runner), runner_term[:, None]], dim=1)
        assert torch.equal(after["rewards"], expected)

    run(env, 2 * c.episode_length + 1, seed, check_step)


@pytest.mark.parametrize("_", [by_env("simple_tag")])
@PROPERTY_SETTINGS
@given(num_good=st.integers(1, 4), num_adversaries=st.integers(1, 4), num_envs=st.integers(1, 3),
       seed=st.integers(0, 2**31 - 1))
def test_simple_tag_pays_the_adversaries_for_every_collision_the_good_agents_pay_for(
        _: str, num_envs: int, seed: int, **params: object) -> None:
    env = env_class("simple_tag")(**params, num_envs=num_envs, backend="cpu", seed=seed)
    adversary = env.store["adversary"].bool()
    unit = float(COLLISION_REWARD)

    def bound(v: torch.Tensor) -> torch.Tensor:  # mpe2's bounds penalty of |coordinate|
        v = v.abs().double()
        far = torch.clamp(torch.exp(2 * v - 2), max=10)
        return torch.where(v < 0.9, 0.0, torch.where(v < 1.0, (v - 0.9) * 10, far))

    def check_step(before: dict, after: dict) -> None:
        rewards = after["rewards"].double()
        team = rewards[:, adversary]
        assert torch.equal(team, team[:, :1].expand_as(team))  # one team reward per replica
        pairs = team[:, 0] / unit
        assert torch.equal(pairs, pairs.round()) and bool((pairs >= 0).all())
        # each good agent pays one collision reward per adversary it touches, plus its bounds penalty
        paid = -(rewards + bound(after["x"]) + bound(after["y"]))[:, ~adversary] / unit
        ongoing = ~after["done"]  # (the others were reset: their positions are the next episode's)
        torch.testing.assert_close(paid[ongoing], paid[ongoing].round(), rtol=0, atol=1e-4)
        assert torch.equal(paid[ongoing].round().sum(1), pairs[ongoing])

    run(env, 60, seed, check_step)


F32 = np.float32


def _cartpole(after: dict, env) -> torch.Tensor:  # the episode ends beyond these, and starts near 0
    obs = after["obs"][:, 0]
    return (obs[:, 0].abs() <= F32(2.4)) & (obs[:, 2].abs() <= F32(12 * 2 * np.pi / 360))


def _pendulum(after: dict, env) -> torch.Tensor:
    obs = after["obs"][:, 0]
    return (obs[:, :2].abs() <= 1).all(1) & (obs[:, 2].abs() <= 8)


def _acrobot(after: dict, env) -> torch.Tensor:
    obs = after["obs"][:, 0]
    return ((obs[:, :4].abs() <= 1).all(1) & (obs[:, 4].abs() <= F32(4 * np.pi))
            & (obs[:, 5].abs() <= F32(9 * np.pi)))


def _mountain_car(after: dict, env) -> torch.Tensor:
    obs = after["obs"][:, 0]
    return (obs[:, 0] >= F32(-1.2)) & (obs[:, 0] <= F32(0.6)) & (obs[:, 1].abs() <= F32(0.07))


def _mpe(after: dict, env) -> torch.Tensor:  # (rounding of the rescaled velocity: a few ulps)
    speed = torch.sqrt(after["vx"].double() ** 2 + after["vy"].double() ** 2)
    return (speed <= env.store["max_speed"].double() * (1 + 1e-6)).all(1)


BOUNDS = {"cartpole": _cartpole, "pendulum": _pendulum, "acrobot": _acrobot, "mountain_car": _mountain_car,
          "mountain_car_continuous": _mountain_car, "simple_tag": _mpe, "simple_spread": _mpe,
          "simple_adversary": _mpe}


@pytest.mark.parametrize("name", [by_env(name) for name in sorted(BOUNDS)])
@PROPERTY_SETTINGS
@given(num_envs=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_states_stay_within_the_references_bounds(name: str, num_envs: int, seed: int) -> None:
    env = env_class(name)(**SMALL[name], num_envs=num_envs, backend="cpu", seed=seed)
    bounded = BOUNDS[name]

    def check_step(before: dict, after: dict) -> None:
        inside = bounded(after, env)
        assert bool(inside.all()), f"replicas {torch.nonzero(~inside).flatten().tolist()} left the bounds"

    run(env, 60, seed, check_step)


# classic control: parameters drawn within each Config's ranges; the start either random or a drawn
# ``initial_state`` (start="identical"). Starts are drawn beyond the thresholds too: such episodes end at once.
def _start(*ranges: tuple[float, float]) -> st.SearchStrategy[tuple[float, ...] | None]:
    return st.none() | st.tuples(*(f32(low, high) for low, high in ranges))


CLASSIC = {
    "cartpole": dict(sutton_barto_reward=st.booleans(),
                     initial_state=_start((-3.0, 3.0), (-3.0, 3.0), (-0.3, 0.3), (-3.0, 3.0))),
    "pendulum": dict(g=f32(-20.0, 20.0), initial_state=_start((-10.0, 10.0), (-8.0, 8.0))),
    # (the state space: angles in [-pi, pi], velocities within 4 pi and 9 pi; float32 values inside them)
    "acrobot": dict(initial_state=_start((-3.1415, 3.1415), (-3.1415, 3.1415), (-12.566, 12.566), (-28.274, 28.274))),
    # (float32 values within the limits: the configs refuse f32(0.07) > 0.07 and f32(-1.2) < -1.2)
    "mountain_car": dict(goal_velocity=f32(-0.069999, 0.069999),
                         initial_state=_start((-1.19999, 0.59999), (-0.069999, 0.069999))),
}

# the observations are the float64 state rounded to float32: a threshold rule is checked on them up to this
SLACK = 1e-6
PENDULUM_WORST = -(np.pi**2 + 0.1 * 8**2 + 0.001 * 2**2) * (1 + 1e-6)  # (+ float32 rounding of the cost)


def _ends(terminated: torch.Tensor, certainly: torch.Tensor, possibly: torch.Tensor) -> None:
    """An episode terminates exactly when the rule holds: surely where it holds beyond the rounding, never where
    it fails beyond it."""
    assert bool((certainly <= terminated).all()) and bool((terminated <= possibly).all())


def _cartpole_rules(before: dict, after: dict, last: torch.Tensor, c) -> None:
    x, theta = last[:, 0].abs(), last[:, 2].abs()
    limit = 12 * 2 * np.pi / 360
    term = after["terminated"]
    _ends(term, (x > 2.4 + SLACK) | (theta > limit + SLACK), (x > 2.4 - SLACK) | (theta > limit - SLACK))
    expected = torch.where(term, -1.0, 0.0) if c.sutton_barto_reward else torch.ones_like(term, dtype=torch.float)
    assert torch.equal(after["rewards"][:, 0], expected.float())


def _pendulum_rules(before: dict, after: dict, last: torch.Tensor, c) -> None:
    assert bool((last[:, 2].abs() <= 8).all()) and bool((after["state"][:, 1].abs() <= 8).all())
    reward = after["rewards"][:, 0].double()
    assert bool(((reward >= PENDULUM_WORST) & (reward <= 0)).all()), reward
    assert not bool(after["terminated"].any())  # it never terminates


def _acrobot_rules(before: dict, after: dict, last: torch.Tensor, c) -> None:
    assert bool((last[:, 4].abs() <= F32(4 * np.pi)).all()) and bool((last[:, 5].abs() <= F32(9 * np.pi)).all())
    cos1, sin1, cos2, sin2 = last[:, 0], last[:, 1], last[:, 2], last[:, 3]
    height = -cos1 - (cos1 * cos2 - sin1 * sin2)  # -cos(theta1) - cos(theta1 + theta2)
    term = after["terminated"]
    _ends(term, height > 1 + 1e-5, height > 1 - 1e-5)
    assert torch.equal(after["rewards"][:, 0], torch.where(term, 0.0, -1.0).float())


def _mountain_car_rules(goal: float):
    def check(before: dict, after: dict, last: torch.Tensor, c) -> None:
        position, velocity = last[:, 0], last[:, 1]
        assert bool(((position >= F32(-1.2)) & (position <= F32(0.6)) & (velocity.abs() <= F32(0.07))).all())
        term = after["terminated"]
        _ends(term, (position >= goal + SLACK) & (velocity >= c.goal_velocity + SLACK),
              (position >= goal - SLACK) & (velocity >= c.goal_velocity - SLACK))
        if goal == 0.5:  # MountainCar: -1 every step
            assert bool((after["rewards"] == -1).all())
        else:  # MountainCarContinuous: 100 on reaching the goal, less 0.1 a^2 (in float64, then float32)
            throttle = after["actions"][:, 0, 0].double()
            expected = (torch.where(term, 100.0, 0.0).double() - 0.1 * (throttle * throttle)).float()
            assert torch.equal(after["rewards"][:, 0], expected)
    return check


CLASSIC["mountain_car_continuous"] = CLASSIC["mountain_car"]  # (the same fields and ranges)

CLASSIC_RULES = {"cartpole": _cartpole_rules, "pendulum": _pendulum_rules, "acrobot": _acrobot_rules,
                 "mountain_car": _mountain_car_rules(0.5), "mountain_car_continuous": _mountain_car_rules(0.45)}


@pytest.mark.parametrize("name", [by_env(name) for name in sorted(CLASSIC)])
@settings(PROPERTY_SETTINGS, max_examples=8)
@given(data=st.data(), num_envs=st.integers(1, 4), episode_length=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1))
def test_classic_control_keeps_the_references_bounds_and_termination_rules(name: str, data, num_envs: int,
                                                                           episode_length: int, seed: int) -> None:
    params = data.draw(st.fixed_dictionaries(CLASSIC[name]), label="params")
    start = "random" if params["initial_state"] is None else "identical"
    env = env_class(name)(**params, episode_length=episode_length, num_envs=num_envs, start=start, backend="cpu",
                          seed=seed)
    rules = CLASSIC_RULES[name]

    def check_step(before: dict, after: dict) -> None:
        for array in ("obs", "final_obs", "rewards", "state"):
            assert bool(torch.isfinite(after[array]).all()), array
        # the episode's last observation: the one before the reset where it ended
        last = torch.where(after["done"][:, None], after["final_obs"][:, 0], after["obs"][:, 0]).double()
        rules(before, after, last, env.config)

    run(env, 2 * episode_length + 2, seed, check_step)


MPE = {
    "simple_spread": dict(num_agents=st.integers(1, 4), num_landmarks=st.none() | st.integers(1, 3),
                          local_ratio=f32(0.0, 1.0)),
    "simple_adversary": dict(num_good=st.integers(1, 3), num_adversaries=st.integers(1, 3),
                             num_landmarks=st.none() | st.integers(1, 3)),
}


@pytest.mark.parametrize("name", [by_env(name) for name in sorted(MPE)])
@settings(PROPERTY_SETTINGS, max_examples=3)  # (each agent count and layout compiles its kernels)
@given(data=st.data(), continuous_actions=st.booleans(), k_nearest=st.none() | st.integers(1, 3),
       episode_length=st.integers(1, 9), num_envs=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_mpe_stays_finite_and_rewards_as_specified(name: str, data, num_envs: int, seed: int,
                                                   **common: object) -> None:
    params = data.draw(st.fixed_dictionaries(MPE[name]), label="params")
    env = env_class(name)(**params, **common, num_envs=num_envs, backend="cpu", seed=seed)
    c = env.config
    adversary = env.store["adversary"].bool()

    def check_step(before: dict, after: dict) -> None:
        for array in ("obs", "final_obs", "rewards", "x", "y", "vx", "vy", "lx", "ly"):
            assert bool(torch.isfinite(after[array]).all()), array
        assert bool(_mpe(after, env).all())  # (no type of these envs has a max_speed: +inf)
        rewards = after["rewards"].double()
        if name == "simple_spread":  # global (1 - local_ratio) + local local_ratio, local = -collisions
            shared = after["global_reward"].double()
            assert bool((shared <= 0).all())
            if c.local_ratio > 0:
                local = (rewards - shared[:, None] * np.float32(1.0 - c.local_ratio)) / np.float32(c.local_ratio)
                scale = 1 + shared.abs()[:, None] / np.float32(c.local_ratio)
                assert bool(((local - local.round()).abs() <= 1e-5 * scale).all()), local
                assert bool(((local.round() <= 0) & (local.round() >= -(env.num_agents - 1))).all())
            else:
                assert torch.equal(after["rewards"], after["global_reward"][:, None].expand_as(after["rewards"]))
        else:  # adversary: -distance to the goal; good agents: one team reward, -nearest + sum of the adversaries'
            assert bool((rewards[:, adversary] <= 0).all())
            team = rewards[:, ~adversary]
            assert torch.equal(team, team[:, :1].expand_as(team))
            adversaries = -rewards[:, adversary].sum(1)
            assert bool((team[:, 0] <= adversaries + 1e-5 * (1 + adversaries)).all())  # -nearest <= 0

    run(env, 2 * c.episode_length + 1, seed, check_step)
