"""An env for tests/training/test_distributed.py, loaded by path as a user's env is: under torchrun, rank
1's raises in its 20th step, in the middle of training, while rank 0 goes on.

Building it returns a plain CartPole with its ``step`` wrapped: a subclass would compile kernels of its own.
"""

from __future__ import annotations

import os
from typing import Any

from warpdrive.envs.cartpole.env import CartPole

MESSAGE = "rank 1 failed on purpose"


class CartPoleFailingOnRank1(CartPole):
    def __new__(cls, *args: Any, **kwargs: Any) -> CartPole:  # type: ignore[misc]
        env = CartPole(*args, **kwargs)
        if os.environ.get("RANK") == "1":
            step, calls = env.step, 0

            def failing_step(actions: Any = None) -> Any:
                nonlocal calls
                calls += 1
                if calls == 20:
                    raise RuntimeError(MESSAGE)
                return step(actions)

            env.step = failing_step
        return env
