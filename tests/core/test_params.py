"""Env parameters are validated in the precision the kernels use: every float (also those in tuple fields) finite
in float32, and reward parameters and physical scales limited in magnitude (``bounded_magnitude``,
``MAGNITUDE_LIMIT``) so that every sum and product the kernels form of them stays finite; errors are one line
naming the field, the value and the range."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
import pytest
import torch

from warpdrive.core.typed import MAGNITUDE_LIMIT, ConfigError, bounded, bounded_magnitude, from_dict
from warpdrive.envs import REGISTRY, env_class

#: float fields without declared limits whose range the config's validate() checks (and which it keeps far
#: inside MAGNITUDE_LIMIT): (env, field, a valid config with the value 3.4e38 in it)
VALIDATED: dict[tuple[str, str], dict[str, Any]] = {
    ("mountain_car", "initial_state"): {"initial_state": (3.4e38, 0.0)},
    ("mountain_car_continuous", "initial_state"): {"initial_state": (0.0, 3.4e38)},
    ("tag_continuous", "starting_location_x"): {"starting_location_x": (3.4e38,) * 11,
                                                "starting_location_y": (1.0,) * 11},
    ("tag_continuous", "starting_location_y"): {"starting_location_x": (1.0,) * 11,
                                                "starting_location_y": (1.0,) * 10 + (-3.4e38,)},
}


def _float_fields(cls: type) -> list[dataclasses.Field]:
    """The fields typed ``float`` or a tuple or list of floats (``| None`` or not)."""
    hints = get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        if hint is float or (get_origin(hint) in (tuple, list) and get_args(hint)[0] is float):
            found.append(f)
    return found


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_float_parameter_of_every_env_is_limited(name: str) -> None:
    """Rewards included: each float field declares limits within +-MAGNITUDE_LIMIT on both sides (a one-sided
    bound such as ``>= 0`` leaves 3.4e38, whose sums over a step's terms and an episode's steps are inf), or its
    validate() checks it against a smaller range."""
    cls = env_class(name)
    for f in _float_fields(cls.Config):
        if (name, f.name) in VALIDATED:
            with pytest.raises(ConfigError, match=rf"^{f.name}(\[\d+\])?: expected .*got -?3.4e\+38$"):
                cls(backend="cpu", **VALIDATED[name, f.name])
            continue
        bounds = f.metadata.get("bounds")
        assert bounds is not None, f"{name}.{f.name} has no declared limits (use bounded_magnitude)"
        gt, ge, lt, le = bounds
        low = ge if ge is not None else gt
        high = le if le is not None else lt
        assert low is not None and high is not None, f"{name}.{f.name} is bounded on one side only: {bounds}"
        assert low >= -MAGNITUDE_LIMIT and high <= MAGNITUDE_LIMIT, f"{name}.{f.name}: {bounds}"


def test_every_env_with_reward_parameters_is_covered() -> None:
    """The envs whose configs have reward parameters (the others compute rewards from constants and state)."""
    rewarded = {name for name in REGISTRY for f in _float_fields(env_class(name).Config)
                if any(word in f.name for word in ("reward", "penalty", "cost"))}
    assert rewarded == {"tag_gridworld", "tag_continuous"}


R = r">= -1e\+12 and <= 1e\+12"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        # finite in float32 one by one, but their sums (a step's terms, an episode's return) are not
        ("tag_gridworld", {"wall_hit_penalty": 3.4e38}, rf"^wall_hit_penalty: expected a float {R}, got 3.4e\+38$"),
        ("tag_gridworld", {"step_cost_for_tagger": 3.4e38},
         rf"^step_cost_for_tagger: expected a float {R}, got 3.4e\+38$"),
        ("tag_gridworld", {"tag_reward_for_tagger": -3.4e38},
         rf"^tag_reward_for_tagger: expected a float {R}, got -3.4e\+38$"),
        ("tag_gridworld", {"tag_penalty_for_runner": float("nan")},
         rf"^tag_penalty_for_runner: expected a finite float {R}, got nan$"),
        ("tag_continuous", {"tag_reward_for_tagger": 3e38},
         r"^tag_reward_for_tagger: expected a float >= 0 and <= 1e\+12, got 3e\+38$"),
        ("tag_continuous", {"step_reward_for_runner": 3e38},
         r"^step_reward_for_runner: expected a float >= 0 and <= 1e\+12, got 3e\+38$"),
        ("tag_continuous", {"end_of_game_reward_for_runner": 3e38},
         r"^end_of_game_reward_for_runner: expected a float >= 0 and <= 1e\+12, got 3e\+38$"),
        ("tag_continuous", {"step_penalty_for_tagger": -3e38},
         r"^step_penalty_for_tagger: expected a float >= -1e\+12 and <= 0, got -3e\+38$"),
        ("tag_continuous", {"tag_penalty_for_runner": -3e38},
         r"^tag_penalty_for_runner: expected a float >= -1e\+12 and <= 0, got -3e\+38$"),
        ("tag_continuous", {"edge_hit_penalty": -3e38},
         r"^edge_hit_penalty: expected a float >= -1e\+12 and <= 0, got -3e\+38$"),
        # physical scales: their products and sums (top speed = max_speed * skill, the acceleration table's
        # width max - min, direction differences) overflow float32
        ("tag_continuous", {"max_speed": 3e38}, r"^max_speed: expected a float > 0 and <= 1e\+12, got 3e\+38$"),
        ("tag_continuous", {"skill_level_tagger": 3e38},
         r"^skill_level_tagger: expected a float >= 0 and <= 1e\+12, got 3e\+38$"),
        ("tag_continuous", {"min_acceleration": -3e38}, rf"^min_acceleration: expected a float {R}, got -3e\+38$"),
        ("tag_continuous", {"max_turn": 3e38}, rf"^max_turn: expected a float {R}, got 3e\+38$"),
        ("tag_continuous", {"starting_directions": (0.0,) * 10 + (3e38,)},
         rf"^starting_directions\[10\]: expected a float {R}, got 3e\+38$"),
        # floats in tuple fields: 1e39 is inf in float32 (CartPole's observations were inf)
        ("cartpole", {"initial_state": (1e39, 0.0, 0.0, 0.0)},
         rf"^initial_state\[0\]: expected a float {R}, got 1e\+39$"),
        ("acrobot", {"initial_state": (0.0, 0.0, 0.0, -1e39)},
         rf"^initial_state\[3\]: expected a float {R}, got -1e\+39$"),
        # finite in float32, but Pendulum's first reward 0.1 * thdot**2 is not
        ("pendulum", {"initial_state": (0.0, 3e38)}, rf"^initial_state\[1\]: expected a float {R}, got 3e\+38$"),
        ("pendulum", {"g": 3e38}, rf"^g: expected a float {R}, got 3e\+38$"),
        ("mountain_car", {"initial_state": (1e39, 0.0)},
         r"^initial_state\[0\]: expected a position in \[-1.2, 0.6\], got 1e\+39$"),
    ],
)
def test_values_whose_derived_quantities_overflow_float32_are_refused(name: str, params: dict,
                                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        env_class(name)(backend="cpu", **params)


def test_a_limit_intersects_the_bounds_given() -> None:
    @dataclasses.dataclass(frozen=True)
    class Config:
        signed: float = bounded_magnitude(0.0)
        positive: float = bounded_magnitude(1.0, gt=0)
        small: float = bounded_magnitude(0.0, ge=-5, le=5)
        start: tuple[float, ...] | None = bounded_magnitude(None)

    bounds = {f.name: f.metadata["bounds"] for f in dataclasses.fields(Config)}
    assert bounds == {"signed": (None, -1e12, None, 1e12), "positive": (0, None, None, 1e12),
                      "small": (None, -5, None, 5), "start": (None, -1e12, None, 1e12)}
    assert from_dict(Config, {"signed": -1e12, "start": [1e12, -1e12]}).start == (1e12, -1e12)
    with pytest.raises(ConfigError, match=rf"^start\[1\]: expected a float {R}, got 2000000000000.0$"):
        from_dict(Config, {"start": [0.0, 2e12]})


def test_limits_are_written_as_numbers_are() -> None:
    @dataclasses.dataclass(frozen=True)
    class Config:
        count: int = bounded(1, ge=1, lt=2**32)
        scale: float = bounded(0.5, gt=0, le=0.75)

    with pytest.raises(ConfigError, match=r"^count: expected an integer >= 1 and < 4294967296, got 0$"):
        from_dict(Config, {"count": 0})
    with pytest.raises(ConfigError, match=r"^scale: expected a float > 0 and <= 0.75, got 1.0$"):
        from_dict(Config, {"scale": 1.0})


@pytest.mark.parametrize("name", [pytest.param("tag_gridworld", marks=pytest.mark.xdist_group("tag_gridworld"))])
def test_rewards_at_the_limit_keep_every_sum_finite(name: str) -> None:
    """The largest rewards allowed, tags in most steps: rewards, returns and their sums over episodes stay finite
    (a reward of 3.4e38, which float32 holds, made every return -inf)."""
    env = env_class(name)(backend="cpu", num_envs=4, seed=3, num_taggers=3, grid_length=2, episode_length=9,
                          wall_hit_penalty=MAGNITUDE_LIMIT, tag_reward_for_tagger=-MAGNITUDE_LIMIT,
                          tag_penalty_for_runner=MAGNITUDE_LIMIT, step_cost_for_tagger=MAGNITUDE_LIMIT)
    env.reset()
    largest = 0.0
    for _ in range(40):
        _, rewards, *_ = env.random_step()
        assert torch.isfinite(rewards).all()
        largest = max(largest, float(rewards.abs().max()))
    for array in ("episode_return", "final_return", "finished_return"):
        assert torch.isfinite(env.store[array]).all(), array
    totals = env.episode_totals()
    assert int(totals["episodes"]) > 0 and torch.isfinite(totals["return"]).all()
    # a wall hit and a step cost (or a tag) in one step: sums of the largest values were formed
    assert largest == 2 * float(np.float32(MAGNITUDE_LIMIT))
