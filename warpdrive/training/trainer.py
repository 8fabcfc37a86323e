"""The training loop: rollouts that never leave the device, one policy per agent group, then updates.

Per rollout step: store the env's observations once for all policies
(:class:`~warpdrive.training.storage.EnvRollout`); for each policy (``for policy in policies``,
BenchMARL-style) take its agents' observations (a slice of the agent axis), run the policy, sample on the
device, write the actions into the env's action buffer at those agents and store what the policy decided
in its :class:`~warpdrive.training.storage.RolloutStorage`; then one ``env.step()`` for every env at once,
and store its rewards, done flags and final observations, again once for all policies. Writes go to a step
index held in a device tensor. Episode statistics are summed by the env's step kernel itself
(:meth:`~warpdrive.core.env.Env.episode_totals`) and read once per iteration: the loop does no per-step
reduction and no host sync.

On CUDA, one rollout step (policy forward passes, sampling, the env kernel, storage writes) is captured
in a ``torch.cuda.CUDAGraph`` and replayed ``T`` times per rollout (the env's Numba kernels launch on
torch's current stream, so they are part of the graph); with several policies, their forward passes run on
streams of their own and overlap. Sampling uses torch's default CUDA
generator, which graphs handle (each replay draws fresh numbers).

Metrics per iteration (stable names): ``charts/episodic_return/<group>``, ``charts/episodic_length``,
``charts/episodes``, ``charts/SPS`` (env-steps per second, rollout + update), ``env/<metric>`` (the env's
per-episode statistics), ``losses/<policy>/<name>`` (``policy_loss``, ``value_loss``, ``entropy``,
``approx_kl``, ``clipfrac``, ``explained_variance``, ...), ``time/rollout_s``, ``time/update_s``.
Episode statistics cover episodes that finished during the iteration; they are absent when none did.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.device import cuda_available
from warpdrive.envs import make
from warpdrive.training.algorithms import Algorithm, algorithm_class
from warpdrive.training.algorithms.base import Act
from warpdrive.training.config import SHARED, TrainConfig
from warpdrive.training.storage import EnvRollout, RolloutStorage, agent_selector, select_agents
from warpdrive.training.typed import ConfigError

__all__ = ["Policy", "Trainer", "metric_name", "resolve_device", "seed_everything"]

log = logging.getLogger(__name__)

#: Eager rollout steps before a CUDA graph is captured (lazy initialisation must happen outside capture).
_GRAPH_WARMUP_STEPS = 3


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when a GPU is usable, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not cuda_available():
        raise ConfigError("device", f"{name!r} asked for, but no CUDA GPU is usable; use device=cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def metric_name(key: str) -> str:
    """Loss-dict key -> metric name: ``loss_policy`` -> ``policy_loss``; other keys stay as they are."""
    return f"{key[5:]}_loss" if key.startswith("loss_") else key


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
    storage: RolloutStorage | None
    """``None`` for fixed (non-learning) policies."""
    global_critic: bool

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


class Trainer:
    """Trains the policies of ``config`` in its env; call :meth:`train_iteration` until :attr:`done`.

    Construction seeds every generator, builds the env (all replicas reset by one kernel launch), the
    policies and their storage; it raises :class:`ConfigError` naming the key path for configs that do
    not fit the env (a group without a policy, an algorithm that does not support the action space, ...).
    """

    def __init__(self, config: TrainConfig) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer needs a TrainConfig (from load_config(...)), got {type(config).__name__}")
        self.config = config
        self.device = resolve_device(config.device)
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        if self.device.type == "cuda" and config.mixed_precision in ("tf32", "bf16"):
            torch.backends.cuda.matmul.allow_tf32 = True  # process-wide, like torch.set_num_threads
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(config.seed)
        spec = config.env
        try:
            self.env = make(spec.name, num_envs=spec.num_envs, device=self.device, seed=config.seed,
                            start=spec.start, **spec.kwargs)
        except KeyError as err:
            raise ConfigError("env.name", str(err.args[0])) from None
        except (TypeError, ValueError) as err:
            raise ConfigError("env", str(err)) from None
        self.num_envs = spec.num_envs
        self.num_steps = config.rollout_length
        self.batch_env_steps = self.num_envs * self.num_steps
        self.num_iterations = max(1, math.ceil(config.total_env_steps / self.batch_env_steps))
        self.iteration = 0
        self.env_steps = 0

        self.env.reset(seed=config.seed)
        self.groups = self.env.groups()
        self._global_state_fn = getattr(self.env, "global_state", None) or (lambda obs: obs.flatten(1))
        self.global_state_size = int(self._global_state_fn(self.env.obs).shape[-1])
        self.policies = self._build_policies()
        self._needs_global = any(p.global_critic for p in self.policies)

        # a group's episodic return is the mean over its agents of their returns
        self.metric_names = self.env.metric_names()
        self._group_weights = torch.zeros(self.env.num_agents, len(self.groups), device=self.device)
        for column, ids in enumerate(self.groups.values()):
            self._group_weights[ids, column] = 1.0 / len(ids)
        self.env.episode_totals(clear=True)  # count only episodes that finish during training
        self._step_index = torch.zeros(1, dtype=torch.int64, device=self.device)

        self._use_graph = config.cuda_graph and self.device.type == "cuda"
        self._policy_streams: list[torch.cuda.Stream] = []
        if self.device.type == "cuda" and len(self.policies) > 1:
            self._policy_streams = [torch.cuda.Stream(device=self.device) for _ in self.policies]
        self._graph: torch.cuda.CUDAGraph | None = None

    # ----------------------------------------------------------------------------------------------
    # setup

    def _build_policies(self) -> list[Policy]:
        specs = self.config.policies
        env_name = self.config.env.name
        if SHARED in specs:
            assignment = {SHARED: list(self.groups)}
        else:
            for name in specs:
                if name not in self.groups:
                    raise ConfigError(f"policies.{name}", f"{env_name} has no agent group {name!r}; its groups: "
                                      f"{', '.join(self.groups)} (or use one policy named {SHARED!r})")
            missing = [g for g in self.groups if g not in specs]
            if missing:
                raise ConfigError("policies", f"no policy for group(s) {', '.join(missing)} of {env_name}; add "
                                  f"policies.{missing[0]} (algorithm: random for a fixed random policy), or use "
                                  f"one policy named {SHARED!r} for all groups")
            assignment = {g: [g] for g in self.groups}

        spaces = self.env.group_spaces()
        trainable = [algorithm_class(specs[name].algorithm).trainable for name in assignment]
        global_critics = [specs[name].model.critic_input == "global" for name in assignment]
        self.env_rollout: EnvRollout | None = None
        if any(trainable):
            mask = self.env.action_mask
            self.env_rollout = EnvRollout(self.num_steps, self.num_envs, self.env.num_agents,
                                          self.env.observation_size(), self.device,
                                          global_state_size=self.global_state_size if any(global_critics) else 0,
                                          action_mask_size=0 if mask is None else mask.shape[-1])
        policies = []
        for name, groups in assignment.items():
            spec, path = specs[name], f"policies.{name}"
            obs_space, action_space = spaces[groups[0]]
            for g in groups[1:]:
                if spaces[g] != (obs_space, action_space):
                    raise ConfigError(path, f"groups {groups[0]!r} and {g!r} have different spaces "
                                      f"({spaces[groups[0]]} vs {spaces[g]}); give each group its own policy")
            cls = algorithm_class(spec.algorithm)
            continuous = isinstance(action_space, gym.spaces.Box)
            if continuous and not cls.continuous:
                raise ConfigError(f"{path}.algorithm", f"{cls.name} does not support continuous (Box) actions, "
                                  f"and {env_name} has {action_space}")
            if not continuous and not cls.discrete:
                raise ConfigError(f"{path}.algorithm", f"{cls.name} supports only continuous (Box) actions, and "
                                  f"{env_name} has {action_space}; use ppo or a2c")
            ids = sorted(i for g in groups for i in self.groups[g])
            global_critic = spec.model.critic_input == "global"
            global_size = self.global_state_size if global_critic else 0
            obs_size = int(np.prod(obs_space.shape))
            try:
                algorithm = cls(spec, obs_size, action_space, global_size, self.device,
                                self.config.mixed_precision == "bf16")
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(path, str(err.args[0] if err.args else err)) from None
            agents = agent_selector(ids, self.device)
            storage = None
            if cls.trainable:
                if cls.name == "ppo" and spec.ppo.num_minibatches > self.batch_env_steps * len(ids):
                    raise ConfigError(f"{path}.ppo.num_minibatches", f"{spec.ppo.num_minibatches} minibatches "
                                      f"do not fit a batch of {self.batch_env_steps * len(ids)} samples")
                assert self.env_rollout is not None
                storage = RolloutStorage(self.env_rollout, agents, algorithm.action_size,
                                         algorithm.stored_action_dtype, on_policy=cls.on_policy)
            policies.append(Policy(name, groups, ids, agents, algorithm, storage, global_critic))
        return policies

    # ----------------------------------------------------------------------------------------------
    # rollout

    @property
    def done(self) -> bool:
        """True once ``total_env_steps`` have been consumed."""
        return self.iteration >= self.num_iterations

    @property
    def uses_cuda_graph(self) -> bool:
        """True once rollout steps replay a captured CUDA graph."""
        return self._graph is not None

    def global_state(self, obs: torch.Tensor) -> torch.Tensor:
        """The env's global state [E, G] for ``obs`` [E, A, D] (for centralised critics)."""
        return self._global_state_fn(obs)

    def act(self, deterministic: bool = False) -> None:
        """Write every policy's actions for the current observations into ``env.actions`` (for evaluation
        and rendering: nothing is stored, and no warm-up exploration is used)."""
        obs = self.env.obs
        global_state = self.global_state(obs) if self._needs_global else None
        with torch.no_grad():
            for policy in self.policies:
                self._decide(policy, obs, global_state, deterministic, explore=False)

    def _decide(self, policy: Policy, obs: torch.Tensor, global_state: torch.Tensor | None,
                deterministic: bool = False, explore: bool = True) -> Act:
        """``policy`` acts for its agents (within the env's action mask, if any); the actions go into
        ``env.actions``. ``explore``: the algorithm's warm-up exploration, for training rollouts only."""
        mask = self.env.action_mask
        act = policy.algorithm.act(policy.own_rows(obs), global_state if policy.global_critic else None,
                                   deterministic, None if mask is None else policy.own_rows(mask), explore)
        policy.put_actions(self.env.actions, act.env_actions)
        return act

    def _act_and_store(self, policy: Policy, obs: torch.Tensor, global_state: torch.Tensor | None) -> None:
        """One policy's part of a rollout step: act for its agents, write their actions, store its fields."""
        act = self._decide(policy, obs, global_state)
        if policy.storage is not None:
            fields = {"actions": act.actions}
            if policy.storage.on_policy:
                fields.update(logprobs=act.logprobs, values=act.values)
            policy.storage.write(self._step_index, **fields)

    def _step(self) -> None:
        """One rollout step of every env; writes at ``self._step_index`` and advances it (graph-safe)."""
        env, t, stored = self.env, self._step_index, self.env_rollout
        obs = env.obs
        global_state = self.global_state(obs) if self._needs_global else None
        if stored is not None:
            fields = {"obs": obs}
            if stored.global_state is not None:
                fields["global_state"] = global_state
            if stored.action_mask is not None:
                fields["action_mask"] = env.action_mask
            stored.write(t, **fields)
        if self._policy_streams:
            # The policies' forward passes are independent chains of small kernels: on streams of their own
            # they overlap (a CUDA graph captures the fork and the join). Every tensor that crosses streams
            # is allocated before the fork and held until after the join.
            main = torch.cuda.current_stream(self.device)
            for policy, stream in zip(self.policies, self._policy_streams, strict=True):
                stream.wait_stream(main)
                with torch.cuda.stream(stream):
                    self._act_and_store(policy, obs, global_state)
            for stream in self._policy_streams:
                main.wait_stream(stream)
        else:
            for policy in self.policies:
                self._act_and_store(policy, obs, global_state)

        _, rewards, terminated, truncated, info = env.step()

        if stored is not None:
            final_obs = info["final_obs"]
            stored.write(t, rewards=rewards, terminated=terminated, truncated=truncated, final_obs=final_obs)
            if stored.final_global_state is not None:
                stored.write(t, final_global_state=self.global_state(final_obs))
        t += 1

    def rollout(self) -> None:
        """Collect ``rollout_length`` steps of every env into the policies' storage."""
        self._step_index.zero_()
        with torch.no_grad():
            remaining = self.num_steps
            if self._use_graph and self._graph is None:
                remaining -= self._capture_graph()
            for _ in range(remaining):
                if self._graph is not None:
                    self._graph.replay()
                else:
                    self._step()
            stored = self.env_rollout
            if stored is not None:
                stored.last_obs.copy_(self.env.obs)
                if stored.last_global_state is not None:
                    stored.last_global_state.copy_(self.global_state(self.env.obs))

    def _capture_graph(self) -> int:
        """Capture one rollout step in a CUDA graph; returns the eager warm-up steps it took.

        The warm-up steps (lazy initialisation must happen before a capture) are real steps of the
        rollout; the captured step is recorded, not run. If the capture fails, the run goes on eagerly.
        """
        warmup = min(_GRAPH_WARMUP_STEPS, self.num_steps)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._step()
        except RuntimeError as err:
            log.warning("CUDA graph capture of the rollout step failed (%s); continuing eagerly", err)
            self._use_graph = False
            return warmup
        self._graph = graph
        return warmup

    # ----------------------------------------------------------------------------------------------
    # update and the iteration

    def update(self) -> dict[str, torch.Tensor | float]:
        """One update of every trainable policy from the last rollout; returns ``losses/...`` metrics."""
        progress = self.iteration / self.num_iterations
        metrics: dict[str, torch.Tensor | float] = {}
        for policy in self.policies:
            if policy.storage is None:
                continue
            for key, value in policy.algorithm.update(policy.storage, progress).items():
                metrics[f"losses/{policy.name}/{metric_name(key)}"] = value
            policy.algorithm.sync_acting_model()
        return metrics

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_iteration(self) -> dict[str, float]:
        """Rollout, then update; returns this iteration's metrics as host floats (one device sync)."""
        start = time.perf_counter()
        self.rollout()
        self._sync()
        rolled = time.perf_counter()
        losses = self.update()
        self._sync()
        end = time.perf_counter()
        self.iteration += 1
        self.env_steps += self.batch_env_steps

        # one device -> host transfer for the whole iteration
        totals = self.env.episode_totals(clear=True)
        group_returns = totals["return"] @ self._group_weights
        stats = [totals["episodes"].view(1), totals["length"].view(1), group_returns, totals["metrics"]]
        losses_1d = [torch.as_tensor(v, dtype=torch.float32, device=self.device).reshape(1) for v in losses.values()]
        host = torch.cat([*stats, *losses_1d]).tolist()
        count = len(host) - len(losses_1d)

        metrics: dict[str, float] = {}
        episodes = host[0]
        metrics["charts/episodes"] = episodes
        if episodes > 0:
            for group, total in zip(self.groups, host[2: 2 + len(self.groups)], strict=True):
                metrics[f"charts/episodic_return/{group}"] = total / episodes
            metrics["charts/episodic_length"] = host[1] / episodes
            for name, total in zip(self.metric_names, host[2 + len(self.groups): count], strict=True):
                metrics[f"env/{name}"] = total / episodes
        metrics["charts/SPS"] = self.batch_env_steps / (end - start)
        metrics["time/rollout_s"] = rolled - start
        metrics["time/update_s"] = end - rolled
        metrics.update(zip(losses, host[count:], strict=True))
        return metrics

    # ----------------------------------------------------------------------------------------------
    # state, for checkpoints

    def model_tensors(self) -> dict[str, torch.Tensor]:
        """Every policy's networks as one flat dict ``<policy>/<module>.<parameter>`` (for safetensors)."""
        tensors = {}
        for policy in self.policies:
            for module_name, module in policy.algorithm.modules().items():
                for key, value in module.state_dict().items():
                    tensors[f"{policy.name}/{module_name}.{key}"] = value.detach()
        return tensors

    def load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`model_tensors` returned (in place, so captured graphs stay valid)."""
        for policy in self.policies:
            for module_name, module in policy.algorithm.modules().items():
                prefix = f"{policy.name}/{module_name}."
                state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                if not state:
                    raise KeyError(f"the checkpoint has no weights for policy {policy.name!r} ({module_name}); "
                                   f"it holds: {sorted({k.split('/')[0] for k in tensors})}")
                module.load_state_dict(state)
            policy.algorithm.sync_acting_model()

    def state_dict(self) -> dict[str, Any]:
        """Everything but the networks that an exact resume needs: optimisers, counters, the env's full
        state (in-flight episode returns included) and every random generator's state."""
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "policies": {p.name: p.algorithm.state_dict() for p in self.policies},
            "env": {"store": self.env.store.state_dict(), "seed": self.env.seed},
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        for policy in self.policies:
            policy.algorithm.load_state_dict(state["policies"][policy.name])
        if int(state["env"]["seed"]) != self.env.seed:
            self.env.reset(seed=int(state["env"]["seed"]))
        self.env.store.load_state_dict(state["env"]["store"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
