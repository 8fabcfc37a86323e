"""MountainCar-v0 (Gymnasium's dynamics) as a batched device env (see ``env.py``)."""

from warpdrive.envs.mountain_car.env import MountainCar, MountainCarConfig

__all__ = ["MountainCar", "MountainCarConfig"]
