"""The env base class: a batch of ``num_envs`` replicas of a multi-agent env, stepped by one kernel.

An env subclass declares, in one module:

- ``Config``: a dataclass of its parameters with defaults, and a ``validate()`` that raises
  ``ValueError`` naming the bad value;
- ``num_agents_of(config)``, ``groups()``, ``single_action_space()``, ``observation_size()``;
- ``state_arrays()``: its own arrays (positions, speeds, constants, scratch) as :class:`ArraySpec`;
- ``kernel_params()``: scalars the kernels read as ``p.<name>``;
- ``step_phases`` and ``reset_phases``: its logic, as phases of kernel functions (see
  :mod:`warpdrive.core.compile`).

Envs whose agents cannot always take every action declare one more array, ``action_mask``: shape
``[E, A, n_1 + ... + n_H]`` bool (the heads' choices laid end to end, True where allowed), role
``"action_mask"``, written by their step and reset phases for the observation they produce. Samplers and
policies then draw only allowed actions, and ``validate`` rejects the others.

The base class adds the standard arrays every env has (see :meth:`Env.standard_arrays`), compiles the
phases for the CPU or the GPU, and offers a batched, Gymnasium-style API whose tensors stay on the device.

Autoreset: Gymnasium's ``SAME_STEP`` mode. An env whose episode ends in a step is reset inside that same
kernel launch; the observation returned is the first of its next episode, and the last observation of the
finished episode is kept in ``final_obs`` (needed to bootstrap on truncation).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, get_type_hints

import gymnasium as gym
import numpy as np
import torch

from warpdrive.core.actions import (
    INT32_LIMIT,
    action_fault_error,
    action_heads,
    action_tables,
    check_action_range,
    check_tensor,
    checked_actions,
)
from warpdrive.core.compile import LaunchBoundary, LaunchShape, Phase, Program
from warpdrive.core.device import debug_requested
from warpdrive.core.fingerprint import source_fingerprint
from warpdrive.core.lifecycle import program_stages
from warpdrive.core.random import SEED_LIMIT, replica_seed
from warpdrive.core.sampling import discrete_choices, uniform_actions
from warpdrive.core.store import ArraySpec, DataStore, kernel_tuple_type
from warpdrive.core.targets import Backend, CudaTarget, KernelTarget, kernel_target, resolve_backend
from warpdrive.core.typed import ConfigError, from_dict, join_path

StartMode = Literal["random", "identical"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _types_digest(p: Any, s: Any) -> str:
    """A short hash of the kernels' argument types: the fields and Numba types of the params and arrays."""
    from numba import typeof

    described = f"{p._fields}|{typeof(p)}|{s._fields}|{typeof(s)}"
    return hashlib.sha256(described.encode()).hexdigest()[:10]


def _check_float32_fields(config: Any) -> None:
    """Every float of an env's config, also each one in a tuple or list field (``initial_state``), must be finite
    in float32, the precision of the kernels (a value such as 1e39 passes a float64 check and becomes inf on the
    device), and not a nonzero value that float32 rounds to 0."""
    for field in dataclasses.fields(config):
        _check_float32(field.name, getattr(config, field.name))


def _check_float32(path: str, value: Any) -> None:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_float32(join_path(path, i), item)
        return
    if not isinstance(value, (float, np.floating)):
        return
    if not abs(float(value)) <= _FLOAT32_MAX:
        raise ConfigError(path, f"expected a float finite in float32 (|value| <= {_FLOAT32_MAX:.4g}: the "
                                f"kernels compute in float32), got {value!r}")
    if value != 0 and np.float32(value) == 0:
        smallest = float(np.finfo(np.float32).smallest_subnormal)
        raise ConfigError(path, f"expected 0 or at least {smallest:.4g} in magnitude (it is 0 in float32, "
                                f"the kernels' precision), got {value!r}")


#: kernel parameters the base class sets (``p.<name>``); config fields with these names are not mirrored into ``p``
_BASE_PARAMS = ("num_agents", "episode_length", "seed", "random_start", "autoreset", "draw_actions")


def config_scalars(config: Any) -> dict[str, Any]:
    """The fields of an env config typed ``int``, ``float`` or ``bool``: they reach the kernels as ``p.<name>``
    without being listed again (floats as float32), except those named like a base parameter (``seed``, ...)."""
    hints = get_type_hints(type(config))
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if hints.get(f.name) in (int, float, bool) and f.name not in _BASE_PARAMS}


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


class Env:
    """A batch of ``num_envs`` replicas of a multi-agent env, all stepped at once on one device.

    Args:
        config: the env's ``Config`` instance; keyword arguments override its fields.
        num_envs: number of replicas (>= 1).
        device: ``"cuda"``, ``"cpu"`` or a torch device; default: cuda when available, else cpu.
        backend: ``"cuda"`` (GPU kernels), ``"cpu"`` (``njit``, parallel over envs) or ``"cudasim"`` (the
            CUDA kernels run by Numba's simulator on CPU tensors; needs ``NUMBA_ENABLE_CUDASIM=1`` before
            Numba is imported; for tests at tiny sizes). Default: follows ``device``.
        seed: seed of the per-env random streams (random starts, ``random_step``'s actions), an integer in
            ``[0, 2**64)``; :meth:`replica_seed` gives the seed of a lone replica that reproduces one of these.
        start: ``"random"``: each replica starts every episode from its own random state, drawn on the
            device; ``"identical"``: every replica starts from the one state given in the config (the
            reference WarpDrive's behaviour).
        validate: check the actions on the host before every step (a host sync), raising before the step runs.
            Default: on for the CPU backends, off for ``cuda``.
        check_actions: check the actions inside the step kernel (no host sync): an action index outside its
            head's choices (or masked out), or a Box action that is NaN or infinite, is replaced by a safe one
            (index 0; 0 clipped to the bounds) and the first of each replica is recorded (a finite Box action
            outside the bounds is the env's to clip, as Gymnasium's envs do);
            :meth:`raise_action_faults` raises for it (a trainer calls it every iteration; without
            ``validate``, a CPU step calls it after every step). Default: on.
        launch: how envs map onto CUDA threads (threads per env, envs per block); default: chosen from the
            agent count by :func:`~warpdrive.core.compile.launch_shape`. A tuning knob: results never
            depend on it.
        exact: compile the CUDA kernels so that they round every float operation as the CPU does (no
            contraction of multiply-adds): CPU and GPU runs are then bit-identical. ``False`` lets the GPU
            compiler fuse multiply-adds (slightly faster where arithmetic dominates; results differ from the
            CPU's in the last bits and then beyond).
        debug: the author's mode: on the CPU, every array index in the env's kernels is checked and one out of
            bounds raises ``IndexError`` naming the program (one thread, slower; ``warpdrive check`` uses it).
            Default: on when the environment variable ``WARPDRIVE_DEBUG`` is set (not ``0``).
    """

    name: ClassVar[str] = "env"
    #: the env's parameters: a dataclass declared as :mod:`warpdrive.core.typed` describes (each field's type,
    #: default, limits with ``bounded``, or ``bounded_magnitude`` for rewards and physical scales, and a docstring);
    #: ``validate(self, path)`` holds only rules across fields
    Config: ClassVar[type]
    step_phases: ClassVar[tuple[Phase | LaunchBoundary, ...]] = ()
    reset_phases: ClassVar[tuple[Phase | LaunchBoundary, ...]] = ()
    #: True: the CPU and the GPU compute bit-identical results (the env uses only ``+ - * /``, ``sqrt`` and the
    #: functions of :mod:`warpdrive.core.exactmath`). False for envs that call the targets' own transcendental
    #: functions (``math.sin``, ``math.exp``, ...), e.g. to match a CPU reference bit for bit: CUDA's libdevice
    #: rounds some results differently, so their CPU/GPU consistency is checked with a tolerance instead.
    bit_identical_on_gpu: ClassVar[bool] = True
    #: the start modes the env's reset phases implement (``p.random_start`` tells them which is asked for)
    start_modes: ClassVar[tuple[str, ...]] = ("random", "identical")
    #: config overrides under which the env compiles other kernel code (e.g. another observation mode): the
    #: contract (:mod:`warpdrive.core.contract`, ``warpdrive check``) checks each besides the config it is given
    code_variants: ClassVar[tuple[dict[str, Any], ...]] = ()
    #: the default launch shape's register cap on CUDA (:class:`~warpdrive.core.compile.LaunchShape`): set it
    #: where a measurement showed that more resident threads beat fewer spills
    max_registers: ClassVar[int | None] = None

    _programs: ClassVar[dict[tuple[type, str, str, str, bool, str, bool], Program]] = {}

    def __init__(
        self,
        config: Any = None,
        *,
        num_envs: int = 1,
        device: str | torch.device | None = None,
        backend: Backend | None = None,
        seed: int = 0,
        start: StartMode = "random",
        validate: bool | None = None,
        check_actions: bool = True,
        launch: LaunchShape | None = None,
        exact: bool = True,
        debug: bool | None = None,
        **overrides: Any,
    ) -> None:
        self.config = self._make_config(config, overrides)
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if start not in type(self).start_modes:
            raise ValueError(f"start must be one of {type(self).start_modes} for {type(self).__name__}, got {start!r}")
        self.num_envs = num_envs
        self.start = start
        self.backend, self.device = resolve_backend(backend, device)
        self.target: KernelTarget = kernel_target(self.backend)
        self.validate = self.target.host_arrays if validate is None else bool(validate)
        self.check_actions = bool(check_actions)
        self.exact = bool(exact)
        self.debug = debug_requested() if debug is None else bool(debug)
        self.num_agents = self.num_agents_of(self.config)
        self.seed = _check_seed(seed)

        specs = self.standard_arrays() + self.state_arrays()
        self._check_memory(specs)
        self._check_action_mask_spec(specs)
        self._check_phase_needs({spec.name: spec for spec in specs})
        self.store = DataStore(specs, num_envs, self.num_agents, self.device)
        self._load_start_state()
        if launch is None:
            launch = self.target.default_launch(self.num_agents, num_envs, type(self).max_registers,
                                                self.threads_per_agent())
        elif (not isinstance(launch, LaunchShape) or launch.lanes < 1 or launch.envs_per_block < 1
              or not (launch.max_registers is None or 16 <= launch.max_registers <= 255)):
            raise ValueError("launch must be a LaunchShape with lanes >= 1, envs_per_block >= 1 and max_registers "
                             f"None or in [16, 255], got {launch!r}")
        self.shape: LaunchShape = launch
        self._arrays_type = kernel_tuple_type(type(self), "Arrays", list(self.store.specs))
        self._s = self.store.kernel_views(self._arrays_type, self.target)
        self._set_params()
        self._argument_types = _types_digest(self._p, self._s)

    # ------------------------------------------------------------------------------------------
    # what a subclass provides

    @classmethod
    def num_agents_of(cls, config: Any) -> int:
        raise NotImplementedError

    @classmethod
    def config_for_agents(cls, num_agents: int) -> dict[str, Any] | None:
        """Config fields that give ``num_agents`` agents (the rest at their defaults), or None where this env
        cannot have that many (the default: a fixed agent count). The contract's shapes check uses it."""
        return {} if num_agents == cls.num_agents_of(cls.Config()) else None

    def groups(self) -> dict[str, list[int]]:
        """Agent ids per group, e.g. ``{"taggers": [...], "runners": [...]}`` (the same in every env)."""
        return {"agents": list(range(self.num_agents))}

    def single_action_space(self) -> gym.spaces.Space:
        """The action space of one agent (every agent has the same one)."""
        raise NotImplementedError

    def observation_size(self) -> int:
        raise NotImplementedError

    def state_arrays(self) -> list[ArraySpec]:
        return []

    def kernel_params(self) -> dict[str, Any]:
        """Kernel parameters derived from the config (``p.<name>``), beside its ``int``/``float``/``bool`` fields,
        which reach the kernels by themselves (:func:`config_scalars`); an entry here overrides a field's value."""
        return {}

    def start_state(self) -> dict[str, np.ndarray]:
        """Values of ``global`` arrays (constants and the identical start), written once at setup."""
        return {}

    def program_phases(self) -> tuple[tuple[Phase | LaunchBoundary, ...], tuple[Phase | LaunchBoundary, ...]]:
        """``(step phases, reset phases)``: by default the class's ``step_phases`` and ``reset_phases``.

        :data:`~warpdrive.core.compile.NEW_LAUNCH` between two phases runs them as separate CUDA kernels
        (see :class:`~warpdrive.core.compile.LaunchBoundary`).

        Envs whose phases depend on compile-time constants of their config (such as the size of a
        per-thread list, see :func:`~warpdrive.core.spatial.k_nearest_phases`) override this and
        :meth:`program_variant`.
        """
        return type(self).step_phases, type(self).reset_phases

    def threads_per_agent(self) -> int:
        """Threads per agent of the default launch shape on CUDA (default 1): envs whose phases spread one agent's
        work over several indices return how many (e.g. a k-nearest search shared by
        :attr:`~warpdrive.core.spatial.NeighbourGrid.search_lanes` threads)."""
        return 1

    def program_variant(self) -> str:
        """A name for the compile-time constants :meth:`program_phases` depends on (``""``: none); each
        variant is compiled and cached on its own."""
        return ""

    def metric_names(self) -> list[str]:
        """Names of per-episode statistics the env accumulates in ``s.metrics[env, j]`` (e.g. tags made).

        The base class zeroes them when an episode starts and copies them to ``final_metrics`` when it
        ends, so that trainers can log them per finished episode.
        """
        return []

    def global_state(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The state of each replica [E, G] float32 that goes with observations ``obs`` [E, A, D], for
        centralised critics (``critic_input: global``); asked for with the current observations and with
        ``final_obs``, so it must be a function of ``obs`` (after an autoreset the arrays already hold the
        next episode). Runs inside captured rollout steps: device operations only, no host sync.

        ``None`` (the default): the trainer uses every agent's observation concatenated, [E, A * D]. That
        grows with agents x observation size and is stored every rollout step: with many agents, return
        something compact.
        """
        return None

    def draw(self, axes: Any, index: int) -> None:
        """Draw replica ``index``'s current state on matplotlib ``axes`` (:meth:`render` and ``warpdrive
        render`` call it; the title is set by the caller). Read the env's arrays from :attr:`store`;
        :func:`warpdrive.core.render.draw_agents_on_plane` draws agents on a plane.

        The default draws each group's mean return so far: envs override it with a picture of their state.
        """
        from warpdrive.core.render import draw_returns

        draw_returns(axes, self, index)

    def render(self, index: int = 0, *, title: str | None = None,
               size: tuple[int, int] = (400, 400)) -> np.ndarray:
        """A picture of replica ``index`` now, drawn by :meth:`draw`: RGB [height, width, 3] uint8.

        The default ``title`` names the env, the step ``t`` and each group's mean return so far.
        """
        if not isinstance(index, int) or not 0 <= index < self.num_envs:
            raise ValueError(f"index must be a replica index in [0, {self.num_envs}), got {index!r}")
        if title is None:
            returns = self.store["episode_return"][index].float().cpu()
            total = ", ".join(f"{g} {float(returns[ids].mean()):.2f}" for g, ids in self.groups().items())
            title = f"{self.name}  t={int(self.store['t'][index])}  return: {total}"
        from warpdrive.core.render import rgb_frame

        return rgb_frame(lambda axes: self.draw(axes, index), title, size)

    # ------------------------------------------------------------------------------------------
    # standard arrays

    def action_heads(self) -> int:
        """H, the values one agent's action holds (1 for Discrete, one per dimension otherwise)."""
        return action_heads(self.single_action_space())

    def action_dtype(self) -> torch.dtype:
        return torch.float32 if isinstance(self.single_action_space(), gym.spaces.Box) else torch.int32

    def standard_arrays(self) -> list[ArraySpec]:
        """Arrays every env has. Layouts (E = num_envs, A = num_agents, D = observation size, H = heads):

        ======================  ==============  =========  =====================================================
        name                    shape           dtype      meaning
        ======================  ==============  =========  =====================================================
        ``obs``                 [E, A, D]       float32    observation after the step (first of the next episode
                                                           where the env was reset in this step)
        ``final_obs``           [E, A, D]       float32    last observation of the episode that ended; valid where
                                                           ``done``
        ``actions``             [E, A, H]       int32      action indices (float32 for Box spaces)
        ``rewards``             [E, A]          float32    reward of the step
        ``terminated``          [E]             bool       the episode ended by the env's rules
        ``truncated``           [E]             bool       the episode hit ``episode_length`` (not terminated)
        ``done``                [E]             bool       terminated or truncated; the env was reset
        ``t``                   [E]             int32      steps taken in the current episode
        ``episode``             [E]             int64      episodes started (the random streams' counter)
        ``metrics``             [E, M]          float32    the env's per-episode statistics (:meth:`metric_names`)
        ``final_metrics``       [E, M]          float32    their values at the end of the episode that ended
        ``final_length``        [E]             int32      length of the episode that ended; valid where ``done``
        ``episode_return``      [E, A]          float32    rewards summed over the current episode
        ``final_return``        [E, A]          float32    the return of the episode that ended; valid where ``done``
        ``finished_episodes``   [E]             float32    episodes finished since :meth:`episode_totals` last
                                                           cleared the ``finished_*`` sums
        ``finished_length``     [E]             float32    their lengths, summed
        ``finished_return``     [E, A]          float32    their returns, summed
        ``finished_metrics``    [E, M]          float32    their final metrics, summed
        ``reset_mask``          [E]             bool       the replicas :meth:`reset` restarts (its input)
        ``action_choices``      [H]             int32      choices per head (discrete spaces; else 0)
        ``action_low/high``     [H]             float32    bounds per head (Box spaces; else 0)
        ``action_fault``        [E]             int64      the first invalid action the step kernel found since
                                                           :meth:`raise_action_faults` last looked (0: none)
        ======================  ==============  =========  =====================================================

        The ``finished_*`` sums are what a training loop logs: the step kernel adds every finished
        episode to them, so that no per-step reduction is needed (Gymnasium's ``RecordEpisodeStatistics``,
        inside the kernel).
        """
        d, h, m = self.observation_size(), self.action_heads(), len(self.metric_names())
        return [
            ArraySpec("obs", "agent", torch.float32, "observation", (d,)),
            ArraySpec("final_obs", "agent", torch.float32, "observation", (d,)),
            ArraySpec("actions", "agent", self.action_dtype(), "action", (h,)),
            ArraySpec("rewards", "agent", torch.float32, "reward"),
            ArraySpec("terminated", "env", torch.bool, "done"),
            ArraySpec("truncated", "env", torch.bool, "done"),
            ArraySpec("done", "env", torch.bool, "done"),
            ArraySpec("t", "env", torch.int32, "state"),
            ArraySpec("episode", "env", torch.int64, "state"),
            ArraySpec("metrics", "env", torch.float32, "state", (m,)),
            ArraySpec("final_metrics", "env", torch.float32, "state", (m,)),
            ArraySpec("final_length", "env", torch.int32, "state"),
            ArraySpec("episode_return", "agent", torch.float32, "state"),
            ArraySpec("final_return", "agent", torch.float32, "state"),
            ArraySpec("finished_episodes", "env", torch.float32, "state"),
            ArraySpec("finished_length", "env", torch.float32, "state"),
            ArraySpec("finished_return", "agent", torch.float32, "state"),
            ArraySpec("finished_metrics", "env", torch.float32, "state", (m,)),
            ArraySpec("reset_mask", "env", torch.bool, "scratch"),
            ArraySpec("action_choices", "global", torch.int32, "constant", (h,)),
            ArraySpec("action_low", "global", torch.float32, "constant", (h,)),
            ArraySpec("action_high", "global", torch.float32, "constant", (h,)),
            ArraySpec("action_fault", "env", torch.int64, "scratch"),
        ]

    # ------------------------------------------------------------------------------------------
    # the batched API

    @property
    def obs(self) -> torch.Tensor:
        """Observations, [envs, agents, obs_size] float32 (updated in place)."""
        return self.store["obs"]

    @property
    def actions(self) -> torch.Tensor:
        """The action buffer, [envs, agents, heads]; write into it to skip the copy in :meth:`step`."""
        return self.store["actions"]

    @property
    def action_mask(self) -> torch.Tensor | None:
        """[envs, agents, n_1 + ... + n_H] bool, True where an action is allowed; ``None`` when the env
        declares no ``action_mask`` array (every action always allowed)."""
        return self.store.get("action_mask")

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-np.inf, np.inf, (self.observation_size(),), np.float32)

    def group_spaces(self) -> dict[str, tuple[gym.spaces.Box, gym.spaces.Space]]:
        """(observation space, action space) of one agent, per group."""
        return {g: (self.single_observation_space, self.single_action_space()) for g in self.groups()}

    def reset(self, seed: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Start a new episode in every replica, or in those ``mask`` selects; returns ``obs`` [E, A, D].

        With a seed, the random streams restart from it: the same seed gives the same trajectories.

        With ``mask``, a [envs] bool tensor on the env's device, only the replicas where it is True start
        a new episode (``t`` = 0, the episode counter advanced, so their random starts are fresh draws,
        return and metrics cleared); every array of the others is left as it was. The mask is copied
        into the ``reset_mask`` array and the reset kernel skips the other replicas: there is no host
        sync. The cut-short episodes are not counted as finished (no ``final_*`` or ``finished_*``
        update), as with a reset without mask. For libraries that reset finished replicas themselves
        after :meth:`step_without_reset` (TorchRL) instead of relying on the autoreset in :meth:`step`.
        ``seed`` and ``mask`` cannot be combined: a seed restarts every replica's stream.
        """
        if mask is None:
            if seed is not None:
                self.seed = _check_seed(seed)
                self._set_params()
            self.store["episode"].zero_()
            self.store["reset_mask"].fill_(True)
        else:
            if seed is not None:
                raise ValueError(f"reset got seed={seed!r} and a mask; a seed restarts every replica: "
                                 "call reset(seed=...) without a mask")
            self.store["reset_mask"].copy_(check_tensor("mask", mask, (self.num_envs,), (torch.bool,), self.device))
        self._run_program("reset", self._p)
        return self.obs

    def replica_seed(self, replica: int) -> int:
        """The seed of a one-replica env of this class and config that reproduces replica ``replica`` of this one
        (its random starts, ``random_step``'s actions and its resets): ``Env(..., num_envs=1,
        seed=env.replica_seed(i))``, given replica ``i``'s actions, steps exactly as replica ``i`` does here."""
        if not isinstance(replica, int) or isinstance(replica, bool) or not 0 <= replica < self.num_envs:
            raise ValueError(f"replica must be an integer in [0, {self.num_envs}), got {replica!r}")
        return replica_seed(self.seed, replica)

    def step(
        self, actions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Advance every replica by one step; replicas whose episode ends are reset in the same launch.

        Args:
            actions: [envs, agents, heads] (or [envs, agents] for one head) on the env's device, integer
                indices (float32 for Box spaces). ``None``: use what is already in :attr:`actions`.

        Returns:
            ``(obs, rewards, terminated, truncated, info)``: ``obs`` [E, A, D] float32, ``rewards`` [E, A]
            float32, ``terminated`` and ``truncated`` [E] bool, ``info = {"final_obs": [E, A, D],
            "done": [E]}``. These are the store's tensors, updated in place by the next step: clone what
            you keep.
        """
        if actions is not None and actions is not self.actions:
            checked = checked_actions(actions, self.actions)
            if self.validate:  # before the copy, which narrows wider integers to the int32 buffer (2**32 -> 0)
                check_action_range(checked, self.single_action_space(), self.action_mask)
            elif checked.dtype == torch.int64:
                # saturate, not wrap, into int32: out-of-range values stay out of range for the kernel's check
                checked = checked.clamp(-INT32_LIMIT, INT32_LIMIT - 1)
            self.actions.copy_(checked)
        elif self.validate:
            check_action_range(self.actions, self.single_action_space(), self.action_mask)
        self._run_step(self._p)
        return self.step_outputs()

    def _run_step(self, p: Any) -> None:
        """The step program with params ``p``; on the CPU, where there is no device to wait for, the actions
        the kernel rejected are raised at once (unless ``validate`` checked them before)."""
        self._run_program("step", p)
        if self.check_actions and not self.validate and self.target.host_arrays:
            self.raise_action_faults()

    def _run_program(self, name: str, p: Any) -> None:
        try:
            self._program(name)(p, self._s, self.num_envs, self.shape)
        except IndexError as err:  # raised by bounds-checked programs (debug) and by the simulator's arrays
            raise IndexError(f"{type(self).__name__}: its {name} kernels indexed an array out of bounds ({err})"
                             ) from None

    def action_faults_found(self) -> torch.Tensor:
        """A 0-dim bool device tensor: whether the step kernel found an invalid action since the last
        :meth:`raise_action_faults` (no host sync; see ``check_actions``)."""
        return (self.store["action_fault"] != 0).any()

    def raise_action_faults(self) -> None:
        """Raise :class:`InvalidActionError` for the first invalid action the step kernel found
        (``check_actions``) since the last call, naming the replica, agent, head and value; the records are
        cleared. A host sync on CUDA."""
        faults = self.store["action_fault"]
        found = (faults != 0).nonzero()
        if found.numel() == 0:
            return
        env = int(found[0, 0])
        code = int(faults[env])
        faults.zero_()
        raise action_fault_error(env, code, self.single_action_space(), self.num_agents, self.action_mask is not None)

    def episode_totals(self, clear: bool = True) -> dict[str, torch.Tensor]:
        """Sums over the episodes finished since the last clear, over all replicas (device tensors).

        Returns:
            ``{"episodes": [], "length": [], "return": [A], "metrics": [M]}``: the number of finished
            episodes, their lengths summed, each agent's returns summed, the env's metrics summed. Divide
            by ``episodes`` for means. ``clear``: start the next sums from zero.
        """
        s = self.store
        totals = {
            "episodes": s["finished_episodes"].sum(),
            "length": s["finished_length"].sum(),
            "return": s["finished_return"].sum(0),
            "metrics": s["finished_metrics"].sum(0),
        }
        if clear:
            for name in ("finished_episodes", "finished_length", "finished_return", "finished_metrics"):
                s[name].zero_()
        return totals

    def step_without_reset(self) -> None:
        """One step from the actions in :attr:`actions`, leaving ended episodes as they are (for renders)."""
        if self.validate:
            check_action_range(self.actions, self.single_action_space(), self.action_mask)
        self._run_step(self._p_without_autoreset)

    def step_outputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        s = self.store
        return s["obs"], s["rewards"], s["terminated"], s["truncated"], {"final_obs": s["final_obs"], "done": s["done"]}

    def random_step(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One step with uniformly random actions drawn inside the step kernel (no separate sampling pass):
        for benchmarks and random rollouts. Returns what :meth:`step` returns; the actions taken are left in
        :attr:`actions`.

        The draws are a pure function of ``(seed, env, episode, t, agent, head)`` (the env's counter-based
        stream, apart from its start draws), so the CPU and the GPU draw the same actions. Discrete heads draw
        uniformly among their choices (among the allowed ones where the env declares an ``action_mask``),
        Box heads uniformly in ``[low, high]``.
        """
        self._run_program("step", self._p_random_actions)
        return self.step_outputs()

    def sample_actions(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniformly random actions [envs, agents, heads] drawn on the device (written into :attr:`actions`)."""
        return uniform_actions(self.single_action_space(), self.actions, generator, mask=self.action_mask)

    # ------------------------------------------------------------------------------------------
    # internals

    def _make_config(self, config: Any, overrides: Mapping[str, Any]) -> Any:
        cls = type(self).Config
        if config is None:
            values: dict[str, Any] = {}
        elif isinstance(config, Mapping):
            values = dict(config)
        elif isinstance(config, cls):
            values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init}
        else:
            raise TypeError(f"config must be a {cls.__name__} or a dict, got {type(config).__name__}")
        # every field checked against its declaration (type, bounds), then the config's cross-field rules
        config = from_dict(cls, {**values, **overrides})
        _check_float32_fields(config)
        length = getattr(config, "episode_length", None)  # the base class truncates there: every env has one
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length < INT32_LIMIT:
            raise ConfigError("episode_length", f"expected an integer in [1, 2**31) (steps are counted in int32), "
                                                f"got {length!r}")
        return config

    def _check_action_mask_spec(self, specs: list[ArraySpec]) -> None:
        spec = next((s for s in specs if s.name == "action_mask"), None)
        if spec is None:
            return
        choices = discrete_choices(self.single_action_space())
        if choices is None:
            raise ValueError(f"{type(self).__name__} declares an action_mask, but its action space "
                             f"{self.single_action_space()} is not discrete")
        if spec.per != "agent" or spec.dtype != torch.bool or tuple(spec.shape) != (sum(choices),):
            raise ValueError(f"{type(self).__name__}'s action_mask must be ArraySpec('action_mask', 'agent', "
                             f"torch.bool, 'action_mask', ({sum(choices)},)) (one flag per choice of "
                             f"{choices}), got {spec}")

    def _check_phase_needs(self, specs: Mapping[str, ArraySpec]) -> None:
        """Every array a phase indexes by a compile-time size is declared with that size (:attr:`Phase.needs`)."""
        step_phases, reset_phases = self.program_phases()
        for phase in (*step_phases, *reset_phases):
            if not isinstance(phase, Phase):  # a launch boundary
                continue
            for name, shape in phase.needs:
                declared = specs.get(name)
                if declared is None or declared.shape != shape:
                    got = "no such array" if declared is None else f"it declared with trailing shape {declared.shape}"
                    raise ValueError(f"{type(self).__name__}: {phase.fns[0].__name__} indexes array {name!r} "
                                     f"with trailing shape {shape}, but the env has {got} (declare it with the "
                                     f"size the phases use, e.g. NeighbourGrid.arrays(k) with "
                                     f"k_nearest_phases(k, ...))")

    def _check_memory(self, specs: list[ArraySpec]) -> None:
        need = DataStore.required_bytes(specs, self.num_envs, self.num_agents)
        free, where = self.target.free_memory(self.device)
        if need > free:
            per_env = need / self.num_envs
            raise MemoryError(
                f"{type(self).__name__} with num_envs={self.num_envs} and {self.num_agents} agents needs "
                f"{need / 2**30:.2f} GiB for its arrays, but only {free / 2**30:.2f} GiB is {where}; "
                f"each env needs {per_env / 2**20:.2f} MiB, so at most {int(free // per_env)} envs fit"
            )

    def _load_start_state(self) -> None:
        values = {**action_tables(self.single_action_space()), **self.start_state()}
        # a constant left at zero would pass every check and silently mean "all zeros"
        missing = [name for name in self.store.names("constant") if name not in values]
        if missing:
            raise ValueError(f"{type(self).__name__}: constant array(s) {missing} have no values: return them from "
                             f"start_state() (e.g. {{{missing[0]!r}: ...}})")
        for name, value in values.items():
            target = self.store[name]
            array = torch.as_tensor(np.asarray(value), dtype=target.dtype)
            if tuple(array.shape) != tuple(target.shape):
                raise ValueError(f"start value {name!r} has shape {tuple(array.shape)}, expected {tuple(target.shape)}")
            target.copy_(array)

    # a parameter that float32 cannot hold is named below: NumPy's overflow warnings would only print ahead of that
    @np.errstate(over="ignore", divide="ignore", invalid="ignore")
    def _set_params(self) -> None:
        values: dict[str, Any] = {
            "num_agents": self.num_agents,
            "episode_length": self.config.episode_length,
            "seed": np.uint64(self.seed),
            "random_start": self.start == "random",
            "autoreset": True,
            "draw_actions": False,
            "check_actions": self.check_actions,
            **config_scalars(self.config),
            **self.kernel_params(),
        }
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, (bool, np.bool_)):
                converted[key] = np.bool_(value)
            elif isinstance(value, np.uint64):
                converted[key] = value  # the seed: all 64 bits
            elif isinstance(value, (int, np.integer)):
                converted[key] = np.int64(value)
            elif isinstance(value, np.float64):
                converted[key] = value  # asked for explicitly: kept in double precision
            elif isinstance(value, (float, np.floating)):
                converted[key] = np.float32(value)
                if not np.isfinite(converted[key]):
                    # a derived quantity (a scale, an inverse) that float32 cannot hold: name what it came from
                    raise ValueError(f"{type(self).__name__}: the config gives kernel parameter {key} = {value!r}, "
                                     f"which is not finite in float32 (the kernels compute in float32); "
                                     f"bring the parameters it derives from nearer to 1")
            else:
                raise TypeError(f"kernel parameter {key!r} must be a bool, int or float, got {type(value).__name__}")
        self._p = kernel_tuple_type(type(self), "Params", list(converted))(**converted)
        # step_without_reset and random_step run the step program with these: one compiled program per env
        self._p_without_autoreset = self._p._replace(autoreset=np.bool_(False))
        self._p_random_actions = self._p._replace(draw_actions=np.bool_(True))

    @property
    def params(self) -> Any:
        """The scalars the kernels read as ``p.<name>`` (a named tuple)."""
        return self._p

    def _program(self, name: str) -> Program:
        cls = type(self)
        launches = self.target.separate_launches
        # launch boundaries change only code that launches stages separately: the CPU program is the same with
        # or without them; the action kind picks the functions that draw and check actions (an env may offer
        # discrete and Box actions)
        variant = self.program_variant() + (self._launch_layout() if launches else "") + self._action_kind()
        exact = self.exact or not self.target.may_contract
        bounds_checked = self.debug and self.target.bounds_checks
        key = (cls, name, self.target.backend, variant, exact, self._argument_types, bounds_checked)
        program = Env._programs.get(key)
        if program is None:
            fingerprint = self._fingerprint()
            # Numba's disk cache keeps one unlocked index per function name: two processes saving different
            # keys under one name at once can leave an entry that points at the other's code (wrong results,
            # seen with parallel test workers). The name therefore carries everything in the key: one cached
            # program per name (the source fingerprint and the argument types).
            qualified = ".".join(part for part in (cls.__module__, cls.__name__, variant, name,
                                                   "" if exact else "fused", fingerprint[:8], self._argument_types)
                                 if part)
            program = Program(self._runner(name, launches=launches), self.target, fingerprint, qualified,
                              exact=exact, bounds_checked=bounds_checked)
            Env._programs[key] = program
        return program

    def program_name(self, name: str) -> str:
        """The name under which program ``name`` (``"step"`` or ``"reset"``) of this env is compiled and cached:
        one per env class, code variant, source version, argument types and target options."""
        return self._program(name).name

    def cuda_ptx(self, programs: tuple[str, ...] = ("step", "reset"),
                 compute_capability: tuple[int, int] = (9, 0)) -> dict[str, str]:
        """The PTX of this env's CUDA kernels (``{program: ptx}``), compiled without a GPU (NVVM only).

        Whatever the env's backend (its arrays only give the argument types), this is the code its ``cuda``
        backend runs, with :attr:`exact`; a program of several launches gives each one's PTX in turn. Raises
        Numba's typing error where the CUDA target rejects the env's code.
        """
        from numba import typeof

        cuda = kernel_target("cuda")
        assert isinstance(cuda, CudaTarget)
        signature = (typeof(self._p), typeof(self._s), typeof(1), typeof(1))
        return {name: "\n".join(cuda.ptx(stage, self._fingerprint(), f"ptx.{type(self).__name__}.{name}.{i}",
                                         signature, compute_capability, exact=self.exact)
                                for i, stage in enumerate(self._runner(name)))
                for name in programs}

    def _action_kind(self) -> str:
        """How the step program draws and checks actions, for program names (``""``: discrete, unmasked)."""
        if self.action_dtype() == torch.float32:
            return "_box"
        return "" if self.action_mask is None else "_masked"

    def _launch_layout(self) -> str:
        """Where the launch boundaries are among the step and reset phases (``""``: none), for program names."""
        step_phases, reset_phases = self.program_phases()
        cuts = [i for i, phase in enumerate((*step_phases, None, *reset_phases)) if isinstance(phase, LaunchBoundary)]
        return "_launches_" + "_".join(map(str, cuts)) if cuts else ""

    def _fingerprint(self) -> str:
        step_phases, reset_phases = self.program_phases()
        # Env and lifecycle: the phases every env gets and how programs are assembled
        functions = [fn for ph in (*step_phases, *reset_phases) for fn in getattr(ph, "fns", ())]
        functions += [type(self), Env, program_stages]
        return source_fingerprint(functions)

    def _runner(self, name: str, launches: bool = True) -> list[Any]:
        """The stages of program ``name`` (see :func:`~warpdrive.core.lifecycle.program_stages`); with
        ``launches=False`` one runner with the env's launch boundaries left out."""
        step_phases, reset_phases = self.program_phases()
        if not launches:
            step_phases = tuple(ph for ph in step_phases if not isinstance(ph, LaunchBoundary))
            reset_phases = tuple(ph for ph in reset_phases if not isinstance(ph, LaunchBoundary))
        return program_stages(name, step_phases, reset_phases, self._action_kind())
