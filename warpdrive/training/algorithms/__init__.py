"""Algorithms, one file each (config dataclass + update rule), and what each supports.

=========  ===========  ========  ==========  =========================================
name       kind         discrete  continuous  model
=========  ===========  ========  ==========  =========================================
``ppo``    on-policy    yes       yes         ``mlp_actor_critic``
``a2c``    on-policy    yes       yes         ``mlp_actor_critic``
``ddpg``   off-policy   no        yes         ``mlp_ddpg``
``random`` fixed        yes       yes         none (uniform actions; never learns)
=========  ===========  ========  ==========  =========================================
"""

from __future__ import annotations

from warpdrive.training.algorithms.a2c import A2C, A2CConfig
from warpdrive.training.algorithms.base import Act, Algorithm
from warpdrive.training.algorithms.ddpg import DDPG, DDPGConfig
from warpdrive.training.algorithms.ppo import PPO, PPOConfig
from warpdrive.training.algorithms.random_policy import RandomPolicy

__all__ = [
    "A2C",
    "ALGORITHMS",
    "DDPG",
    "PPO",
    "A2CConfig",
    "Act",
    "Algorithm",
    "DDPGConfig",
    "PPOConfig",
    "RandomPolicy",
    "algorithm_class",
]

#: name -> class; each class declares ``on_policy``, ``discrete``, ``continuous`` and its ``Config``.
ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (PPO, A2C, DDPG, RandomPolicy)}


def algorithm_class(name: str) -> type[Algorithm]:
    """The algorithm registered as ``name``."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}") from None
