"""The training loop: rollouts that never leave the device, one policy per agent group, then updates.

Each iteration collects ``rollout_length`` steps of every env replica
(:class:`~warpdrive.training.rollout.RolloutCollector`: CUDA graphs, per-policy streams), updates every
trainable policy from them, and reduces the iteration's metrics with one device -> host transfer
(:class:`~warpdrive.training.metrics.IterationMetrics`, which lists the metric names). The policies and
their algorithms are assembled from the config by :func:`~warpdrive.training.policies.build_policies`.
:func:`~warpdrive.training.run.train` adds logging and checkpoints around :meth:`Trainer.train_iteration`.
Given :class:`~warpdrive.training.distributed.Ranks` (a run under torchrun), the trainer is one of several
processes, each with ``env.num_envs`` replicas of its own; see :mod:`~warpdrive.training.distributed`.
"""

from __future__ import annotations

import gc
import math
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from warpdrive.core.actions import InvalidActionError
from warpdrive.core.compile import LaunchShape
from warpdrive.core.device import cuda_available
from warpdrive.core.env import Env
from warpdrive.core.typed import ConfigError
from warpdrive.envs import make
from warpdrive.training.checkpoint import restore_rng_state, rng_state
from warpdrive.training.config import TrainConfig
from warpdrive.training.guard import check_finite, finite_flags
from warpdrive.training.metrics import IterationMetrics, metric_name
from warpdrive.training.policies import build_policies, global_state_size, load_policy_tensors, policy_tensors
from warpdrive.training.rollout import RolloutCollector

if TYPE_CHECKING:
    from warpdrive.training.distributed import Ranks

__all__ = ["Trainer", "make_env", "resolve_device", "seed_everything"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when a GPU is usable, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda" and not cuda_available():
        raise ConfigError("device", f"{name!r} asked for, but no CUDA GPU is usable; use device=cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_env(config: TrainConfig, device: torch.device, seed: int, validate: bool | None = None) -> Env:
    """The env of ``config.env``; its errors (unknown env, bad parameters, too many replicas for the memory)
    raised as :class:`ConfigError` naming the key path."""
    spec = config.env
    launch = None
    if spec.launch is not None:
        if len(spec.launch) != 2 or min(spec.launch) < 1:
            raise ConfigError("env.launch", f"expected [threads per env, envs per block], each >= 1, got {spec.launch}")
        launch = LaunchShape(*spec.launch)
    try:
        return make(spec.name, num_envs=spec.num_envs, device=device, seed=seed, start=spec.start,
                    validate=validate, launch=launch, **spec.kwargs)
    except KeyError as err:
        raise ConfigError("env.name", str(err.args[0])) from None
    except ConfigError as err:  # a parameter of the env's Config: its key path under env.kwargs
        raise err.under("env.kwargs") from None
    except (TypeError, ValueError) as err:
        raise ConfigError("env", str(err)) from None
    except MemoryError as err:  # the env's own check, before it allocates
        raise ConfigError("env.num_envs", f"{err}{_with_rollout_storage(config, device)}") from None


def _with_rollout_storage(config: TrainConfig, device: torch.device) -> str:
    """For the env's memory check, which counts only the env's arrays: how many replicas a training run of
    ``config`` fits with its rollout storage, networks and replay buffers too (estimated from their shapes by
    :func:`~warpdrive.training.tune.estimate_memory`, nothing allocated); "" where that cannot be estimated."""
    if config.env.num_envs < 2:  # not even one: nothing to add (and the estimate builds a one-replica env)
        return ""
    from warpdrive.training.tune import available_memory, estimate_memory, format_bytes

    try:
        estimate = estimate_memory(config)
        free, _ = available_memory(device)
    except Exception:  # the estimate is a courtesy: it must never replace the error it explains
        return ""
    return (f"; counting a training run's rollout storage (rollout_length={config.rollout_length}: "
            f"{format_bytes(estimate.per_env)} per env with the env's arrays), networks and replay buffers too, "
            f"at most {estimate.num_envs(free)} envs fit")


class Trainer:
    """Trains the policies of ``config`` in its env; call :meth:`train_iteration` until :attr:`done`.

    Construction seeds every generator, builds the env (all replicas reset by one kernel launch), the
    policies and their storage; it raises :class:`ConfigError` naming the key path for configs that do
    not fit the env (a group without a policy, an algorithm that does not support the action space, ...).

    Args:
        ranks: this process's place in a multi-process run (from :func:`~warpdrive.training.distributed.setup`):
            its device and seed come from its rank, rank 0's networks are broadcast to the others, gradients
            and metrics are averaged over the ranks, and an iteration counts every rank's env-steps.
    """

    def __init__(self, config: TrainConfig, ranks: Ranks | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer needs a TrainConfig (from load_config(...)), got {type(config).__name__}")
        self.config = config
        self.ranks = ranks
        self.device = resolve_device(config.device) if ranks is None else ranks.device
        seed = config.seed if ranks is None else ranks.seed(config.seed)
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        if self.device.type == "cuda" and config.mixed_precision in ("tf32", "bf16"):
            torch.backends.cuda.matmul.allow_tf32 = True  # process-wide, like torch.set_num_threads
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(seed)
        self.env = make_env(config, self.device, seed)
        self.num_envs = config.env.num_envs
        self.num_steps = config.rollout_length
        self.world_size = 1 if ranks is None else ranks.world_size
        self.batch_env_steps = self.num_envs * self.num_steps * self.world_size
        self.num_iterations = max(1, math.ceil(config.total_env_steps / self.batch_env_steps))
        self.iteration = 0
        self.env_steps = 0

        self.env.reset(seed=seed)
        self.groups = self.env.groups()
        self.global_state_size = global_state_size(self.env)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        """This run's random stream for acting and learning (the networks' initial weights come from torch's
        seeded default generator): a run's own, so that what else the process draws (the other runs of
        ``--seeds``, a user's code) does not change what the run draws."""
        self.policies = build_policies(config, self.env, self.global_state_size, self.generator)
        if ranks is not None:
            ranks.broadcast_networks(self.policies)
            for policy in self.policies:
                policy.algorithm.ranks = ranks
        self.collector = RolloutCollector(self.env, self.policies, self.num_steps, self.global_state_size,
                                          cuda_graph=config.cuda_graph)
        self.metrics = IterationMetrics(self.env, ranks)
        self.metric_names = self.metrics.metric_names
        self.env.episode_totals(clear=True)  # count only episodes that finish during training

    def close(self) -> None:
        """Release the env, the policies, the captured graphs and the storage now (their device memory goes back
        to the process); the trainer cannot be used after (again: a no-op). :func:`~warpdrive.training.run.train`
        closes its trainer when the run ends."""
        if not vars(self):
            return
        vars(self).clear()
        gc.collect()  # the state's reference cycles (bound methods of captured calls) go now too

    @property
    def is_main(self) -> bool:
        """True in a one-process run and on rank 0: the process that logs and writes checkpoints."""
        return self.ranks is None or self.ranks.is_main

    @property
    def done(self) -> bool:
        """True once ``total_env_steps`` have been consumed."""
        return self.iteration >= self.num_iterations

    @property
    def uses_cuda_graph(self) -> bool:
        """True once rollout steps replay a captured CUDA graph."""
        return self.collector.uses_cuda_graph

    def train_iteration(self) -> dict[str, float]:
        """Rollout, then update; returns this iteration's metrics as host floats (one device sync).

        Raises:
            NonFiniteError: with ``guard_nonfinite`` on, when a policy's observations, rewards, losses,
                gradient norm or weights were not all finite (checked in the same device sync).
            InvalidActionError: when the env's step kernel found an invalid action (``Env.check_actions``).
        """
        start = time.perf_counter()
        try:
            self.rollout()
        except InvalidActionError:  # validate mode: the env refused an action mid-rollout
            if self.config.guard_nonfinite:  # a non-finite policy is the likelier cause: name it first
                finite = {name: bool(flag) for name, flag in finite_flags(self.policies).items()}
                check_finite(self.iteration + 1, self.policies, finite, {})
            raise
        self._sync()
        rolled = time.perf_counter()
        losses = self.update()
        self._sync()
        updated = time.perf_counter()
        self.iteration += 1
        self.env_steps += self.batch_env_steps
        guard = self.config.guard_nonfinite
        # (flags are True where all is well; they travel to the host with the metrics)
        flags = {"env/actions_valid": ~self.env.action_faults_found(), **(finite_flags(self.policies) if guard else {})}
        metrics, host_flags = self.metrics.collect(losses, self.batch_env_steps, rolled - start, updated - rolled,
                                                   flags)
        if guard:  # first: a non-finite policy is the cause of NaN actions
            check_finite(self.iteration, self.policies, host_flags, metrics)
        if not host_flags["env/actions_valid"]:
            self.env.raise_action_faults()
            raise InvalidActionError("an invalid action was found by the step kernel of another process; its error "
                                     "names it")
        return metrics

    def rollout(self) -> None:
        """Collect ``rollout_length`` steps of every env into the policies' storage."""
        self.collector.collect()

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

    def act(self, deterministic: bool = False) -> None:
        """Write every policy's actions for the current observations into ``env.actions`` (for evaluation
        and rendering: nothing is stored, and no warm-up exploration is used)."""
        self.collector.act(deterministic)

    def _sync(self) -> None:
        """Wait for this run's work (on this thread's current stream, which its other streams join), not for
        the device: runs sharing the GPU (several seeds at once) have streams of their own."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    # ----------------------------------------------------------------------------------------------
    # state, for checkpoints

    def model_tensors(self) -> dict[str, torch.Tensor]:
        """Every policy's networks as one flat dict ``<policy>/<module>.<parameter>`` (for safetensors)."""
        return policy_tensors(self.policies)

    def load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`model_tensors` returned (in place, so captured graphs stay valid)."""
        load_policy_tensors(self.policies, tensors)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the networks that an exact resume needs: optimisers, counters, the env's full
        state (in-flight episode returns included) and every random generator's state.

        In a multi-process run, every rank must call it: what is a rank's own (its policies' states, replay
        buffers included; its env; its random generators) is gathered at rank 0 under ``ranks``, one entry
        per rank (with the digest of the rank's networks, checked equal), and ``world_size``; the other
        ranks get ``ranks: None``.
        """
        counters = {"iteration": self.iteration, "env_steps": self.env_steps}
        own = {
            "policies": {p.name: p.algorithm.state_dict() for p in self.policies},
            "env": {"store": self.env.store.state_dict(), "seed": self.env.seed},
            "rng": {**rng_state(), "run": self.generator.get_state()},
        }
        if self.ranks is None:
            return {**counters, **own}
        return {**counters, "world_size": self.world_size,
                "ranks": self.ranks.gather_states(own, self.model_tensors())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, from a run with as many processes as this one.

        Raises:
            ConfigError: when the state was saved by a run with another number of processes (each rank's
                env replicas and random streams are its own, so they cannot be shared out anew).
        """
        saved = int(state.get("world_size", 1))
        if saved != self.world_size:
            raise ConfigError("--resume", f"the checkpoint was saved by a run of {saved} process(es) and this run has "
                              f"{self.world_size}: resume it with the same number "
                              f"({'torchrun --nproc-per-node=' + str(saved) if saved > 1 else 'without torchrun'}; "
                              "each process's env replicas and random streams are in the checkpoint)")
        own = state if self.ranks is None else state["ranks"][self.ranks.rank]
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        for policy in self.policies:
            policy.algorithm.load_state_dict(own["policies"][policy.name])
        if int(own["env"]["seed"]) != self.env.seed:
            self.env.reset(seed=int(own["env"]["seed"]))
        self.env.store.load_state_dict(own["env"]["store"])
        restore_rng_state(own["rng"])
        if "run" in own["rng"]:  # (checkpoints from before 2026-12-01 drew from torch's default generator)
            self.generator.set_state(own["rng"]["run"])

