"""The README's tutorial env (examples/rendezvous.py) works as the tutorial says (the env contract, CPU vs CUDA
included, runs on it through ``warpdrive check`` in tests/test_cli.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location("rendezvous", Path(__file__).parents[1] / "examples" / "rendezvous.py")
rendezvous = importlib.util.module_from_spec(_spec)
sys.modules["rendezvous"] = rendezvous  # as `import rendezvous` from examples/ would
_spec.loader.exec_module(rendezvous)


def test_rewards_are_minus_the_distance_to_the_centre() -> None:
    env = rendezvous.Rendezvous(num_envs=3, num_agents=5, backend="cpu")
    env.reset(seed=1)
    _, rewards, *_ = env.step(torch.randint(0, 5, (3, 5)))
    x, y = env.store["x"], env.store["y"]
    centre = torch.stack([x.mean(1), y.mean(1)], dim=1)
    torch.testing.assert_close(env.store["centre"], centre)
    distance = ((x - centre[:, :1]) ** 2 + (y - centre[:, 1:]) ** 2).sqrt()
    torch.testing.assert_close(rewards, -distance)
    assert x.min() >= 0 and x.max() <= 10


def test_episode_ends_when_everyone_has_met() -> None:
    env = rendezvous.Rendezvous(num_envs=1, num_agents=3, radius=20.0, backend="cpu")  # everyone is close
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(torch.zeros(1, 3, dtype=torch.int32))
    assert bool(terminated[0]) and not bool(truncated[0]) and bool(info["done"][0])


def test_identical_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start must be one of \\('random',\\) for Rendezvous, got 'identical'"):
        rendezvous.Rendezvous(start="identical", backend="cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_agents": 1}, "^num_agents: expected an integer >= 2, got 1$"),
        ({"radius": 0.0}, "^radius: expected a float > 0 and <= 1e\\+12, got 0.0$"),
        ({"size": "big"}, "^size: expected a float > 0 and <= 1e\\+12, got 'big'$"),
        ({"step_size": float("nan")}, "^step_size: expected a finite float > 0 and <= 1e\\+12, got nan$"),
        ({"size": 3e38}, "^size: expected a float > 0 and <= 1e\\+12, got 3e\\+38$"),
        ({"radus": 2.0}, "^radus: unknown key; did you mean 'radius'\\?$"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rendezvous.Rendezvous(backend="cpu", **kwargs)


def test_scalar_fields_reach_the_kernels() -> None:
    env = rendezvous.Rendezvous(num_envs=1, num_agents=3, size=4, step_size=0.25, backend="cpu")
    p = env.params
    assert (p.size, p.step_size, p.radius, p.num_agents) == (4.0, 0.25, 1.0, 3)
    assert p.size.dtype == p.step_size.dtype == p.radius.dtype == np.float32
