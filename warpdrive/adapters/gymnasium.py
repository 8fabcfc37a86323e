"""A single-agent warpdrive env as a ``gymnasium.vector.VectorEnv``, and its ``gymnasium.make_vec`` ids.

::

    import gymnasium as gym
    from warpdrive.adapters.gymnasium import register_envs

    register_envs()  # adds warpdrive/CartPole-v1, Pendulum-v1, Acrobot-v1, MountainCar-v0 and
                    # MountainCarContinuous-v0 to Gymnasium's registry
    envs = gym.make_vec("warpdrive/CartPole-v1", num_envs=64, device="cpu")

Registration is an explicit call: Gymnasium 1.x discovers no plugins, and importing a warpdrive module
registers nothing. ``gym.make_vec`` passes its keyword arguments to the env's constructor (``device``,
``seed``, config fields such as ``episode_length``); Gymnasium's ``max_episode_steps`` is accepted as
``episode_length``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from warpdrive.adapters import check_render_mode, restart_every_replica, share_cpu_with_numba, single_agent
from warpdrive.core.env import Env
from warpdrive.envs import make

#: Gymnasium id -> warpdrive.envs registry name; each env follows the Gymnasium env of the same name.
GYMNASIUM_IDS: dict[str, str] = {
    "warpdrive/CartPole-v1": "cartpole",
    "warpdrive/Pendulum-v1": "pendulum",
    "warpdrive/Acrobot-v1": "acrobot",
    "warpdrive/MountainCar-v0": "mountain_car",
    "warpdrive/MountainCarContinuous-v0": "mountain_car_continuous",
}


def register_envs() -> None:
    """Register :data:`GYMNASIUM_IDS` with Gymnasium (once; later calls do nothing).

    They have a vector entry point only: build them with ``gym.make_vec``, not ``gym.make``.
    """
    for env_id, name in GYMNASIUM_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, vector_entry_point=f"{__name__}:make_vector_env", kwargs={"env": name})


def make_vector_env(env: str, num_envs: int = 1, max_episode_steps: int | None = None,
                    torch_threads: int | None = 1, render_mode: str | None = None,
                    **kwargs: Any) -> WarpDriveVectorEnv:
    """Build the warpdrive env registered as ``env`` with ``num_envs`` replicas, as a Gymnasium vector env.

    ``max_episode_steps`` is Gymnasium's name for ``episode_length``; ``kwargs`` go to the env's
    constructor (see :class:`~warpdrive.core.env.Env`). Gymnasium's ``make_vec`` calls this.
    """
    if max_episode_steps is not None:
        if "episode_length" in kwargs and kwargs["episode_length"] != max_episode_steps:
            raise ValueError(f"max_episode_steps={max_episode_steps!r} and episode_length="
                             f"{kwargs['episode_length']!r} disagree; pass one of them")
        kwargs["episode_length"] = max_episode_steps
    check_render_mode(render_mode, WarpDriveVectorEnv.metadata["render_modes"])  # before building the env
    return WarpDriveVectorEnv(make(env, num_envs=num_envs, **kwargs), torch_threads=torch_threads,
                              render_mode=render_mode)


class WarpDriveVectorEnv(gym.vector.VectorEnv):
    """A single-agent warpdrive :class:`~warpdrive.core.env.Env` as a Gymnasium vector env of its replicas.

    Autoreset: ``AutoresetMode.SAME_STEP``, the env's own. A replica whose episode ends in a step is
    reset within it; the observation returned is the first of its next episode, and ``info`` holds the
    last one as Gymnasium 1.x's vector envs do: ``info["final_obs"]``, an object array [N] holding the
    observation where ``info["_final_obs"]`` [N] bool is set (None elsewhere), and ``info["final_info"]``
    (empty: the env has no per-step info) with its mask ``info["_final_info"]``. These keys are present
    only in steps where some episode ended.

    Arrays: NumPy, as Gymnasium's vector API and its wrappers expect: observations [N, *obs_shape]
    float32, rewards [N] float32, terminations and truncations [N] bool; actions [N, *action_shape]
    (NumPy or torch). They are copies: on a GPU every step moves them between the device and the host
    (for data kept on the device use the env itself or :mod:`warpdrive.adapters.torchrl`).

    ``reset(seed=s)`` restarts every replica's random stream from ``s`` (one seed for the batch; the
    replicas' streams derive from it); ``reset()`` continues the streams (fresh starts);
    ``reset(options={"reset_mask": m})``, with ``m`` a NumPy bool array [N], restarts only those replicas
    (:meth:`Env.reset` with a mask).

    ``render_mode="rgb_array"``: :meth:`render` returns a frame of every replica, as Gymnasium's vector envs
    do (each drawn on the host: seconds for hundreds of replicas; ``env.env.render(i)`` draws one).

    Threads: on the CPU this sets PyTorch to ``torch_threads`` threads (default 1) beside Numba's workers,
    which run the env (see :func:`warpdrive.adapters.share_cpu_with_numba`); ``None`` leaves it alone.
    """

    # gymnasium declares metadata without ClassVar, though it is a class attribute there too
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP,  # type: ignore[misc]
                                          "render_modes": ["rgb_array"]}

    def __init__(self, env: Env, torch_threads: int | None = 1, render_mode: str | None = None) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.env = single_agent(env, "WarpDriveVectorEnv")
        share_cpu_with_numba(env, torch_threads)
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        assert self.single_action_space.shape is not None  # an Env's action space is Discrete, MultiDiscrete or Box
        self._action_shape = (self.num_envs, *self.single_action_space.shape)
        self._box_actions = isinstance(self.single_action_space, gym.spaces.Box)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes; returns ``(observations [N, D], {})``. See the class docstring for ``seed``
        and ``options={"reset_mask": ...}``."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be one int for the whole batch, got {type(seed).__name__}: {seed!r}")
        unknown = sorted(set(options or {}) - {"reset_mask"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; the only option is 'reset_mask'")
        reset_mask = (options or {}).get("reset_mask")
        if reset_mask is None:
            if seed is not None:
                self._np_random, self._np_random_seed = seeding.np_random(int(seed))
            restart_every_replica(self.env, seed)
        else:
            if not isinstance(reset_mask, np.ndarray) or reset_mask.dtype != np.bool_ \
                    or reset_mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must be a NumPy bool array of shape ({self.num_envs},), "
                                 f"got {reset_mask!r}")
            self.env.reset(seed=seed, mask=torch.from_numpy(reset_mask).to(self.env.device))
        return self._host(self.env.obs[:, 0]), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every replica; returns ``(observations, rewards, terminations, truncations, info)``."""
        obs, rewards, terminated, truncated, info = self.env.step(self._device_actions(actions))
        done = self._host(info["done"])
        infos: dict[str, Any] = {}
        if done.any():
            final_obs = self._host(info["final_obs"][:, 0])
            finished = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                finished[i] = final_obs[i]
            infos = {"final_obs": finished, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
        return self._host(obs[:, 0]), self._host(rewards[:, 0]), self._host(terminated), self._host(truncated), infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Every replica now as an RGB array [height, width, 3] uint8 with ``render_mode="rgb_array"``; else
        ``None`` (with a warning, as Gymnasium's envs do)."""
        if self.render_mode is None:
            gym.logger.warn("render() was called without a render mode: pass render_mode='rgb_array'")
            return None
        return tuple(self.env.render(i) for i in range(self.num_envs))

    def _device_actions(self, actions: Any) -> torch.Tensor:
        tensor = torch.as_tensor(actions, device=self.env.device)
        if tuple(tensor.shape) != self._action_shape:
            raise ValueError(f"actions have shape {tuple(tensor.shape)}, expected {self._action_shape} "
                             f"(num_envs, *single_action_space.shape) for {self.single_action_space}")
        if self._box_actions:
            tensor = tensor.to(torch.float32)  # Gymnasium's Box spaces are float32; callers may pass float64
        return tensor.reshape(self.num_envs, 1, -1)

    @staticmethod
    def _host(tensor: torch.Tensor) -> np.ndarray:
        return tensor.to("cpu", copy=True).numpy()
