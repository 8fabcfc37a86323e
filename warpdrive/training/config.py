"""The whole configuration of a training run, as typed dataclasses loaded from YAML.

A minimal config::

    env: {name: cartpole, num_envs: 64}
    total_env_steps: 500000

Policies are given per agent group of the env (``env.groups()``), BenchMARL-style, each with its own
algorithm, model, optimiser and hyperparameters (a section per registered algorithm, named like it, of
that algorithm's ``Config``); a single policy named ``shared`` serves every group::

    policies:
      taggers: {algorithm: ppo, model: {hidden_sizes: [256, 256]}, ppo: {clip_coef: 0.1}}
      runners: {algorithm: ppo, optimizer: {lr: 1.0e-4}}

Command-line overrides use dotted key paths and YAML scalars: ``policies.taggers.ppo.clip_coef=0.1``.
Every error names the key path: ``policies.taggers.ppo.clip_coef: expected a float > 0, got -1``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from warpdrive.core.typed import ConfigError, bounded, from_dict, to_dict
from warpdrive.envs import available, canonical_name
from warpdrive.training.algorithms import ALGORITHMS
from warpdrive.training.algorithms.base import OptimizerSpec
from warpdrive.training.models import ModelSpec

__all__ = [
    "SHARED",
    "CheckpointSpec",
    "ConfigError",
    "EnvSpec",
    "LoggingSpec",
    "OptimizerSpec",
    "PolicySpec",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "packaged_config",
]

#: The policy name that maps every agent group to one policy.
SHARED = "shared"


@dataclass
class EnvSpec:
    """Which env to train in, and how many replicas."""

    name: str
    """An env name (see :mod:`warpdrive.envs`): registered (``tag_gridworld``), an installed package's entry
    point, ``package.module:Class`` or ``path/to/file.py:Class`` (stored with the path made absolute)."""
    num_envs: int = bounded(64, ge=1)
    """Replicas stepped together (E)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """The env's own parameters (fields of its ``Config``), e.g. ``{num_taggers: 2, grid_length: 5}``."""
    start: Literal["random", "identical"] = "random"
    """Each replica starts from its own random state, or all from the config's start state."""
    launch: list[int] | None = None
    """``[threads per env, envs per block]`` of the env's CUDA kernels, a speed knob that never changes results
    (``warpdrive tune`` times the candidates); default: chosen from the agent count."""

    def __post_init__(self) -> None:
        # a relative file path must still name the same file when a run is evaluated from elsewhere
        if isinstance(self.name, str):
            self.name = canonical_name(self.name)


@dataclass
class _PolicyCommon:
    """One policy: the algorithm that trains it, its network and optimiser, and hyperparameters.

    Besides these fields, :class:`PolicySpec` has one section per registered algorithm, named like it
    (``ppo``, ``a2c``, ``ddpg``, ...) and holding that algorithm's ``Config``; only the chosen
    algorithm's section is used.
    """

    algorithm: str = "ppo"
    """``ppo``, ``a2c``, ``ddpg`` (Box actions only), ``random`` (a fixed uniform policy), or any other
    registered algorithm (``warpdrive.training.algorithms.ALGORITHMS``)."""
    model: ModelSpec = field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)

    @property
    def algorithm_config(self) -> Any:
        """The chosen algorithm's section (``self.ppo`` for ``algorithm: ppo``); ``None`` if it has none."""
        return getattr(self, self.algorithm, None)

    def validate(self, path: str) -> None:
        cls = ALGORITHMS.get(self.algorithm)
        if cls is None:
            raise ConfigError(f"{path}.algorithm",
                              f"expected one of {', '.join(repr(a) for a in ALGORITHMS)}, got {self.algorithm!r}")
        if self.model.critic_input == "global" and not cls.global_critic:
            if cls.centralised == "joint":
                reason = (f"{cls.name}'s critic is centralised already (it reads every agent of the policy, their "
                          "observations and actions) and takes no global state; leave critic_input local")
            else:
                reason = f"{cls.name} supports only a local critic"
            raise ConfigError(f"{path}.model.critic_input", reason)
        if self.model.recurrent != "none" and not cls.recurrent:
            recurrent = [name for name, other in ALGORITHMS.items() if other.recurrent]
            raise ConfigError(f"{path}.model.recurrent", f"{cls.name} supports only feed-forward models (none), got "
                              f"{self.model.recurrent!r}; recurrent policies: {', '.join(recurrent)}")


if TYPE_CHECKING:  # the type checker sees the common fields; each algorithm's section is read through algorithm_config
    PolicySpec = _PolicyCommon
else:
    PolicySpec = dataclasses.make_dataclass(
        "PolicySpec",
        [(name, cls.Config, field(default_factory=cls.Config))
         for name, cls in ALGORITHMS.items() if cls.Config is not None],
        bases=(_PolicyCommon,),
    )
    PolicySpec.__module__ = __name__
    PolicySpec.__doc__ = _PolicyCommon.__doc__


@dataclass
class LoggingSpec:
    """Where results go and what is shown."""

    root: str = "runs"
    """Directory under which each run gets ``<env>-<algorithm>-<timestamp>/``."""
    run_dir: str | None = None
    """Use this run directory instead (resumes append to it)."""
    tensorboard: bool = True
    """Write TensorBoard event files under ``<run_dir>/tensorboard``."""
    progress: bool = True
    """Show a progress bar (env-steps/s, mean episodic return per group) on stderr."""
    learning_curve: bool = True
    """Plot mean episodic return per group against env-steps to ``learning_curve.png`` at the end."""


@dataclass
class CheckpointSpec:
    """When to save checkpoints under ``<run_dir>/checkpoints``."""

    every: int = bounded(0, ge=0)
    """Iterations between checkpoints; 0: none during training."""
    at_end: bool = True
    """Save one when training ends."""
    keep: int = bounded(2, ge=1)
    """How many of the newest checkpoints to keep."""
    replay_buffer: bool = True
    """Include off-policy replay buffers (needed for an exact resume; they can be large)."""


@dataclass
class TrainConfig:
    """A training run."""

    env: EnvSpec
    total_env_steps: int = bounded(dataclasses.MISSING, ge=1)
    """Env-steps to train for (one step of one env replica, all its agents, counts as one)."""
    policies: dict[str, PolicySpec] = field(default_factory=lambda: {SHARED: PolicySpec()})
    """One policy per agent group of the env, keyed by group name; or one named ``shared`` for all."""
    rollout_length: int = bounded(128, ge=1)
    """T: steps per env per iteration (an iteration consumes ``T * num_envs`` env-steps)."""
    seed: int = bounded(0, ge=0, lt=2**64)
    """Seeds torch, NumPy, Python's ``random`` and the env's random streams (an integer in ``[0, 2**64)``)."""
    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    mixed_precision: Literal["none", "tf32", "bf16"] = "none"
    """CUDA only (ignored on the CPU): ``tf32`` lets float32 matrix products use TensorFloat-32 (about 10
    significant bits, several times faster on recent GPUs); ``bf16`` also runs forward passes under bf16
    autocast."""
    cuda_graph: bool = True
    """Capture one rollout step in a CUDA graph and replay it, and each policy's update from the second on
    where its algorithm allows (PPO without ``target_kl``, A2C); CUDA only, eager on the CPU."""
    torch_threads: int | None = bounded(None, ge=1, le=1024)
    """Threads for PyTorch's CPU operations (``torch.set_num_threads``); ``null`` keeps PyTorch's default.
    With small models on few cores, 1 is often several times faster: the env's Numba threads and
    PyTorch's would otherwise compete for the same cores."""
    guard_nonfinite: bool = True
    """Stop the run with :class:`~warpdrive.training.guard.NonFiniteError` when a policy's observations,
    rewards, losses, gradient norm or weights hold a NaN or inf (checked once per iteration, in the
    metrics' device -> host transfer); nothing of that iteration is logged or checkpointed. ``false``
    trains on regardless."""
    logging: LoggingSpec = field(default_factory=LoggingSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)

    def validate(self, path: str) -> None:
        if not self.policies:
            raise ConfigError("policies", "expected at least one policy")
        if SHARED in self.policies and len(self.policies) > 1:
            raise ConfigError("policies", f"a {SHARED!r} policy serves every group; remove the others "
                              f"({', '.join(k for k in self.policies if k != SHARED)}) or rename it")
        device = self.device
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ConfigError("device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def packaged_config(name: str) -> Path:
    """The training config shipped with env ``name`` (``warpdrive/envs/<name>/train.yaml``); ``<env>/<variant>``
    names another config shipped beside it (``simple_spread/qmix``: ``warpdrive/envs/simple_spread/qmix.yaml``)."""
    env, _, variant = name.partition("/")
    path = Path(str(resources.files("warpdrive.envs").joinpath(env).joinpath(f"{variant or 'train'}.yaml")))
    if not path.is_file():
        shipped = sorted(p.parent.name if p.stem == "train" else f"{p.parent.name}/{p.stem}"
                         for p in Path(str(resources.files("warpdrive.envs"))).glob("*/*.yaml"))
        raise FileNotFoundError(f"no config file {name!r} and no packaged config of that name; "
                                f"packaged: {', '.join(shipped)}")
    return path


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``key.path=value`` overrides in the raw config dict (in place; returned for chaining).

    Values are parsed as YAML scalars (``0.1``, ``true``, ``null``, ``[64, 64]``); missing intermediate
    mappings are created, so ``policies.runner.algorithm=random`` works on a config without ``runner``.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(key or item, f"an override must look like key.path=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(key, f"cannot parse value {text!r}: {_yaml_problem(err)}") from None
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), f"is {child!r}, not a mapping: cannot set {parts[i + 1]!r}")
            node = child
        node[parts[-1]] = value
    return data


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Load a :class:`TrainConfig`.

    Args:
        source: a YAML file, the name of an env with a packaged config (``tag_gridworld``), a dict, or
            any other env name (``path/to/file.py:Class``, ``package.module:Class``, an entry point's
            name): the config is then that env with every default (one shared PPO policy) and
            ``total_env_steps`` must come from ``overrides``.
        overrides: ``key.path=value`` strings applied on top.

    Raises:
        ConfigError: naming the key path of an unknown key, a missing required key or a bad value.
    """
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = _read_config(str(source))
    apply_overrides(data, overrides or [])
    if "total_env_steps" not in data and data.get("env", {}).get("name") == source:
        raise ConfigError("total_env_steps", f"missing required key: {source!r} has no config file, so give "
                          "total_env_steps=N (and any other setting) on the command line")
    return from_dict(TrainConfig, data)


def _read_config(source: str) -> dict[str, Any]:
    path = Path(source)
    if not path.is_file():
        try:
            path = packaged_config(source)
        except FileNotFoundError as err:
            if ":" in source or source in available():  # an env without a config of its own: all defaults
                return {"env": {"name": source}}
            raise FileNotFoundError(f"{err}; nor an env name ('path/to/file.py:Class', 'package.module:Class' or "
                                    "an installed one: see `warpdrive envs`)") from None
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ConfigError("", f"{path} is not valid YAML: {_yaml_problem(err)}") from None
        except UnicodeDecodeError as err:
            raise ConfigError("", f"{path} is not a text file: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong, and where (line and column, from 1)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(err).split())


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain data (what ``config.yaml`` in a run directory holds)."""
    return to_dict(config)
