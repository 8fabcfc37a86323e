"""The data store: one name-keyed set of torch tensors on the device, shared zero-copy with the kernels.

Every array an env uses lives here, shaped ``[envs, agents, ...]`` (per agent), ``[envs, ...]`` (per env)
or without the env axis (constants shared by all envs). Envs, samplers and trainers read and write the
tensors in place; the kernels see the same memory through Numba views made once (CUDA array interface on
the GPU, ``Tensor.numpy()`` on the CPU), never through a copy.
"""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from warpdrive.core.targets import KernelTarget

Role = Literal["state", "observation", "action", "action_mask", "reward", "done", "constant", "scratch"]
Per = Literal["agent", "env", "global"]

ROLES: tuple[str, ...] = ("state", "observation", "action", "action_mask", "reward", "done", "constant", "scratch")


@dataclass(frozen=True)
class ArraySpec:
    """Declares one array of an env.

    Attributes:
        name: key in the store and field name in the kernels' ``s`` tuple.
        per: ``"agent"`` -> shape ``[envs, agents, *shape]``; ``"env"`` -> ``[envs, *shape]``;
            ``"global"`` -> ``shape`` (one copy shared by every env, e.g. an action table).
        shape: trailing dimensions.
        dtype: a torch dtype (float32, int32, int64, bool, ...).
        role: what the array is for; see :data:`ROLES`.
    """

    name: str
    per: Per
    dtype: torch.dtype
    role: Role = "state"
    shape: tuple[int, ...] = ()

    def full_shape(self, num_envs: int, num_agents: int) -> tuple[int, ...]:
        if self.per == "agent":
            return (num_envs, num_agents, *self.shape)
        if self.per == "env":
            return (num_envs, *self.shape)
        return tuple(self.shape)

    def nbytes(self, num_envs: int, num_agents: int) -> int:
        count = int(np.prod(self.full_shape(num_envs, num_agents), dtype=np.int64))
        return count * torch.empty((), dtype=self.dtype).element_size()


def kernel_tuple_type(owner: type, suffix: str, fields: list[str]) -> type[Any]:
    """A named tuple class for kernel arguments, registered on ``owner``'s module.

    Numba's disk cache pickles argument types, so the class must be importable by name.
    """
    name = f"_{owner.__name__}{suffix}"
    module = sys.modules[owner.__module__]
    existing = getattr(module, name, None)
    if existing is not None and list(existing._fields) == fields:
        return existing
    cls = collections.namedtuple(name, fields, module=owner.__module__)  # type: ignore[misc]  # a name made at run time
    setattr(module, name, cls)
    return cls


class DataStore:
    """Named device tensors with roles, and their zero-copy views for the kernels.

    Args:
        specs: the arrays to allocate (all zero-initialised).
        num_envs, num_agents: sizes of the leading axes.
        device: a torch device; ``cuda`` views go through the CUDA array interface.
    """

    def __init__(self, specs: list[ArraySpec], num_envs: int, num_agents: int, device: torch.device) -> None:
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"array names must be unique; declared twice: {duplicates}")
        for spec in specs:
            if spec.role not in ROLES:
                raise ValueError(f"array {spec.name!r}: role {spec.role!r} is not one of {ROLES}")
        self.specs: dict[str, ArraySpec] = {s.name: s for s in specs}
        self.num_envs = num_envs
        self.num_agents = num_agents
        self.device = device
        self.tensors: dict[str, torch.Tensor] = {
            s.name: torch.zeros(s.full_shape(num_envs, num_agents), dtype=s.dtype, device=device) for s in specs
        }

    @staticmethod
    def required_bytes(specs: list[ArraySpec], num_envs: int, num_agents: int) -> int:
        return sum(s.nbytes(num_envs, num_agents) for s in specs)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no array named {name!r}; the store holds {sorted(self.tensors)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> torch.Tensor | None:
        """The array ``name``, or ``None`` when the store has none by that name (optional arrays)."""
        return self.tensors.get(name)

    def names(self, role: Role | None = None) -> list[str]:
        return [n for n, s in self.specs.items() if role is None or s.role == role]

    def kernel_views(self, tuple_type: type[Any], target: KernelTarget) -> Any:
        """The tensors as one named tuple of arrays ``target``'s kernels accept (no copies)."""
        return tuple_type(*(target.array(self.tensors[name]) for name in tuple_type._fields))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of every state-bearing tensor (for checkpoints and the consistency checker)."""
        return {n: t.clone() for n, t in self.tensors.items() if self.specs[n].role != "scratch"}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self[name].copy_(value)
