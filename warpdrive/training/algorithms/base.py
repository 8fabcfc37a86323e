"""What every algorithm shares: acting through its model, the optimiser and its schedule, mixed precision;
and the registry of algorithms by name.

An algorithm owns one policy: its model, optimiser(s) and update rule. The trainer calls
:meth:`Algorithm.act` once per rollout step (under ``torch.no_grad``) and :meth:`Algorithm.update` once per
iteration; ``update`` returns a dict whose ``loss_*`` entries are the optimised losses and whose other
entries are logged as they are.

An algorithm is one module: its ``Config`` dataclass, its class decorated with :func:`register_algorithm`,
and the class attributes that declare what it supports (action spaces, on- or off-policy, a global
critic) and :meth:`Algorithm.check_batch` for its batch rules. The training config then takes
``algorithm: <name>`` and a ``<name>:`` section of that ``Config`` in every policy.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from warpdrive.core.typed import bounded
from warpdrive.training.graphs import GraphedCall
from warpdrive.training.models import ActorCritic, ModelSpec, build_model, critic_input
from warpdrive.training.recurrent import RECURRENT_MODEL, RecurrentMemory, SequenceBatch, recurrent_next_values
from warpdrive.training.returns import next_state_values
from warpdrive.training.schedules import Schedule
from warpdrive.training.storage import FlatBatch

if TYPE_CHECKING:
    from warpdrive.training.distributed import Ranks
    from warpdrive.training.storage import RolloutStorage

__all__ = [
    "ALGORITHMS",
    "Act",
    "ActorCriticAlgorithm",
    "Algorithm",
    "OptimizerSpec",
    "PolicySettings",
    "algorithm_class",
    "register_algorithm",
]


@dataclass
class OptimizerSpec:
    """Adam and its learning-rate schedule."""

    lr: float = bounded(3e-4, gt=0.0, le=1.0)
    """Initial learning rate (Adam's steps are about this size per weight: above 1 is never sensible)."""
    lr_schedule: Schedule = field(default_factory=Schedule)
    """How the rate changes over training (``{kind: linear}`` anneals it to 0, like CleanRL)."""
    eps: float = bounded(1e-5, gt=0.0, le=1.0)
    """Adam's epsilon."""


class PolicySettings(Protocol):
    """What an algorithm reads of its policy's config (a :class:`~warpdrive.training.config.PolicySpec`)."""

    algorithm: str
    model: ModelSpec
    optimizer: OptimizerSpec

    @property
    def algorithm_config(self) -> Any:
        """The chosen algorithm's own section (an instance of its ``Config``), or ``None``."""


@dataclass
class Act:
    """One rollout step's decisions for a policy's agents, [E, A, ...]."""

    actions: torch.Tensor
    """[E, A, H] as sampled (stored for the update)."""
    env_actions: torch.Tensor
    """[E, A, H] what the env receives: clipped to the Box bounds for continuous spaces; for discrete ones
    the indices as sampled (converted to the env's dtype when written into its action buffer)."""
    logprobs: torch.Tensor | None = None
    """[E, A] log-probability of ``actions`` (stochastic policies)."""
    values: torch.Tensor | None = None
    """[E, A] the critic's ``V(obs)`` (actor-critic policies)."""


class Algorithm:
    """Base class. Subclasses set the class attributes and implement :meth:`act` and :meth:`update`.

    Args:
        spec: the policy's config; the algorithm reads its own section as ``spec.algorithm_config``.
        obs_size: D, one agent's observation size.
        action_space: one agent's action space.
        global_state_size: G when the critic is global, else 0.
        device: where the model lives.
        mixed_precision: run forward passes under bf16 autocast (CUDA only).
        num_agents: A_p, the agents this policy acts for (a centralised critic over them sizes its input by it).
        cuda_graph: capture the update in a CUDA graph where the algorithm's update is graph-safe (CUDA only).
    """

    name: ClassVar[str]
    """What configs call it (``algorithm: <name>``); also the name of its section in a policy's config."""
    Config: ClassVar[type | None] = None
    """Its hyperparameters: a dataclass read from the policy's ``<name>:`` section (``None``: no section)."""
    on_policy: ClassVar[bool] = True
    """On-policy algorithms learn from the last rollout (its log-probabilities and values are stored);
    off-policy ones from a replay buffer of their own."""
    discrete: ClassVar[bool] = True
    """Supports Discrete and MultiDiscrete action spaces."""
    continuous: ClassVar[bool] = True
    """Supports Box action spaces."""
    global_critic: ClassVar[bool] = True
    """Supports ``model.critic_input: global`` (a centralised critic)."""
    trainable: ClassVar[bool] = True
    """False for fixed policies: no rollout storage, no update."""
    recurrent: ClassVar[bool] = False
    """Supports recurrent models (``model.recurrent: gru`` or ``lstm``; :mod:`~warpdrive.training.recurrent`)."""
    centralised: ClassVar[Literal["no", "optional", "joint", "mixer"]] = "no"
    """What its learning sees beyond one agent: ``no``; ``optional`` (with ``model.critic_input: global`` the
    critic also reads the env's global state: MAPPO); ``joint`` (always: each agent's critic reads every agent
    of the policy, observations and actions); ``mixer`` (the agents' values are mixed by a network of the
    global state, the env's with ``model.critic_input: global``, else the agents' observations joined)."""
    default_model: ClassVar[str | None] = None

    @classmethod
    def supports_action_space(cls, action_space: gym.spaces.Space) -> bool:
        """Whether it can act in ``action_space`` (one agent's)."""
        return cls.continuous if isinstance(action_space, gym.spaces.Box) else cls.discrete

    @classmethod
    def check_batch(cls, config: Any, samples: int, path: str) -> None:
        """Its batch rules: raise :class:`~warpdrive.core.typed.ConfigError` (under ``path``, its section's
        key path) if an update from ``samples`` samples (T * E * the policy's agents) does not suit ``config``."""

    def __init__(self, spec: PolicySettings, obs_size: int, action_space: gym.spaces.Space, global_state_size: int,
                 device: torch.device, mixed_precision: bool = False, num_agents: int = 1,
                 cuda_graph: bool = False, generator: torch.Generator | None = None) -> None:
        if spec.algorithm != self.name:
            raise ValueError(f"{type(self).__name__} was given the config of a {spec.algorithm!r} policy")
        self.spec = spec
        self.config: Any = spec.algorithm_config
        self.action_space = action_space
        self.obs_size = obs_size
        self.num_agents = num_agents
        self.cuda_graph = cuda_graph and device.type == "cuda"
        """Capture the update in a CUDA graph where the algorithm allows it (read at each update until one
        is captured)."""
        self.device = device
        self.generator = generator
        """The run's random stream on ``device`` for every draw while acting and learning (``None``: torch's
        default generator); a run's own, so that runs sharing a process draw independently of each other."""
        self.mixed_precision = mixed_precision and device.type == "cuda"
        self.continuous_actions = isinstance(action_space, gym.spaces.Box)
        if isinstance(action_space, gym.spaces.Box):
            self.action_size = int(np.prod(action_space.shape))
            self.env_action_dtype = torch.float32
            self.low = torch.as_tensor(np.asarray(action_space.low, np.float32).reshape(-1), device=device)
            self.high = torch.as_tensor(np.asarray(action_space.high, np.float32).reshape(-1), device=device)
        else:
            assert action_space.shape is not None  # Discrete and MultiDiscrete spaces have one
            self.action_size = 1 if isinstance(action_space, gym.spaces.Discrete) else int(np.prod(action_space.shape))
            self.env_action_dtype = torch.int32
        self.model: nn.Module | None = None
        if self.default_model is not None:
            critic_size = global_state_size + obs_size
            default = RECURRENT_MODEL if spec.model.recurrent != "none" else self.default_model
            self.model = build_model(spec.model.name or default, obs_size, action_space, spec.model,
                                     critic_size).to(device)
        # Rollouts act through `acting_model`: the model itself, or with bf16 mixed precision a bf16 copy of
        # it, refreshed after every update (sync_acting_model). Autocast would instead cast every weight
        # again at every rollout step: two dozen extra kernels per step for two policies.
        self.acting_model = self.model
        self.acting_dtype = torch.float32
        if self.mixed_precision and self.model is not None:
            self.acting_model = copy.deepcopy(self.model).to(torch.bfloat16).requires_grad_(False)
            self.acting_dtype = torch.bfloat16
        self.memory: RecurrentMemory | None = None
        """A recurrent model's state while acting, [E, A_p, S] (``None`` for feed-forward models)."""
        if getattr(self.model, "recurrent", False):
            self.memory = RecurrentMemory(cast(Any, self.model).state_size, device)
            if self.acting_model is not self.model:
                cast(Any, self.acting_model).float32_cores()
        elif spec.model.recurrent != "none":
            raise ValueError(f"model {spec.model.name or self.default_model!r} has no recurrent core, which "
                             f"model.recurrent: {spec.model.recurrent} asks for")
        self.ranks: Ranks | None = None
        """Set by the trainer in a multi-process run (torchrun): :meth:`backward` then averages gradients
        across the ranks."""

    # -- what subclasses implement ------------------------------------------------------------------

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        """Decide actions for ``obs`` [E, A, D] (``global_state`` [E, G] for a global critic).

        ``deterministic``: the policy's most likely action, without exploration (evaluation, rendering).
        ``mask``: bool [E, A, n_1 + ... + n_H], True where an action is allowed (envs that mask actions).
        ``explore``: False when acting for evaluation or rendering: no warm-up exploration (DDPG's uniformly
        random actions before learning starts).
        Must not sync with the host: rollouts may be captured in a CUDA graph.
        """
        raise NotImplementedError

    def update(self, storage: RolloutStorage, progress: float) -> dict[str, torch.Tensor | float]:
        """Learn from the rollout in ``storage``; ``progress`` in [0, 1] drives the schedules."""
        raise NotImplementedError

    # -- shared helpers ---------------------------------------------------------------------------

    @property
    def stored_action_dtype(self) -> torch.dtype:
        return torch.float32 if self.continuous_actions else torch.int64

    def to_env_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions as the env takes them: floats clipped to the Box bounds; indices as they are."""
        if self.continuous_actions:
            return torch.maximum(torch.minimum(actions, self.high), self.low)
        return actions

    def backward(self, loss: torch.Tensor, parameters: Any) -> None:
        """``loss.backward()``; in a multi-process run, then the gradients of ``parameters`` averaged across
        the ranks (before any clipping, so that every rank steps the same gradient)."""
        loss.backward()
        if self.ranks is not None:
            self.ranks.average_gradients(parameters)

    def sync_acting_model(self) -> None:
        """Copy the model's weights into the acting copy (after an update, or after loading weights)."""
        if self.acting_model is not self.model:
            assert self.acting_model is not None and self.model is not None  # a copy exists only of a model
            with torch.no_grad():
                for acting, learned in zip(self.acting_model.parameters(), self.model.parameters(), strict=True):
                    acting.copy_(learned)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA when mixed precision is on (no weight cache: safe in CUDA graphs)."""
        if self.mixed_precision:
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def make_optimizer(self, parameters: Any, capturable: bool = False) -> torch.optim.Optimizer:
        """Adam as the policy's config sets it. ``capturable`` (CUDA only): the learning rate and Adam's step
        counts live in device tensors, so that an update captured in a CUDA graph follows the schedule."""
        cuda = self.device.type == "cuda"
        optimizer = torch.optim.Adam(parameters, lr=self.spec.optimizer.lr, eps=self.spec.optimizer.eps,
                                     fused=cuda)  # fused: one kernel for all parameters (the default: several each)
        if capturable and cuda:
            _make_capturable(optimizer, self.device)
        return optimizer

    def set_learning_rate(self, progress: float, *optimizers: torch.optim.Optimizer) -> float:
        """Apply the learning-rate schedule at ``progress``; returns the rate."""
        opt = self.spec.optimizer
        lr = opt.lr_schedule.value(opt.lr, progress)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)  # in place: a captured update reads this tensor
                else:
                    group["lr"] = lr
        return lr

    def modules(self) -> dict[str, nn.Module]:
        """Networks saved as safetensors in checkpoints (and all that evaluation needs)."""
        return {"model": self.model} if self.model is not None else {}

    def state_dict(self) -> dict[str, Any]:
        """Everything else a bit-exact resume needs (optimisers, counters, buffers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


#: name -> class of every registered algorithm, in registration order.
ALGORITHMS: dict[str, type[Algorithm]] = {}

AlgorithmClass = TypeVar("AlgorithmClass", bound=type[Algorithm])


def register_algorithm(cls: AlgorithmClass) -> AlgorithmClass:
    """Class decorator: make ``cls`` trainable as ``algorithm: <cls.name>``, configured by its ``Config``
    from a ``<cls.name>:`` section of the policy's config.

    Every module of :mod:`warpdrive.training.algorithms` is imported with that package, before
    :mod:`warpdrive.training.config` builds the policy config from the registry: an algorithm is one new
    module there, and nothing else.
    """
    ALGORITHMS[cls.name] = cls
    return cls


def algorithm_class(name: str) -> type[Algorithm]:
    """The algorithm registered as ``name``."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}") from None


class ActorCriticAlgorithm(Algorithm):
    """A stochastic actor with a state-value critic and one optimiser (PPO, A2C).

    Subclasses implement :meth:`learn`, graph-safe (:mod:`~warpdrive.training.graphs`). :meth:`update`
    does what needs the host (the schedules' values, the bootstrap values of truncated steps), then runs
    ``learn`` eagerly or, with ``cuda_graph`` on CUDA, as a replayed CUDA graph from the second update on.
    Both take the same steps: on CUDA the optimiser is capturable either way.
    """

    default_model = "mlp_actor_critic"
    # Built from a registered model, which offers ActorCritic's methods (custom models need not subclass it).
    model: ActorCritic
    acting_model: ActorCritic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.model is not None
        self.optimizer = self.make_optimizer(self.model.parameters(), capturable=True)
        self.ent_coef = torch.zeros((), device=self.device)
        """The entropy coefficient of the coming update (set from its schedule; read by ``learn``)."""
        self.final_values: torch.Tensor | None = None
        """[T, E, A] ``V(final_obs)`` where the rollout's episode was truncated, 0 elsewhere; refilled in
        place before each update."""
        self._storage: RolloutStorage | None = None
        self._learn = GraphedCall(self._learn_stored, self.device, enabled=self.graph_safe,
                                  what=f"the {self.name} update", generator=self.generator)

    @property
    def graph_safe(self) -> bool:
        """Whether :meth:`learn` may be captured with this config (no host decision inside it)."""
        return True

    @property
    def update_captured(self) -> bool:
        """True once updates replay a captured CUDA graph."""
        return self._learn.captured

    def update(self, storage: RolloutStorage, progress: float) -> dict[str, torch.Tensor | float]:
        c = self.config
        lr = self.set_learning_rate(progress, self.optimizer)
        ent_coef = c.ent_coef_schedule.value(c.ent_coef, progress)
        self.ent_coef.fill_(ent_coef)
        if self.memory is None:  # (a recurrent critic values final_obs from its state: next_values does it)
            with torch.no_grad():
                self.final_values = self.truncation_values(storage, out=self.final_values)
        if self._storage is None:
            self._storage = storage
        elif storage is not self._storage and self._learn.captured:
            raise ValueError("a captured update learns from the storage it was captured with; got another one")
        if not self.cuda_graph or self.ranks is not None:
            # (multi-process runs stay eager: gradients all-reduced inside a captured graph are not validated)
            self._learn.enabled = False
        metrics = dict(self._learn())
        metrics["learning_rate"] = lr
        metrics["ent_coef"] = ent_coef
        return metrics

    def _learn_stored(self) -> dict[str, torch.Tensor | float]:
        assert self._storage is not None  # set by update before the first call
        return self.learn(self._storage)

    def learn(self, storage: RolloutStorage) -> dict[str, torch.Tensor | float]:
        """The update proper: learn from ``storage``, with :attr:`final_values` and :attr:`ent_coef` set,
        returning logged values (``loss_*`` entries are the optimised losses). Graph-safe where
        :attr:`graph_safe`: no host sync, no Python decision on a device value."""
        raise NotImplementedError

    def act(self, obs: torch.Tensor, global_state: torch.Tensor | None, deterministic: bool = False,
            mask: torch.Tensor | None = None, explore: bool = True) -> Act:
        obs = obs.to(self.acting_dtype)
        if global_state is not None:
            global_state = global_state.to(self.acting_dtype)
        if self.memory is not None:  # a recurrent model steps from its state, which then holds the step's result
            dist, values = self.memory.step(self.acting_model, obs, critic_input(obs, global_state), mask)
        else:
            dist, values = self.acting_model.distribution_and_value(obs, critic_input(obs, global_state), mask)
        actions = dist.mode() if deterministic else dist.sample(self.generator)
        return Act(actions, self.to_env_actions(actions), dist.log_prob(actions), values)

    def value(self, obs: torch.Tensor, global_state: torch.Tensor | None) -> torch.Tensor:
        """``V`` [E, A] of ``obs`` [E, A, D]."""
        with self.autocast():
            return self.model.value(critic_input(obs, global_state))

    def next_values(self, storage: RolloutStorage) -> torch.Tensor:
        """Value of the state after each stored step [T, E, A]: V(final_obs) where an episode was truncated
        (:attr:`final_values`), 0 where it terminated, else the next step's value (the last step's from
        ``storage.last_obs``); for a recurrent critic, from the states of the rollout unrolled again."""
        if self.memory is not None:
            with self.autocast():
                return recurrent_next_values(cast(Any, self.model), storage)
        assert self.final_values is not None  # filled by update() before learn()
        last_values = self.value(storage.last_obs, storage.last_global_state)
        return next_state_values(storage.values, last_values, self.final_values, storage.terminated,
                                 storage.truncated)

    def truncation_values(self, storage: RolloutStorage, out: torch.Tensor | None = None) -> torch.Tensor:
        """``V(final_obs)`` [T, E, A] where the episode was truncated, 0 elsewhere (into ``out`` if given).

        Computed once per update, for the truncated (step, env) pairs only rather than for every env at
        every rollout step: a small fraction of the rows, at the price of one host sync to learn how many
        there are (which is why it runs before, not inside, a captured update).
        """
        values = torch.zeros_like(storage.values) if out is None else out.zero_()
        steps, envs = storage.truncated.nonzero(as_tuple=True)
        if steps.numel() > 0:
            final_global = storage.final_global_state
            global_state = final_global[steps, envs] if final_global is not None else None
            values[steps, envs] = self.value(storage.final_obs[steps, envs], global_state).to(values.dtype)
        return values

    def clip_and_step(self, loss: torch.Tensor, max_grad_norm: float | None) -> torch.Tensor:
        """Backpropagate ``loss``, clip the gradient norm, step; returns the norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, self.model.parameters())
        limit = float("inf") if max_grad_norm is None else max_grad_norm
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), limit)
        self.optimizer.step()
        return norm.detach()

    def batch(self, storage: RolloutStorage, **per_step: torch.Tensor) -> FlatBatch | SequenceBatch:
        """The rollout as an update reads it: samples [T * E * A_p] (:class:`FlatBatch`), or for a recurrent
        model whole sequences [T, E * A_p] (:class:`~warpdrive.training.recurrent.SequenceBatch`)."""
        return FlatBatch(storage, **per_step) if self.memory is None else SequenceBatch(storage, **per_step)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.memory is not None:  # the state the next rollout starts from: part of an exact resume
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.memory is not None:
            self.memory.load_state_dict(state.get("memory"))
        if self.device.type == "cuda":  # the saved options (from a CPU run, say) replace the device's
            _make_capturable(self.optimizer, self.device)


def _make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make ``optimizer`` (Adam on ``device``, CUDA) capturable in place: its learning rate a float32 device
    tensor and its step counts on the device, as a CUDA graph that replays its steps needs them."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["fused"] = True
        group["foreach"] = None
        group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=device).clone()
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(device=device, dtype=torch.float32)
