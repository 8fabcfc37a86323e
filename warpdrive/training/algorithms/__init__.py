"""Algorithms, one module each (config dataclass + update rule + what it supports), registered by name.

=========  ===========  ========  ==========  ==============  =========================================
name       kind         discrete  continuous  global critic   model
=========  ===========  ========  ==========  ==============  =========================================
``ppo``    on-policy    yes       yes         yes             ``mlp_actor_critic``
``a2c``    on-policy    yes       yes         yes             ``mlp_actor_critic``
``ddpg``   off-policy   no        yes         no              ``mlp_ddpg``
``maddpg`` off-policy   no        yes         no (built in)   its own (shared actor, centralised critic)
``masac``  off-policy   no        yes         no (built in)   its own (shared actor, twin centralised critics)
``vdn``    off-policy   yes       no          no              its own (shared agent Q network)
``qmix``   off-policy   yes       no          yes (mixer)     its own (agent Q network, mixing network)
``random`` fixed        yes       yes         (no model)      none (uniform actions; never learns)
=========  ===========  ========  ==========  ==============  =========================================

MADDPG's and MASAC's critics are centralised by construction (every agent of the policy in the env); they do
not take the env's global state (``model.critic_input: global``).

A new algorithm is a new module here: its ``Config`` dataclass and its :class:`Algorithm` subclass
decorated with :func:`register_algorithm` (see :mod:`~warpdrive.training.algorithms.base`). Importing this
package imports every module in it, so the algorithm is then known to configs and the trainer by name.
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
