"""CartPole-v1 (Gymnasium's dynamics) as a batched device env (see ``env.py``)."""

from warpdrive.envs.cartpole.env import CartPole, CartPoleConfig

__all__ = ["CartPole", "CartPoleConfig"]
