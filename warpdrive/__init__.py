"""warpdrive: end-to-end multi-agent reinforcement learning on the GPU."""

from warpdrive.core.compile import per_agent, per_env, per_index
from warpdrive.core.device import atomic_add, atomic_max, atomic_min, barrier, kernel_function, local_array
from warpdrive.core.env import Env
from warpdrive.core.store import ArraySpec, DataStore

__version__ = "0.1.0"

__all__ = [
    "ArraySpec",
    "DataStore",
    "Env",
    "atomic_add",
    "atomic_max",
    "atomic_min",
    "barrier",
    "kernel_function",
    "local_array",
    "per_agent",
    "per_env",
    "per_index",
]
