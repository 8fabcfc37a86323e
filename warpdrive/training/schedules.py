"""Schedules for coefficients that change over training (learning rate, entropy coefficient).

``progress`` is the fraction of training done, in [0, 1]: ``iteration / num_iterations`` at the start of
an iteration. A schedule goes from the initial value at progress 0 to ``final * initial`` at progress 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from warpdrive.core.typed import bounded

__all__ = ["Schedule", "constant", "cosine", "linear"]


def constant(initial: float, final: float, progress: float) -> float:
    return initial


def linear(initial: float, final: float, progress: float) -> float:
    return initial + (final - initial) * min(max(progress, 0.0), 1.0)


def cosine(initial: float, final: float, progress: float) -> float:
    p = min(max(progress, 0.0), 1.0)
    return final + (initial - final) * 0.5 * (1.0 + math.cos(math.pi * p))


_KINDS = {"constant": constant, "linear": linear, "cosine": cosine}


@dataclass
class Schedule:
    """How a coefficient changes over training."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    """``constant``; ``linear`` (CleanRL's ``anneal_lr`` with ``final: 0``); ``cosine``."""
    final: float = bounded(0.0, ge=0.0)
    """Value at the end of training as a fraction of the initial value (unused by ``constant``)."""

    def value(self, initial: float, progress: float) -> float:
        """The coefficient at ``progress`` in [0, 1] for a start value ``initial``."""
        return _KINDS[self.kind](initial, initial * self.final, progress)
