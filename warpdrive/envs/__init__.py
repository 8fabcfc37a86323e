"""Example envs, and a registry to build them by name."""

from __future__ import annotations

import importlib
from typing import Any

from warpdrive.core.env import Env

#: name -> "module:Class"; envs are imported on first use.
REGISTRY: dict[str, str] = {
    "tag_gridworld": "warpdrive.envs.tag_gridworld:TagGridWorld",
    "tag_continuous": "warpdrive.envs.tag_continuous:TagContinuous",
    "cartpole": "warpdrive.envs.cartpole:CartPole",
    "pendulum": "warpdrive.envs.pendulum:Pendulum",
    "acrobot": "warpdrive.envs.acrobot:Acrobot",
    "mountain_car": "warpdrive.envs.mountain_car:MountainCar",
    "mountain_car_continuous": "warpdrive.envs.mountain_car_continuous:MountainCarContinuous",
}


def env_class(name: str) -> type[Env]:
    """The env class registered as ``name``."""
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown env {name!r}; registered envs: {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), cls)


def make(name: str, **kwargs: Any) -> Env:
    """Build the env registered as ``name``; keyword arguments go to its constructor."""
    return env_class(name)(**kwargs)


def register(name: str, target: str) -> None:
    """Register an env class as ``"package.module:ClassName"`` under ``name``."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:ClassName', got {target!r}")
    REGISTRY[name] = target
