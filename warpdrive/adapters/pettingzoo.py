"""One replica of a warpdrive env as a PettingZoo ``ParallelEnv`` (needs ``pettingzoo``).

::

    from warpdrive.adapters.pettingzoo import WarpDriveParallelEnv
    from warpdrive.envs import make

    env = WarpDriveParallelEnv(make("tag_gridworld", num_envs=1, device="cpu"))
    observations, infos = env.reset(seed=0)
    while env.agents:
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pettingzoo import ParallelEnv

from warpdrive.adapters import check_render_mode, restart_every_replica, share_cpu_with_numba
from warpdrive.core.env import Env
from warpdrive.core.sampling import discrete_choices


class WarpDriveParallelEnv(ParallelEnv):
    """A warpdrive :class:`~warpdrive.core.env.Env` with ``num_envs=1`` as a PettingZoo ``ParallelEnv``.

    PettingZoo's API is one game at a time: for batches use the env itself or
    :mod:`warpdrive.adapters.torchrl`. Agents are named ``"<group>_<k>"``, the ``k``-th agent of a group
    of :meth:`Env.groups` (e.g. ``"taggers_0"``, ``"runner_0"``); each has its group's spaces.

    An episode ends for every agent at once (the env's episodes are per replica): the step that ends it
    reports every agent terminated (or truncated), ``agents`` becomes empty and the episode stays as it
    ended until :meth:`reset` (no autoreset). ``reset(seed=s)`` restarts the random stream from ``s``;
    ``reset()`` continues it (a fresh start). Observations are NumPy copies [obs_size] float32; rewards
    are floats. ``reset`` accepts ``options`` as PettingZoo requires; the envs have none, so they are not
    used.

    Envs with an action mask (:attr:`Env.action_mask`) give, as PettingZoo's masked envs do, each agent's
    observation as ``{"observation": obs, "action_mask": mask}``: ``mask`` int8, 1 where allowed, one
    array per head as ``space.sample(mask=...)`` takes it (an array for Discrete, a tuple for MultiDiscrete).

    ``render_mode="rgb_array"``: :meth:`render` returns the game now as an RGB array [height, width, 3] uint8
    (:meth:`Env.render`).

    Threads: on the CPU this sets PyTorch to ``torch_threads`` threads (default 1) beside Numba's workers,
    which run the env (see :func:`warpdrive.adapters.share_cpu_with_numba`); ``None`` leaves it alone.
    """

    def __init__(self, env: Env, torch_threads: int | None = 1, render_mode: str | None = None) -> None:
        if not isinstance(env, Env):
            raise TypeError(f"WarpDriveParallelEnv wraps a warpdrive Env, got {type(env).__name__}")
        if env.num_envs != 1:
            raise ValueError(f"WarpDriveParallelEnv is one game: build the env with num_envs=1, got {env.num_envs}")
        self.metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "name": f"warpdrive/{env.name}"}
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        share_cpu_with_numba(env, torch_threads)
        self.env = env
        self._agent_index: dict[str, int] = {}
        self.observation_spaces: dict[str, gym.spaces.Space] = {}
        self.action_spaces: dict[str, gym.spaces.Space] = {}
        for group, agent_ids in env.groups().items():
            for k, agent_id in enumerate(agent_ids):
                name = f"{group}_{k}"
                self._agent_index[name] = agent_id
                # a space object per agent, so that seeding one agent's space leaves the others' alone
                obs_space: gym.spaces.Space
                obs_space, action_space = env.group_spaces()[group]
                if env.action_mask is not None:
                    obs_space = gym.spaces.Dict(observation=obs_space, action_mask=_mask_space(action_space))
                self.observation_spaces[name], self.action_spaces[name] = obs_space, action_space
        self.possible_agents = sorted(self._agent_index, key=self._agent_index.__getitem__)
        self.agents: list[str] = []

    def render(self) -> np.ndarray | None:
        """The game now as an RGB array [height, width, 3] uint8 with ``render_mode="rgb_array"``; else ``None``
        (with a warning, as Gymnasium's envs do)."""
        if self.render_mode is None:
            gym.logger.warn("render() was called without a render mode: build the adapter with render_mode='rgb_array'")
            return None
        return self.env.render(0)

    def observation_space(self, agent: str) -> gym.spaces.Space:
        return self.observation_spaces[self._known(agent)]

    def action_space(self, agent: str) -> gym.spaces.Space:
        return self.action_spaces[self._known(agent)]

    def reset(self, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        restart_every_replica(self.env, seed)
        self.agents = list(self.possible_agents)
        return self._observations(self.agents), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool],
                                                      dict[str, bool], dict[str, dict[str, Any]]]:
        if not self.agents:
            raise RuntimeError("the episode has ended (no agents left): call reset() before step()")
        missing = sorted(set(self.agents) - set(actions))
        unknown = sorted(set(actions) - set(self.agents))
        if missing or unknown:
            raise ValueError(f"step needs one action per live agent: missing {missing}, unknown {unknown}")
        batch = torch.zeros(self.env.actions.shape[1:], dtype=self.env.action_dtype())  # [agents, heads]
        for agent, action in actions.items():
            batch[self._agent_index[agent]] = torch.as_tensor(np.reshape(action, -1))
        self.env.actions.copy_(batch.to(self.env.device).unsqueeze(0))
        self.env.step_without_reset()
        store = self.env.store
        rewards = store["rewards"][0].cpu().numpy()
        terminated, truncated = bool(store["terminated"][0]), bool(store["truncated"][0])
        live = self.agents
        if terminated or truncated:
            self.agents = []
        return (self._observations(live), {a: float(rewards[self._agent_index[a]]) for a in live},
                dict.fromkeys(live, terminated), dict.fromkeys(live, truncated), {a: {} for a in live})

    def _observations(self, agents: list[str]) -> dict[str, Any]:
        obs = self.env.obs[0].cpu().numpy()  # [agents, obs_size]
        if self.env.action_mask is None:
            return {a: obs[self._agent_index[a]].copy() for a in agents}
        masks = self.env.action_mask[0].cpu().numpy().astype(np.int8)  # [agents, n_1 + ... + n_H]
        out = {}
        for a in agents:
            i = self._agent_index[a]
            choices = discrete_choices(self.action_spaces[a])
            assert choices is not None  # the env checked at construction that a masked action space is discrete
            heads = np.split(masks[i], np.cumsum(choices)[:-1])
            mask = heads[0] if isinstance(self.action_spaces[a], gym.spaces.Discrete) else tuple(heads)
            out[a] = {"observation": obs[i].copy(), "action_mask": mask}
        return out

    def _known(self, agent: str) -> str:
        if agent not in self._agent_index:
            raise KeyError(f"unknown agent {agent!r}; agents: {self.possible_agents}")
        return agent


def _mask_space(action_space: gym.spaces.Space) -> gym.spaces.Space:
    """The space of an action mask in the form ``action_space.sample(mask=...)`` takes."""
    choices = discrete_choices(action_space)
    assert choices is not None  # the env checked at construction that a masked action space is discrete
    heads = [gym.spaces.MultiBinary(n) for n in choices]
    return heads[0] if isinstance(action_space, gym.spaces.Discrete) else gym.spaces.Tuple(heads)
