"""Tiny parameters for every registered env, for tests that run each env for its bookkeeping, not its size."""

from __future__ import annotations

from typing import Any

SMALL: dict[str, dict[str, Any]] = {
    "acrobot": {},
    "cartpole": {},
    "mountain_car": {},
    "mountain_car_continuous": {},
    "pendulum": {},
    "tag_gridworld": {"num_taggers": 2, "grid_length": 5},
    "tag_continuous": {"num_taggers": 2, "num_runners": 3, "grid_length": 3.0},
    "simple_tag": {},
    "simple_spread": {},
    "simple_adversary": {},
}
