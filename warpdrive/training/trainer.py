"""The training loop: rollouts that never leave the device, one policy per agent group, then updates.

Per rollout step, for each policy (``for policy in policies``, BenchMARL-style): gather its agents'
observations (``index_select`` on the agent axis), run the policy, sample on the device, write the actions
into the env's action buffer at those agents' ids; then one ``env.step()`` for every env at once; then
store the step in each policy's :class:`~warpdrive.training.storage.RolloutStorage` at a step index held
in a device tensor. Episodic returns and lengths are accumulated on the device with masks (no host sync
per step) and read once per iteration.

On CUDA, one rollout step (policy forward passes, sampling, the env kernel, storage writes, statistics)
is captured in a ``torch.cuda.CUDAGraph`` and replayed ``T`` times per rollout: the env's Numba kernels
launch on torch's current stream, so they are part of the graph. Sampling uses torch's default CUDA
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
from warpdrive.training.config import SHARED, TrainConfig
from warpdrive.training.storage import RolloutStorage
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
    agent_ids: torch.Tensor
    """[A_p] int64 agent ids on the device, sorted."""
    algorithm: Algorithm
    storage: RolloutStorage | None
    """``None`` for fixed (non-learning) policies."""
    global_critic: bool


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

        # episode statistics, accumulated on the device: [episodes, length sum, return sum per group,
        # env metric sums]; a group's return is the mean over its agents of their episode sums
        e, a = self.num_envs, self.env.num_agents
        self.metric_names = self.env.metric_names()
        self._group_weights = torch.zeros(a, len(self.groups), device=self.device)
        for column, ids in enumerate(self.groups.values()):
            self._group_weights[ids, column] = 1.0 / len(ids)
        self._episode_return = torch.zeros(e, a, device=self.device)
        self._stats = torch.zeros(2 + len(self.groups) + len(self.metric_names), device=self.device)
        self._step_index = torch.zeros(1, dtype=torch.int64, device=self.device)

        self._use_graph = config.cuda_graph and self.device.type == "cuda"
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
            storage = None
            if cls.trainable:
                if cls.name == "ppo" and spec.ppo.num_minibatches > self.batch_env_steps * len(ids):
                    raise ConfigError(f"{path}.ppo.num_minibatches", f"{spec.ppo.num_minibatches} minibatches "
                                      f"do not fit a batch of {self.batch_env_steps * len(ids)} samples")
                storage = RolloutStorage(self.num_steps, self.num_envs, len(ids), obs_size, algorithm.action_size,
                                         algorithm.stored_action_dtype, self.device, on_policy=cls.on_policy,
                                         global_state_size=global_size)
            agent_ids = torch.tensor(ids, dtype=torch.int64, device=self.device)
            policies.append(Policy(name, groups, agent_ids, algorithm, storage, global_critic))
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
        and rendering; nothing is stored)."""
        obs = self.env.obs
        global_state = self.global_state(obs) if self._needs_global else None
        with torch.no_grad():
            for policy in self.policies:
                act = policy.algorithm.act(obs.index_select(1, policy.agent_ids),
                                           global_state if policy.global_critic else None, deterministic)
                self.env.actions.index_copy_(1, policy.agent_ids, act.env_actions)

    def _step(self) -> None:
        """One rollout step of every env; writes at ``self._step_index`` and advances it (graph-safe)."""
        env, t = self.env, self._step_index
        obs = env.obs
        global_state = self.global_state(obs) if self._needs_global else None
        for policy in self.policies:
            obs_p = obs.index_select(1, policy.agent_ids)
            act = policy.algorithm.act(obs_p, global_state if policy.global_critic else None)
            env.actions.index_copy_(1, policy.agent_ids, act.env_actions)
            if policy.storage is not None:
                fields = {"obs": obs_p, "actions": act.actions}
                if policy.storage.on_policy:
                    fields.update(logprobs=act.logprobs, values=act.values)
                if policy.global_critic:
                    fields["global_state"] = global_state
                policy.storage.write(t, **fields)

        next_obs, rewards, terminated, truncated, info = env.step()

        done, final_obs = info["done"], info["final_obs"]
        final_global = self.global_state(final_obs) if self._needs_global else None
        for policy in self.policies:
            if policy.storage is None:
                continue
            ids = policy.agent_ids
            fields = {"rewards": rewards.index_select(1, ids), "terminated": terminated, "truncated": truncated}
            final_obs_p = final_obs.index_select(1, ids)
            if policy.storage.on_policy:
                # V(final_obs) for every env: needed where truncated, and cheaper than a data-dependent branch
                fields["final_values"] = policy.algorithm.value(final_obs_p,
                                                                final_global if policy.global_critic else None)
            else:
                fields["next_obs"] = torch.where(done[:, None, None], final_obs_p, next_obs.index_select(1, ids))
            policy.storage.write(t, **fields)

        finished = done.float()
        self._episode_return += rewards
        self._stats += torch.cat([
            finished.sum().view(1),
            (env.store["final_length"].float() * finished).sum().view(1),
            ((self._episode_return @ self._group_weights) * finished[:, None]).sum(0),
            (env.store["final_metrics"] * finished[:, None]).sum(0),
        ])
        self._episode_return *= (1.0 - finished)[:, None]
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
            obs = self.env.obs
            global_state = self.global_state(obs) if self._needs_global else None
            for policy in self.policies:
                if policy.storage is not None:
                    policy.storage.last_obs.copy_(obs.index_select(1, policy.agent_ids))
                    if policy.global_critic:
                        policy.storage.last_global_state.copy_(global_state)

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
        count = self._stats.numel()
        losses_1d = [torch.as_tensor(v, dtype=torch.float32, device=self.device).reshape(1) for v in losses.values()]
        host = torch.cat([self._stats, *losses_1d]).tolist()
        stats = host[:count]
        self._stats.zero_()

        metrics: dict[str, float] = {}
        episodes = stats[0]
        metrics["charts/episodes"] = episodes
        if episodes > 0:
            group_returns = stats[2: 2 + len(self.groups)]
            for group, total in zip(self.groups, group_returns, strict=True):
                metrics[f"charts/episodic_return/{group}"] = total / episodes
            metrics["charts/episodic_length"] = stats[1] / episodes
            for name, total in zip(self.metric_names, stats[2 + len(self.groups):], strict=True):
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

    def state_dict(self) -> dict[str, Any]:
        """Everything but the networks that an exact resume needs: optimisers, counters, the env's full
        state, in-flight episode returns and every random generator's state."""
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
            "episode_return": self._episode_return.clone(),
            "env": {"store": self.env.store.state_dict(), "seed": self.env.seed},
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        for policy in self.policies:
            policy.algorithm.load_state_dict(state["policies"][policy.name])
        self._episode_return.copy_(state["episode_return"])
        if int(state["env"]["seed"]) != self.env.seed:
            self.env.reset(seed=int(state["env"]["seed"]))
        self.env.store.load_state_dict(state["env"]["store"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
