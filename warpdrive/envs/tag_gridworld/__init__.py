"""Tag on a grid world (see ``env.py``)."""

from warpdrive.envs.tag_gridworld.env import TagGridWorld, TagGridWorldConfig

__all__ = ["TagGridWorld", "TagGridWorldConfig"]
