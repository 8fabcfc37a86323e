"""MountainCarContinuous-v0 (Gymnasium's dynamics) as a batched device env (see ``env.py``)."""

from warpdrive.envs.mountain_car_continuous.env import MountainCarContinuous, MountainCarContinuousConfig

__all__ = ["MountainCarContinuous", "MountainCarContinuousConfig"]
