"""Acrobot-v1 (Gymnasium's dynamics) as a batched device env (see ``env.py``)."""

from warpdrive.envs.acrobot.env import Acrobot, AcrobotConfig

__all__ = ["Acrobot", "AcrobotConfig"]
