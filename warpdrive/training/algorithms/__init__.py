"""Algorithms, one module each (config dataclass + update rule + what it supports), registered by name.

Built in: ``ppo``, ``a2c`` (on-policy; recurrent models; MAPPO with ``model.critic_input: global``), ``ddpg``,
``maddpg``, ``masac`` (off-policy, continuous actions; the last two with critics over every agent of the policy),
``vdn``, ``qmix`` (off-policy value decomposition, discrete actions) and ``random``. What each supports is
declared on its class (``discrete``, ``continuous``, ``on_policy``, ``recurrent``, ``centralised``,
``global_critic``); the README's table of algorithms shows these declarations (a test compares them).

A new algorithm is a new module here: its ``Config`` dataclass and its :class:`Algorithm` subclass
decorated with :func:`register_algorithm` (see :mod:`~warpdrive.training.algorithms.base`). Importing this
package imports every module in it, so the algorithm is then known to configs and the trainer by name. One that
learns from a replay buffer subclasses :class:`~warpdrive.training.algorithms.replay.ReplayLearner`, which runs
the iteration (store, warm up, gradient steps, metrics, resume state): it gives what is stored, one gradient
step and its optimisers.
"""

from __future__ import annotations

import importlib
import pkgutil

from warpdrive.training.algorithms.base import ALGORITHMS, Act, Algorithm, algorithm_class, register_algorithm

# isort: off
# The built-in algorithms, in the order in which errors and config files list them.
from warpdrive.training.algorithms.ppo import PPO, PPOConfig
from warpdrive.training.algorithms.a2c import A2C, A2CConfig
from warpdrive.training.algorithms.ddpg import DDPG, DDPGConfig
from warpdrive.training.algorithms.random_policy import RandomPolicy
# isort: on

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
    "register_algorithm",
]

# Every other module of this package registers its algorithm on import.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
