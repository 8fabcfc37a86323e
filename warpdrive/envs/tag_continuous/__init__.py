"""Tag in continuous space (see ``env.py``)."""

from warpdrive.envs.tag_continuous.env import TagContinuous, TagContinuousConfig

__all__ = ["TagContinuous", "TagContinuousConfig"]
