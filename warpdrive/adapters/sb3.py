"""A single-agent warpdrive env as a Stable-Baselines3 ``VecEnv`` (needs ``stable-baselines3``).

::

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    from warpdrive.adapters.sb3 import WarpDriveVecEnv
    from warpdrive.envs import make

    venv = VecMonitor(WarpDriveVecEnv(make("cartpole", num_envs=8, device="cpu")))
    PPO("MlpPolicy", venv).learn(50_000)

Stable-Baselines3 has no wrapper for Gymnasium's vector envs, so this adapts the env directly; its arrays
come from :class:`~warpdrive.adapters.gymnasium.WarpDriveVectorEnv`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from warpdrive.adapters.gymnasium import WarpDriveVectorEnv
from warpdrive.core.env import Env


class WarpDriveVecEnv(VecEnv):
    """The replicas of a single-agent warpdrive :class:`~warpdrive.core.env.Env` as an SB3 ``VecEnv``.

    SB3's vector envs reset a finished replica within the step, as the env does: the observation returned
    is the first of the next episode, ``infos[i]["terminal_observation"]`` holds the last one and
    ``infos[i]["TimeLimit.truncated"]`` says whether the episode was cut by the time limit (SB3 then
    bootstraps from the terminal observation). Arrays are NumPy copies (a device-to-host copy per step on
    a GPU). Wrap it in ``VecMonitor`` for SB3's episode statistics.

    ``seed(s)`` then ``reset()`` restarts every replica's random stream from ``s`` (one seed for the batch:
    SB3's per-replica seeds ``s + i`` are not used); ``reset()`` without ``seed`` continues the streams.
    The replicas are one batched env, not separate env objects: ``get_attr`` reads an attribute of the
    Gymnasium view (the same for every replica); ``set_attr`` and ``env_method`` refuse: use :attr:`env`
    (the warpdrive env) directly.

    Threads: on the CPU this sets PyTorch to ``torch_threads`` threads (default 1) beside Numba's workers,
    which run the env (see :func:`warpdrive.adapters.share_cpu_with_numba`); ``None`` leaves it alone.
    """

    def __init__(self, env: Env, torch_threads: int | None = 1) -> None:
        self.venv = WarpDriveVectorEnv(env, torch_threads=torch_threads)
        self.env = env
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, self.venv.single_observation_space, self.venv.single_action_space)

    def reset(self) -> VecEnvObs:
        if any(self._options):
            raise ValueError(f"{type(self.env).__name__} takes no reset options, got {self._options[0]!r}")
        obs, _ = self.venv.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions) first")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            # the env flags an episode truncated only where it was not also terminated
            infos[i] = {"terminal_observation": info["final_obs"][i], "TimeLimit.truncated": bool(truncated[i])}
        return obs, rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"set_attr({attr_name!r}): the replicas share one warpdrive env; set attributes on "
                             "WarpDriveVecEnv.env instead")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        raise AttributeError(f"env_method({method_name!r}): the replicas share one warpdrive env; call its methods "
                             "on WarpDriveVecEnv.env instead")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
