"""The env contract: what every env must satisfy, written once, checked on every available target.

:func:`check_env` runs every check on one env (a name as :func:`warpdrive.envs.env_class` takes it, and
parameters) and returns a :class:`ContractReport`; ``warpdrive check ENV [key=value ...]`` prints it, and
``tests/envs/test_contract.py`` runs it for every registered env. The checks:

- ``parameters``: an unknown parameter, ``episode_length=0`` and ``num_envs=0`` are refused with an error
  naming them;
- ``actions``: actions of the wrong shape or dtype and out-of-range actions are refused, naming the bad
  index, and the env does not step;
- ``seeding``: the same seed gives the same trajectory bit for bit; another seed another random start;
- ``finite``: observations, rewards and metrics stay finite over two episodes of random actions;
- ``batch``: a replica of a 3-env batch is bit-identical to a 1-env run given its actions (replica 0 with
  random starts, which are drawn per replica index; replica 2 with the identical start);
- ``render``: :meth:`~warpdrive.core.env.Env.render` returns an RGB picture;
- ``consistency[START]``: the CPU and the CUDA compilations agree step by step over two episodes
  (:func:`~warpdrive.core.checker.check_consistency`), for every start mode the env has and under each of
  its :attr:`~warpdrive.core.env.Env.code_variants`; the CUDA side is the GPU when there is one, else
  Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``). Bit for bit against the simulator, which computes with the
  CPU's arithmetic, for every env; against a real GPU bit for bit when the env declares
  :attr:`~warpdrive.core.env.Env.bit_identical_on_gpu`, else to
  :data:`~warpdrive.core.checker.GPU_TOLERANCE` (:func:`~warpdrive.core.checker.default_tolerance` chooses);
- ``ptx``: the kernels compile for the GPU (no GPU needed, only NVVM) without multiply-adds that the
  env did not ask for (when the env declares ``bit_identical_on_gpu``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from numba.core.errors import TypingError

from warpdrive.core.actions import InvalidActionError
from warpdrive.core.checker import check_consistency
from warpdrive.core.device import FMA_PTX_MARKER, cuda_available, simulator_enabled
from warpdrive.core.env import Env
from warpdrive.core.errors import typing_error_summary
from warpdrive.core.sampling import discrete_choices

__all__ = ["CHECKS", "CheckResult", "ContractReport", "check_env", "check_ptx", "consistency_cases",
           "cuda_backend", "shape_sweep"]

Status = Literal["pass", "fail", "skip"]

#: a multiply-add instruction in PTX
_FUSED = re.compile(r"\b(fma|mad)(\.[a-z]+)*\.f(16|32|64)\b")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` ``"pass"``, ``"fail"`` or ``"skip"`` (could not run here, with
    the reason in ``detail``); ``detail`` says what failed (e.g. the first divergence) or what was checked."""

    name: str
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def __str__(self) -> str:
        return f"{self.status.upper():4}  {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclasses.dataclass
class ContractReport:
    """Every check's result for one env."""

    env: str
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def __str__(self) -> str:
        failed = sum(result.status == "fail" for result in self.results)
        summary = "all checks pass" if not failed else f"{failed} of {len(self.results)} checks fail"
        return "\n".join([f"{self.env}: {summary}", *(f"  {result}" for result in self.results)])


class _Failed(Exception):
    """A check's expectation was not met; the message says how."""


def _run(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, "pass", check())
    except _Failed as failure:
        return CheckResult(name, "fail", str(failure))
    except TypingError as err:  # the env's code does not compile: where, in one line
        return CheckResult(name, "fail", typing_error_summary(err))
    except Exception as err:  # the env raised where it should not: that is the finding
        return CheckResult(name, "fail", f"{type(err).__name__}: {err}")


@contextmanager
def _expect(error: type[Exception], *names: str, what: str) -> Iterator[None]:
    """The block must raise ``error`` whose message contains every one of ``names``."""
    try:
        yield
    except TypingError:
        raise  # the env's code does not compile: reported by _run in one line
    except error as err:
        missing = [n for n in names if n not in str(err)]
        if missing:
            raise _Failed(f"{what}: the {type(err).__name__} does not name {', '.join(map(repr, missing))}: "
                          f"{err}") from err
        return
    except Exception as err:
        raise _Failed(f"{what}: expected a {error.__name__} naming {', '.join(map(repr, names))}, got "
                      f"{type(err).__name__}: {err}") from err
    raise _Failed(f"{what}: accepted without an error")


# --------------------------------------------------------------------------------------------------
# the checks; each takes the env class and its parameters (constructor keyword arguments)


def check_parameters(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    def run() -> str:
        with _expect(ValueError, "no_such_parameter", what="an unknown parameter"):
            cls(backend="cpu", **kwargs, no_such_parameter=1)
        with _expect(ValueError, "episode_length", what="episode_length=0"):
            cls(backend="cpu", **{**kwargs, "episode_length": 0})
        with _expect(ValueError, "num_envs", what="num_envs=0"):
            cls(backend="cpu", **{**kwargs, "num_envs": 0})
        with _expect(ValueError, "episode_length", what="episode_length=2**40"):
            cls(backend="cpu", **{**kwargs, "episode_length": 2**40})
        checked = "unknown parameter, episode_length=0 and 2**40, num_envs=0"
        floats = [f.name for f in dataclasses.fields(cls.Config) if isinstance(getattr(cls.Config(), f.name), float)]
        for name in floats:
            for value in (float("nan"), 1e39):
                with _expect(ValueError, name, what=f"{name}={value}"):
                    cls(backend="cpu", **{**kwargs, name: value})
        if floats:
            checked += f", NaN and 1e39 (not finite in float32) for {len(floats)} float parameters"
        return checked + " refused by name"

    return [_run("parameters", run)]


def _out_of_range(space: gym.spaces.Space, head: int) -> list[float]:
    """Values outside head ``head`` of ``space``."""
    if isinstance(space, gym.spaces.Box):
        return [float(space.high.reshape(-1)[head]) + 1.0, float("nan")]
    choices = discrete_choices(space)
    assert choices is not None  # a Box is handled above
    return [float(choices[head]), -1.0]


def check_actions(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    def run() -> str:
        env = cls(**{**kwargs, "num_envs": 2}, backend="cpu", validate=True)
        env.reset(seed=0)
        good = env.sample_actions(torch.Generator().manual_seed(0)).clone()
        envs, agents, heads = good.shape
        with _expect(ValueError, "actions", "shape", what="actions of the wrong shape"):
            env.step(torch.zeros(envs, agents + 1, heads, dtype=good.dtype))
        wrong = torch.int32 if good.dtype == torch.float32 else torch.float32
        with _expect(TypeError, "actions", "dtype", what=f"{wrong} actions"):
            env.step(torch.zeros_like(good, dtype=wrong))
        where = (envs - 1, agents - 1, heads - 1)
        for value in _out_of_range(env.single_action_space(), heads - 1):
            bad = good.clone()
            bad[where] = value
            with _expect(ValueError, f"actions[{where[0]}, {where[1]}, {where[2]}]", what=f"action {value}"):
                env.step(bad)
        if good.dtype != torch.float32:  # an index that wraps to a valid one in the int32 buffer
            wide = good.to(torch.int64)
            wide[where] = 2**32
            with _expect(ValueError, f"actions[{where[0]}, {where[1]}, {where[2]}]", what="int64 action 2**32"):
                env.step(wide)
        if int(env.store["t"].max()) != 0:
            raise _Failed("a refused action stepped the env")
        _check_actions_in_kernel(cls, kwargs, where)
        return ("wrong shape, wrong dtype and out-of-range actions refused by index; the env did not step; without "
                "the host check, the step kernel took a safe action and the error named the bad one")

    return [_run("actions", run)]


def _check_actions_in_kernel(cls: type[Env], kwargs: dict[str, Any], where: tuple[int, int, int]) -> None:
    """Without the host check (``validate=False``, the GPU's default), the step kernel's own check
    (``check_actions``) must replace each bad action by a safe one and name it."""
    env = cls(**{**kwargs, "num_envs": 2}, backend="cpu", validate=False)
    env.reset(seed=0)
    generator = torch.Generator().manual_seed(1)
    name = f"actions[{where[0]}, {where[1]}, {where[2]}]"
    space = env.single_action_space()
    if isinstance(space, gym.spaces.Box):
        values = [float("nan"), float("-inf")]  # (a finite value outside the bounds is the env's to clip)
    else:
        values = [*_out_of_range(space, where[2]), float(2**31 - 1), -float(2**31)]  # never read past a table
    for value in values:
        bad = env.sample_actions(generator).clone()  # (valid now, also where an action mask changes each step)
        bad[where] = value
        t = env.store["t"].clone()
        with _expect(InvalidActionError, name, what=f"action {value} with validate=False"):
            env.step(bad)
        if not bool(((env.store["t"] == t + 1) | env.store["done"]).all()):
            raise _Failed(f"with validate=False, the step with action {value} did not run (the kernel takes a safe "
                          f"action)")
    if env.action_dtype() != torch.float32:
        wide = env.sample_actions(generator).to(torch.int64)
        wide[where] = 2**32 + 1  # would wrap to the valid index 1 in the int32 buffer
        with _expect(InvalidActionError, name, "beyond int32", what="int64 action 2**32 + 1 with validate=False"):
            env.step(wide)
    env.step(env.sample_actions(generator))  # the records were cleared: valid actions pass


def _rollout(cls: type[Env], kwargs: dict[str, Any], seed: int, steps: int) -> list[tuple[str, torch.Tensor]]:
    """``(field, value)`` after reset and after each step of sampled actions, 3 replicas on the CPU."""
    env = cls(**{**kwargs, "num_envs": 3}, backend="cpu", seed=seed)
    generator = torch.Generator().manual_seed(0)
    out = [("obs", env.reset(seed=seed).clone())]
    for _ in range(steps):
        env.sample_actions(generator)
        obs, rewards, _, _, info = env.step()
        done = info["done"]
        out += [("obs", obs.clone()), ("rewards", rewards.clone()), ("done", done.clone()),
                ("final_obs", info["final_obs"][done].clone()), ("final_metrics", env.store["final_metrics"][done])]
    return out


def _default_steps(cls: type[Env], kwargs: dict[str, Any], steps: int | None) -> int:
    """Two whole episodes and a step (autoresets included), unless asked otherwise."""
    return steps if steps is not None else 2 * cls(**kwargs, backend="cpu").config.episode_length + 1


def check_seeding(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    def run() -> str:
        n = _default_steps(cls, kwargs, steps)
        first = _rollout(cls, kwargs, 5, n)
        for t, ((name, a), (_, b)) in enumerate(zip(first, _rollout(cls, kwargs, 5, n), strict=True)):
            same = torch.equal(a, b) or (a.is_floating_point() and a.shape == b.shape
                                         and torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
            if not same:  # (NaN where the other run has NaN is the same: the finite check reports NaNs)
                raise _Failed(f"the same seed gave different {name!r} (record {t} of the rollout)")
        if kwargs.get("start", "random") != "random" or "random" not in cls.start_modes:
            return f"same seed, same {n}-step trajectory (no random starts: other seeds not compared)"
        other = _rollout(cls, kwargs, 6, 0)[0][1]
        if torch.equal(first[0][1], other):
            raise _Failed("seeds 5 and 6 gave the same random start")
        return f"same seed, same {n}-step trajectory; another seed, another start"

    return [_run("seeding", run)]


def check_finite(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    def run() -> str:
        n = _default_steps(cls, kwargs, steps)
        for record, (name, value) in enumerate(_rollout(cls, kwargs, 0, n)):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = tuple(int(i) for i in (~torch.isfinite(value)).nonzero()[0])
                step = (record + 4) // 5  # the records: the reset's, then 5 per step
                raise _Failed(f"{name}{list(bad)} = {value[bad].item()} at step {step}")
        return f"obs, rewards, final_obs and metrics finite over {n} steps of random actions"

    return [_run("finite", run)]


def _first_difference(batch: Env, replica: int, alone: Env, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` in which replica ``replica`` of ``batch`` differs from ``alone``'s one replica (NaN
    where the other has NaN is the same: the finite check reports NaNs), or None."""
    for name in names:
        a, b = batch.store[name][replica], alone.store[name][0]
        if not torch.equal(a, b) and not (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                          and torch.equal(a.nan_to_num(), b.nan_to_num())):
            return name
    return None


def check_batch(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    def run() -> str:
        n = _default_steps(cls, kwargs, steps)
        replica = 2  # the last of 3; a lone replica seeded with replica_seed(2) must step as it does
        for start in cls.start_modes:
            batch = cls(**{**kwargs, "num_envs": 3, "start": start}, backend="cpu", seed=3)
            alone = cls(**{**kwargs, "num_envs": 1, "start": start}, backend="cpu", seed=batch.replica_seed(replica))
            generator = torch.Generator().manual_seed(1)
            for loop in ("given actions", "random_step"):
                batch.reset(seed=3 if loop == "given actions" else 4)
                alone.reset(seed=batch.replica_seed(replica))
                for step in range(n + 1):
                    if step > 0 and loop == "given actions":
                        actions = batch.sample_actions(generator)
                        batch.step()
                        alone.step(actions[replica:replica + 1].clone())
                    elif step > 0:
                        batch.random_step()
                        alone.random_step()
                    differs = _first_difference(batch, replica, alone, ("actions", "obs", "rewards", "done",
                                                                         "final_obs") if step else ("obs",))
                    if differs:
                        raise _Failed(f"{start} start, {loop}: replica {replica} of 3 differs from a run alone "
                                      f"(seeded with replica_seed({replica})) in {differs!r} at step {step}")
        return (f"{n} steps of given actions and {n} of random_step: replica {replica} of 3 bit-identical to a run "
                f"alone seeded with replica_seed({replica}) ({', '.join(cls.start_modes)} starts)")

    return [_run("batch", run)]


#: (replicas, agents) the shapes check runs: one replica, a prime number of them and more than a CUDA block's threads;
#: agent counts of one, below and above a warp, and more than a block's 256 threads (each where the env allows it)
SHAPES = ((1, 1), (7, 31), (3, 33), (257, 5), (2, 300))


def check_shapes(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    """At each of :data:`SHAPES` the env allows (:meth:`Env.config_for_agents`): random steps with autoresets give
    finite outputs, and the last replica is bit-identical to a lone run seeded with its ``replica_seed``."""

    def run_shape(num_envs: int, overrides: dict[str, Any]) -> Callable[[], str]:
        def run() -> str:
            shaped = {**kwargs, **overrides}
            n = _default_steps(cls, shaped, steps)
            batch = cls(**{**shaped, "num_envs": num_envs}, backend="cpu", seed=7)
            last = num_envs - 1
            alone = cls(**{**shaped, "num_envs": 1}, backend="cpu", seed=batch.replica_seed(last))
            batch.reset()
            alone.reset()
            for step in range(n + 1):
                for name in ("obs", "rewards", "done", "final_obs"):
                    value = batch.store[name]
                    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                        raise _Failed(f"{name} not finite at step {step}")
                differs = _first_difference(batch, last, alone, ("actions", "obs", "rewards", "done", "final_obs"))
                if differs:
                    raise _Failed(f"replica {last} differs from a run alone in {differs!r} at step {step}")
                batch.random_step()
                alone.random_step()
            return f"{n} random steps finite, replica {last} bit-identical to a run alone"

        return run

    return [_run(f"shape {num_envs} x {agents}", run_shape(num_envs, overrides))
            for num_envs, agents, overrides in shape_sweep(cls, kwargs)]


def shape_sweep(cls: type[Env], kwargs: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """``(replicas, agents, config overrides)`` of each of :data:`SHAPES` that ``cls`` allows with ``kwargs``
    (:meth:`Env.config_for_agents`); where it cannot have a shape's agent count, the replica count alone at its
    own agent count; each distinct (replicas, agents) once."""
    shapes = []
    seen: set[tuple[int, int]] = set()
    for num_envs, agents in SHAPES:
        overrides = cls.config_for_agents(agents)
        if overrides is None:  # not this many agents: the replica count alone, at the env's own agent count
            overrides, agents = {}, cls(**kwargs, backend="cpu").num_agents
        if (num_envs, agents) not in seen:
            seen.add((num_envs, agents))
            shapes.append((num_envs, agents, overrides))
    return shapes


def check_render(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    def run() -> str:
        env = cls(**{**kwargs, "num_envs": 2}, backend="cpu")
        env.reset(seed=0)
        env.step(env.sample_actions(torch.Generator().manual_seed(0)))
        picture = env.render(1)
        if not (isinstance(picture, np.ndarray) and picture.dtype == np.uint8 and picture.ndim == 3
                and picture.shape[2] == 3):
            raise _Failed(f"render() returned {type(picture).__name__} "
                          f"{getattr(picture, 'shape', '')} {getattr(picture, 'dtype', '')}, expected an RGB array "
                          "[height, width, 3] uint8")
        if picture.min() == picture.max():
            raise _Failed("render() returned a blank picture")
        drawn = "its own draw()" if type(env).draw is not Env.draw else "the default draw() (returns so far)"
        return f"an RGB picture {picture.shape[1]}x{picture.shape[0]}, by {drawn}"

    return [_run("render", run)]


def cuda_backend() -> Literal["cuda", "cudasim"] | None:
    """The backend that runs the CUDA compilation here: ``"cuda"`` on a GPU, ``"cudasim"`` under Numba's
    simulator, ``None`` when neither is available."""
    if simulator_enabled():
        return "cudasim"
    return "cuda" if cuda_available() else None


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items())


def consistency_cases(cls: type[Env], kwargs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, kwargs)`` for every start mode of the env under the given parameters and under each of its
    :attr:`~warpdrive.core.env.Env.code_variants` (duplicates removed)."""
    cases, seen = [], []
    for variant in ({}, *cls.code_variants):
        for start in cls.start_modes:
            case = {**kwargs, **variant, "start": start}
            if case not in seen:
                seen.append(case)
                cases.append((f"consistency[{_describe({'start': start, **variant})}]", case))
    return cases


def check_consistency_of(cls: type[Env], kwargs: dict[str, Any], steps: int | None = None) -> list[CheckResult]:
    backend = cuda_backend()
    results = []
    for label, case in consistency_cases(cls, kwargs):
        if backend is None:
            results.append(CheckResult(label, "skip", "no CUDA target here: no GPU, and Numba's simulator is off "
                                                      "(NUMBA_ENABLE_CUDASIM=1)"))
            continue

        def run(case: dict[str, Any] = case) -> str:
            case = {**case, "num_envs": 2, "seed": 4}
            report = check_consistency(cls(**case, backend="cpu"), cls(**case, backend=backend), steps=steps, seed=2)
            if not report.ok:
                raise _Failed(f"cpu vs {backend}: {report}")
            if report.episodes_finished == 0:
                raise _Failed(f"no episode ended in {report.steps} steps: autoresets were not compared")
            return f"cpu vs {backend}: {report}"

        results.append(_run(label, run))
    return results


#: the checks that run in the calling process, by name: ``check(env_class, kwargs, steps=None) -> results``
#: (``steps`` is used by those that step the env)
CHECKS: dict[str, Callable[[type[Env], dict[str, Any], int | None], list[CheckResult]]] = {
    "parameters": check_parameters,
    "actions": check_actions,
    "seeding": check_seeding,
    "finite": check_finite,
    "batch": check_batch,
    "shapes": check_shapes,
    "render": check_render,
    "consistency": check_consistency_of,
}


# --------------------------------------------------------------------------------------------------
# PTX: compiled by Numba's real CUDA target (a child process where this one runs the simulator)


def _ptx_of(name: str, kwargs: dict[str, Any]) -> str:
    from warpdrive.envs import make

    env = make(name, **{**kwargs, "num_envs": 2}, device="cpu")
    for program, ptx in env.cuda_ptx().items():
        if ".entry" not in ptx:
            raise _Failed(f"the {program} kernel's PTX has no entry point")
        if not env.bit_identical_on_gpu:
            continue  # libdevice's sin/cos fuse internally, by the env's choice (declared on the class)
        fused = [line.strip() for line in ptx.splitlines() if _FUSED.search(line) and FMA_PTX_MARKER not in line]
        if fused:
            raise _Failed(f"the {program} kernel has {len(fused)} fused multiply-adds the env did not ask for, "
                          f"e.g. {fused[:2]} (libdevice functions such as sinf fuse internally: use "
                          "warpdrive.core.exactmath, or declare bit_identical_on_gpu = False)")
    return "step and reset compile for sm_90" + (", no contracted multiply-adds" if env.bit_identical_on_gpu else "")


def _ptx_here(cases: list[tuple[str, dict[str, Any], str]]) -> list[CheckResult]:
    results = []
    for name, kwargs, label in cases:
        try:
            results.append(CheckResult(label, "pass", _ptx_of(name, kwargs)))
        except _Failed as failure:
            results.append(CheckResult(label, "fail", str(failure)))
        except TypingError as err:
            results.append(CheckResult(label, "fail", typing_error_summary(err)))
        except Exception as err:
            text = f"{type(err).__name__}: {err}"
            if "nvvm" in text.lower():  # the compiler is not installed: nothing is known about the env
                results.append(CheckResult(label, "skip", f"no NVVM here (pip install 'numba-cuda[cu13]'): {text}"))
            else:
                results.append(CheckResult(label, "fail", text))
    return results


def check_ptx(cases: list[tuple[str, dict[str, Any], str]]) -> list[CheckResult]:
    """Compile each ``(env name, kwargs, label)`` (:func:`ptx_cases`) for the GPU, in one child process when
    this process runs Numba's simulator (it replaces the CUDA target). ``kwargs`` must be JSON values."""
    if not simulator_enabled():
        return _ptx_here(cases)
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    child = subprocess.run([sys.executable, "-m", "warpdrive.core.contract"], input=json.dumps(cases),
                           env=environment, capture_output=True, text=True)
    if child.returncode != 0:
        return [CheckResult("ptx", "fail", f"the compiling process failed: {child.stderr[-2000:]}")]
    return [CheckResult(**result) for result in json.loads(child.stdout)]


def ptx_cases(name: str, kwargs: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """``(name, kwargs, label)`` of the configurations whose PTX is checked: the given one and each code
    variant."""
    cls = _env_class(name)
    cases: list[tuple[str, dict[str, Any], str]] = []
    for variant in ({}, *cls.code_variants):
        case = {k: v for k, v in {**kwargs, **variant}.items() if k != "start"}
        if all(case != seen for _, seen, _ in cases):
            cases.append((name, case, f"ptx[{_describe(variant)}]" if variant else "ptx"))
    return cases


def _env_class(name: str) -> type[Env]:
    from warpdrive.envs import env_class

    return env_class(name)


def check_env(name: str, kwargs: dict[str, Any] | None = None, *, steps: int | None = None,
              ptx: bool = True, debug: bool = True) -> ContractReport:
    """Run every check of the contract on env ``name`` (a registered name, ``package.module:Class`` or
    ``path/to/file.py:Class``) built with constructor keyword arguments ``kwargs``.

    ``steps``: steps of the consistency, seeding and finiteness runs (default: two episodes and one step).
    ``ptx``: also compile for the GPU (seconds to minutes per env).
    ``debug``: the CPU runs check every array index (:class:`~warpdrive.core.env.Env`'s ``debug``): an index
    out of bounds fails the checks that step the env.
    """
    kwargs = dict(kwargs or {})
    cls = _env_class(name)
    cls(**kwargs, backend="cpu")  # parameters the env refuses: the caller's error, raised as it is
    checked = {**kwargs, "debug": debug}
    results = [result for check in CHECKS.values() for result in check(cls, checked, steps)]
    if ptx:
        results += check_ptx(ptx_cases(name, kwargs))
    return ContractReport(name, results)


def _main() -> None:
    """The PTX child of :func:`check_ptx`: cases as JSON on stdin, results as JSON on stdout."""
    cases = [(name, kwargs, label) for name, kwargs, label in json.loads(sys.stdin.read())]
    print(json.dumps([dataclasses.asdict(result) for result in _ptx_here(cases)]))


if __name__ == "__main__":
    _main()
