"""What the Gymnasium classic-control envs share: one agent, and one float64 state vector per replica.

Each of them (CartPole, Acrobot, Pendulum, MountainCar and MountainCarContinuous) keeps its state as
Gymnasium does, in float64, in ``state`` [envs, state_size], starts either from a random state drawn per
replica and episode or from one given state (``start`` [state_size], from the config's ``initial_state``),
and computes its sines and cosines in float64 as Gymnasium does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from warpdrive.core.env import Env
from warpdrive.core.store import ArraySpec


class ClassicControlEnv(Env):
    """A single-agent classic-control env; subclasses set :attr:`state_size` (and :attr:`default_start` where
    the identical start is not all zeros), and their config has an ``initial_state`` field."""

    state_size: ClassVar[int]
    #: the identical start when the config gives no ``initial_state`` (None: zeros)
    default_start: ClassVar[tuple[float, ...] | None] = None

    @classmethod
    def num_agents_of(cls, config: Any) -> int:
        return 1

    def state_arrays(self) -> list[ArraySpec]:
        return [
            ArraySpec("state", "env", torch.float64, "state", (self.state_size,)),
            ArraySpec("start", "global", torch.float64, "constant", (self.state_size,)),
        ]

    def start_state(self) -> dict[str, np.ndarray]:
        initial = self.config.initial_state
        if initial is not None and self.start == "random":
            raise ValueError(
                f"initial_state={initial!r} is only used with start='identical'; pass start='identical' "
                "or drop initial_state"
            )
        if initial is None:
            initial = np.zeros(self.state_size) if self.default_start is None else self.default_start
        return {"start": np.asarray(initial, dtype=np.float64)}
