"""Typed configs (warpdrive.core.typed) as env configs use them: declared fields, NumPy values, key paths, and the
scalar fields that reach the kernels' parameters without a hand-written mirror."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from warpdrive.core.env import config_scalars
from warpdrive.core.typed import ConfigError, bounded, from_dict
from warpdrive.envs import make


@dataclass(frozen=True)
class _Config:
    count: int = bounded(3, ge=1, lt=2**32)
    scale: float = bounded(1.0, gt=0)
    flag: bool = False
    points: tuple[float, ...] | None = None
    seed: int = 0
    limit: int | None = None


def test_numpy_values_are_accepted_as_python_values() -> None:
    config = from_dict(_Config, {"count": np.int64(5), "scale": np.float32(0.5), "points": np.array([1.0, 2.5])})
    assert config == _Config(count=5, scale=0.5, points=(1.0, 2.5))
    assert type(config.count) is int and type(config.points) is tuple


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"count": 0}, r"^count: expected an integer >= 1 and < 4294967296, got 0$"),
        ({"count": np.int64(2**32)}, r"^count: expected an integer >= 1 and < 4294967296, got 4294967296$"),
        ({"scale": 0}, r"^scale: expected a float > 0, got 0$"),
        ({"points": [1.0, "x"]}, r"^points\[1\]: expected a float, got 'x'$"),
        ({"flag": np.int64(1)}, r"^flag: expected true or false, got 1$"),
    ],
)
def test_errors_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(_Config, data)


def test_an_error_moves_under_a_parent_path() -> None:
    error = ConfigError("count", "expected an integer >= 1, got 0")
    assert str(error.under("env.kwargs")) == "env.kwargs.count: expected an integer >= 1, got 0"
    assert str(ConfigError("", "bad").under("env")) == "env: bad"


def test_scalar_fields_are_the_kernel_parameters_of_a_config() -> None:
    """int, float and bool fields; not optional or sequence ones, nor those named like the base's (seed)."""
    assert config_scalars(_Config()) == {"count": 3, "scale": 1.0, "flag": False}


def test_an_env_config_reaches_the_kernels_without_a_mirror() -> None:
    env = make("tag_gridworld", num_envs=2, device="cpu", seed=5, num_taggers=2, wall_hit_penalty=0.25,
               use_full_observation=False)
    p = env.params
    assert p.wall_hit_penalty == np.float32(0.25) and isinstance(p.wall_hit_penalty, np.float32)
    assert p.num_taggers == 2 and isinstance(p.num_taggers, np.int64)
    assert p.use_full_observation == np.bool_(False) and isinstance(p.use_full_observation, np.bool_)
    assert p.seed == 5  # the env's seed (random starts), which a config field of that name would not replace
