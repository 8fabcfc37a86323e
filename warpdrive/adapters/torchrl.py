"""A warpdrive env as a TorchRL ``EnvBase`` over its whole batch (needs ``torchrl`` and ``tensordict``).

::

    from torchrl.envs.utils import check_env_specs
    from warpdrive.adapters.torchrl import WarpDriveTorchRLEnv
    from warpdrive.envs import make

    env = WarpDriveTorchRLEnv(make("tag_gridworld", num_envs=32, device="cpu"))
    check_env_specs(env)
    rollout = env.rollout(10)  # rollout["taggers", "observation"]: [32, 10, taggers, obs_size]
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, MultiCategorical, TensorSpec, Unbounded
from torchrl.envs import EnvBase

from warpdrive.adapters import restart_every_replica, share_cpu_with_numba
from warpdrive.core.env import Env


class WarpDriveTorchRLEnv(EnvBase):
    """All replicas of a warpdrive :class:`~warpdrive.core.env.Env` as one TorchRL env, ``batch_size=[E]``.

    Agent groups (:meth:`Env.groups`) are nested keys, as in TorchRL's ``VmasEnv``: for a group ``g`` of
    ``n`` agents, ``(g, "observation")`` [E, n, obs_size] float32, ``(g, "action")`` ([E, n] for Discrete
    spaces, [E, n, heads] for MultiDiscrete and Box) and ``("next", g, "reward")`` [E, n, 1]. ``"done"``,
    ``"terminated"`` and ``"truncated"`` [E, 1] bool are at the root: an episode ends for a whole replica.
    Every tensor stays on the env's device, and no step or reset waits for the host (unless the env's
    ``validate`` is on, its default on the CPU, where it checks the actions).

    Resets are TorchRL's to drive: :meth:`_step` leaves finished replicas as they ended
    (:meth:`Env.step_without_reset`), and the ``"_reset"`` mask that TorchRL's collectors and rollouts pass
    to :meth:`_reset` restarts exactly those replicas (:meth:`Env.reset` with a mask). A reset without
    ``"_reset"`` restarts every replica: from seed ``s``'s random streams after ``set_seed(s)``, else
    carrying each replica's stream on (fresh starts).

    Envs with an action mask (:attr:`Env.action_mask`) add ``(g, "action_mask")`` [E, n, n_1 + ... + n_H]
    bool to the observations (True where allowed; for ``MaskedCategorical(mask=...)`` policies) and keep
    the action specs' masks up to date, as TorchRL's ``ActionMask`` transform does, so that
    ``env.rand_action()`` draws allowed actions.

    Threads: on the CPU this sets PyTorch to ``torch_threads`` threads (default 1) beside Numba's workers,
    which run the env (see :func:`warpdrive.adapters.share_cpu_with_numba`); ``None`` leaves it alone.
    """

    def __init__(self, env: Env, torch_threads: int | None = 1) -> None:
        if not isinstance(env, Env):
            raise TypeError(f"WarpDriveTorchRLEnv wraps a warpdrive Env, got {type(env).__name__}")
        share_cpu_with_numba(env, torch_threads)
        super().__init__(device=env.device, batch_size=torch.Size([env.num_envs]))
        self.env = env
        self._next_seed: int | None = None  # set_seed's, for the next full reset
        self.group_map: dict[str, torch.Tensor] = {
            group: torch.as_tensor(ids, dtype=torch.long, device=env.device) for group, ids in env.groups().items()
        }
        self._discrete = isinstance(env.single_action_space(), gym.spaces.Discrete)
        self._make_specs()

    def _make_specs(self) -> None:
        e = self.env.num_envs
        observation, action, reward = {}, {}, {}
        for group, (obs_space, action_space) in self.env.group_spaces().items():
            shape = (e, len(self.group_map[group]))
            observation[group] = Composite(observation=_spec(obs_space, shape, self.device), shape=shape)
            if self.env.action_mask is not None:
                choices = self.env.action_mask.shape[-1]
                observation[group]["action_mask"] = Binary(choices, shape=(*shape, choices), dtype=torch.bool,
                                                           device=self.device)
            action[group] = Composite(action=_spec(action_space, shape, self.device), shape=shape)
            reward[group] = Composite(reward=Unbounded(shape=(*shape, 1), device=self.device), shape=shape)
        flags = {k: Categorical(2, shape=(e, 1), dtype=torch.bool, device=self.device)
                 for k in ("done", "terminated", "truncated")}
        self.full_observation_spec = Composite(observation, shape=(e,), device=self.device)
        self.full_action_spec = Composite(action, shape=(e,), device=self.device)
        self.full_reward_spec = Composite(reward, shape=(e,), device=self.device)
        self.full_done_spec = Composite(flags, shape=(e,), device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = self.env.actions  # [E, A, heads]
        for group, ids in self.group_map.items():
            group_actions = tensordict.get((group, "action"))
            if self._discrete:
                group_actions = group_actions.unsqueeze(-1)
            actions.index_copy_(1, ids, group_actions.to(actions.dtype))
        self.env.step_without_reset()
        store = self.env.store
        out = self._observations()
        for group, ids in self.group_map.items():
            out.set((group, "reward"), store["rewards"].index_select(1, ids).unsqueeze(-1))
        for flag in ("done", "terminated", "truncated"):
            out.set(flag, store[flag].unsqueeze(-1).clone())
        return out

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        if tensordict is not None and "_reset" in tensordict:
            self.env.reset(mask=tensordict.get("_reset").reshape(self.env.num_envs))
        else:
            restart_every_replica(self.env, self._next_seed)
            self._next_seed = None
        out = self._observations()
        # a replica that did not restart is not done either: TorchRL resets every finished one
        not_done = torch.zeros((self.env.num_envs, 1), dtype=torch.bool, device=self.device)
        for flag in ("done", "terminated", "truncated"):
            out.set(flag, not_done.clone())
        return out

    def _set_seed(self, seed: int | None) -> None:
        self._next_seed = seed

    def _observations(self) -> TensorDict:
        obs, mask = self.env.obs, self.env.action_mask
        groups = {}
        for group, ids in self.group_map.items():
            groups[group] = TensorDict(observation=obs.index_select(1, ids), batch_size=(self.env.num_envs, len(ids)))
            if mask is not None:
                group_mask = mask.index_select(1, ids)
                groups[group]["action_mask"] = group_mask
                self.full_action_spec[group, "action"].update_mask(group_mask)
        return TensorDict(groups, batch_size=self.batch_size, device=self.device)


def _spec(space: gym.spaces.Space, shape: tuple[int, int], device: torch.device) -> TensorSpec:
    """The TorchRL spec of one agent's ``space``, for ``shape`` = (envs, agents of the group)."""
    if isinstance(space, gym.spaces.Discrete):
        return Categorical(int(space.n), shape=shape, dtype=torch.int64, device=device)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategorical(space.nvec.reshape(-1).tolist(), shape=(*shape, space.nvec.size), dtype=torch.int64,
                                device=device)
    if isinstance(space, gym.spaces.Box):
        full = (*shape, int(np.prod(space.shape)))
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        if np.isfinite(low).all() and np.isfinite(high).all():
            return Bounded(torch.as_tensor(low).expand(full), torch.as_tensor(high).expand(full), shape=full,
                           dtype=torch.float32, device=device)
        return Unbounded(shape=full, dtype=torch.float32, device=device)
    raise TypeError(f"no TorchRL spec for the space {space}")
