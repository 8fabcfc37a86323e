"""Policy assembly: which policy acts for which agent groups, whether its algorithm fits the env, and
building its algorithm (model, optimiser) from the config.

Everything a config could get wrong against the env is checked before any network is built, and reported
as a :class:`~warpdrive.core.typed.ConfigError` naming the key path: a group without a policy, a
policy for a group the env does not have, groups with different spaces under one policy, an algorithm
that does not support the env's action space, a batch its algorithm cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.env import Env
from warpdrive.core.sampling import check_mask_allows_some, discrete_choices
from warpdrive.core.typed import ConfigError
from warpdrive.training.algorithms import ALGORITHMS, Act, Algorithm, algorithm_class
from warpdrive.training.config import SHARED, PolicySpec, TrainConfig
from warpdrive.training.storage import RolloutStorage, agent_selector, select_agents

__all__ = ["Policy", "build_policies", "global_state", "global_state_size", "load_policy_tensors", "policy_tensors"]


@dataclass
class Policy:
    """One policy of a run and the agents it controls."""

    name: str
    """The group's name, or ``shared``."""
    groups: list[str]
    """The env's agent groups this policy acts for."""
    agent_ids: list[int]
    """The env's agent ids this policy controls, sorted."""
    agents: slice | torch.Tensor
    """How to select them on an agent axis (a slice when they are a contiguous range)."""
    algorithm: Algorithm
    global_critic: bool
    """Its critic sees the env's global state (``model.critic_input: global``)."""
    storage: RolloutStorage | None = None
    """Its rollout (given by the rollout collector); ``None`` for fixed (non-learning) policies."""

    def own_rows(self, x: torch.Tensor) -> torch.Tensor:
        """This policy's agents' rows of ``x`` [E, A, ...] (observations, action masks), contiguous:
        [E, A_p, ...]."""
        return select_agents(x, self.agents, 1).contiguous()

    def put_actions(self, env_actions: torch.Tensor, actions: torch.Tensor) -> None:
        """Write ``actions`` [E, A_p, H] into the env's action buffer [E, A, H] (converting the dtype)."""
        if isinstance(self.agents, slice):
            env_actions[:, self.agents].copy_(actions)
        else:
            env_actions.index_copy_(1, self.agents, actions.to(env_actions.dtype))

    def begin_rollout(self, env: Env) -> None:
        """Before a rollout (no CUDA graph involved): a recurrent policy stores the state its agents enter it
        with, from which its update unrolls the rollout again."""
        if self.algorithm.memory is not None and self.storage is not None:
            self.algorithm.memory.store_initial_state(self.storage, env.store["t"] == 0)

    def act(self, env: Env, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            explore: bool = True) -> Act:
        """Act for this policy's agents from ``obs`` [E, A, D] (``global_state`` [E, G] for a global critic),
        within the env's action mask if it has one, and write the actions into ``env.actions``.
        ``explore``: the algorithm's warm-up exploration, for training rollouts only.

        Raises:
            ValueError: in the env's validate mode, when the mask allows nothing for one of this policy's
                agents in some head (outside validate mode that is not checked: no host sync).
        """
        mask = None if env.action_mask is None else self.own_rows(env.action_mask)
        if mask is not None and env.validate:
            choices = discrete_choices(self.algorithm.action_space)
            assert choices is not None  # the env checked at construction that a masked action space is discrete
            check_mask_allows_some(mask, choices, self.agent_ids)
        if self.algorithm.memory is not None:  # a recurrent policy forgets its state where an episode starts
            self.algorithm.memory.reset(env.store["t"] == 0)
        act = self.algorithm.act(self.own_rows(obs), global_state if self.global_critic else None,
                                 deterministic, mask, explore)
        self.put_actions(env.actions, act.env_actions)
        return act


def global_state(env: Env, obs: torch.Tensor) -> torch.Tensor:
    """What a centralised critic sees of each replica, [E, G]: the env's
    :meth:`~warpdrive.core.env.Env.global_state` of ``obs`` [E, A, D], or, where the env declares none,
    every agent's observation concatenated, [E, A * D]."""
    state = env.global_state(obs)
    return obs.flatten(1) if state is None else state


def global_state_size(env: Env) -> int:
    """G, the size of :func:`global_state` for ``env`` (checked to be [E, G])."""
    state = global_state(env, env.obs)
    if state.dim() != 2 or state.shape[0] != env.num_envs:
        raise ValueError(f"{type(env).__name__}.global_state(obs) must return [num_envs, G] = [{env.num_envs}, G], "
                         f"got shape {list(state.shape)}")
    return int(state.shape[-1])


def build_policies(config: TrainConfig, env: Env, global_state_size: int,
                   generator: torch.Generator | None = None) -> list[Policy]:
    """The policies of ``config`` for ``env``, their algorithms built on ``env.device``.

    Args:
        global_state_size: G, the size of :func:`global_state` (for global critics).
        generator: the run's random generator on ``env.device``, which every algorithm draws from while
            acting and learning (``None``: torch's default one).

    Raises:
        ConfigError: naming the key path, for a config that does not fit the env (see the module doc).
    """
    specs, env_groups, group_spaces = config.policies, env.groups(), env.group_spaces()
    assignment = _assign_groups(specs, env_groups, config.env.name)
    agent_ids = {name: sorted(i for g in groups for i in env_groups[g]) for name, groups in assignment.items()}
    spaces = {name: _shared_spaces(f"policies.{name}", groups, group_spaces) for name, groups in assignment.items()}
    for name in assignment:
        samples = config.rollout_length * config.env.num_envs * len(agent_ids[name])
        if specs[name].model.recurrent != "none":  # a recurrent policy learns from whole (env, agent) sequences
            samples //= config.rollout_length
        _check_algorithm(f"policies.{name}", specs[name], spaces[name][1], config.env.name, samples)

    policies = []
    for name, groups in assignment.items():
        spec, (obs_space, action_space) = specs[name], spaces[name]
        global_critic = spec.model.critic_input == "global"
        try:
            algorithm = algorithm_class(spec.algorithm)(
                spec, int(np.prod(obs_space.shape)), action_space, global_state_size if global_critic else 0,
                env.device, config.mixed_precision == "bf16", num_agents=len(agent_ids[name]),
                cuda_graph=config.cuda_graph, generator=generator)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"policies.{name}", str(err.args[0] if err.args else err)) from None
        ids = agent_ids[name]
        policies.append(Policy(name, groups, ids, agent_selector(ids, env.device), algorithm, global_critic))
    return policies


def _assign_groups(specs: dict[str, PolicySpec], groups: dict[str, list[int]], env_name: str) -> dict[str, list[str]]:
    """Policy name -> the agent groups it acts for: every group to ``shared``, or each group to its own."""
    if SHARED in specs:
        return {SHARED: list(groups)}
    for name in specs:
        if name not in groups:
            raise ConfigError(f"policies.{name}", f"{env_name} has no agent group {name!r}; its groups: "
                              f"{', '.join(groups)} (or use one policy named {SHARED!r})")
    missing = [g for g in groups if g not in specs]
    if missing:
        raise ConfigError("policies", f"no policy for group(s) {', '.join(missing)} of {env_name}; add "
                          f"policies.{missing[0]} (algorithm: random for a fixed random policy), or use "
                          f"one policy named {SHARED!r} for all groups")
    return {g: [g] for g in groups}


def _shared_spaces(path: str, groups: list[str], spaces: dict[str, tuple[gym.spaces.Box, gym.spaces.Space]]
                   ) -> tuple[gym.spaces.Box, gym.spaces.Space]:
    """The (observation, action) space of one agent of ``groups``, which one policy serves: the same in each."""
    first = spaces[groups[0]]
    for g in groups[1:]:
        if spaces[g] != first:
            raise ConfigError(path, f"groups {groups[0]!r} and {g!r} have different spaces "
                              f"({first} vs {spaces[g]}); give each group its own policy")
    return first


def _check_algorithm(path: str, spec: PolicySpec, action_space: gym.spaces.Space, env_name: str,
                     samples: int) -> None:
    """The policy's algorithm supports the env's action space, and a batch of ``samples`` samples."""
    cls = algorithm_class(spec.algorithm)
    if not cls.supports_action_space(action_space):
        supported = "continuous (Box)" if cls.continuous else "discrete (Discrete, MultiDiscrete)"
        instead = [other.name for other in ALGORITHMS.values()
                   if other.trainable and other.supports_action_space(action_space)]
        raise ConfigError(f"{path}.algorithm", f"{cls.name} supports only {supported} actions, and {env_name} has "
                          f"{action_space}; use {_either(instead)}")
    if cls.trainable:
        cls.check_batch(spec.algorithm_config, samples, f"{path}.{cls.name}")


def _either(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def policy_tensors(policies: list[Policy]) -> dict[str, torch.Tensor]:
    """Every policy's networks as one flat dict ``<policy>/<module>.<parameter>`` (for safetensors)."""
    tensors = {}
    for policy in policies:
        for module_name, module in policy.algorithm.modules().items():
            for key, value in module.state_dict().items():
                tensors[f"{policy.name}/{module_name}.{key}"] = value.detach()
    return tensors


def load_policy_tensors(policies: list[Policy], tensors: dict[str, torch.Tensor]) -> None:
    """Load what :func:`policy_tensors` returned (in place, so captured graphs stay valid)."""
    for policy in policies:
        for module_name, module in policy.algorithm.modules().items():
            prefix = f"{policy.name}/{module_name}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not state:
                raise KeyError(f"the checkpoint has no weights for policy {policy.name!r} ({module_name}); "
                               f"it holds: {sorted({k.split('/')[0] for k in tensors})}")
            module.load_state_dict(state)
        policy.algorithm.sync_acting_model()
