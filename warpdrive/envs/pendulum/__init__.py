"""Pendulum-v1 (Gymnasium's dynamics) as a batched device env (see ``env.py``)."""

from warpdrive.envs.pendulum.env import Pendulum, PendulumConfig

__all__ = ["Pendulum", "PendulumConfig"]
