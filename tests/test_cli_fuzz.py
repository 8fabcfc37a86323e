"""Every user error of the ``warpdrive`` command, on every verb, is one line on stderr and exit status 2, never
a traceback: malformed YAML, wrong types, unknown keys, negative sizes, NaN and inf, bad arguments, missing
files, more env replicas than fit in memory. ``main()`` runs in this process, and each bad input is refused
before an env is built or a kernel compiled; the property tests give config loading arbitrary overrides
and YAML text.

Wrong action tensors at the API boundary (``env.step(actions)``, or values written into ``env.actions``), swept
generatively over every registered env on the CPU: a wrong type, shape or dtype, out-of-range indices, int64
indices beyond int32, NaN and inf (and finite values out of bounds) for Box actions, with the host check
(``validate=True``) and with only the step kernel's check. Each is one error line naming the bad value (its
index) and what was expected. (tests/core/test_actions.py and the contract's ``actions`` check test the same
checks at fixed inputs.)"""

from __future__ import annotations

import functools
import importlib.util
import math
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warpdrive.cli import main
from warpdrive.core.actions import INT32_LIMIT, InvalidActionError
from warpdrive.core.env import Env
from warpdrive.core.sampling import discrete_choices
from warpdrive.envs import REGISTRY, env_class
from warpdrive.training.config import ConfigError, load_config

BAD_YAML = {
    "nested.yaml": "env: {name: tag_gridworld}\ntotal_env_steps: 10: 20\n",
    "unclosed.yaml": "env: [1, 2\n",
    "tab.yaml": "env:\n\tname: cartpole\n",
    "list.yaml": "- env\n- total_env_steps\n",
    "types.yaml": "env: {name: cartpole, num_envs: many}\ntotal_env_steps: 100\n",
    "unknown.yaml": "env: {name: cartpole}\ntotal_env_steps: 100\nlearning_rate: 0.1\n",
}
HUGE = 10**13

# (argv, what the one line of stderr says); argv paths are relative to a directory holding BAD_YAML's files
CASES = [
    # malformed YAML: files and override values
    (["train", "nested.yaml"], "nested.yaml is not valid YAML: mapping values are not allowed here (line 2, column 20"),
    (["train", "unclosed.yaml"], "unclosed.yaml is not valid YAML: expected ',' or ']'"),
    (["train", "tab.yaml"], "tab.yaml is not valid YAML: found character '\\t' that cannot start any token (line 2"),
    (["train", "list.yaml"], "list.yaml must hold a mapping of settings, got list"),
    (["train", "binary.yaml"], "binary.yaml is not a text file"),
    (["train", "cartpole", "env.kwargs.initial_state=[0.1, 0.2"], "env.kwargs.initial_state: cannot parse value"),
    (["bench", "--config", "nested.yaml", "--iterations", "0"], "nested.yaml is not valid YAML"),
    # wrong types
    (["train", "types.yaml"], "env.num_envs: expected an integer >= 1, got 'many'"),
    (["train", "tag_gridworld", "total_env_steps=1.5"], "total_env_steps: expected an integer >= 1, got 1.5"),
    (["train", "tag_gridworld", "env=3"], "env: expected a mapping of EnvSpec settings, got 3"),
    (["train", "tag_gridworld", "logging.progress=maybe"], "logging.progress: expected true or false, got 'maybe'"),
    (["train", "tag_gridworld", "env.kwargs.num_taggers=1.5"],
     "env.kwargs.num_taggers: expected an integer >= 1, got 1.5"),
    (["train", "tag_gridworld", "env.num_envs.x=3"], "env.num_envs: is 64, not a mapping: cannot set 'x'"),
    (["train", "tag_gridworld", "env.start=sideways"], "env.start: expected one of 'random', 'identical'"),
    (["train", "tag_gridworld", "device=tpu"], "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["bench", "--device", "tpu", "--iterations", "0"], "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    # unknown keys
    (["train", "unknown.yaml"], "learning_rate: unknown key; known keys: env, total_env_steps"),
    (["train", "tag_gridworld", "policies.taggers.ppo.clip=1"], "policies.taggers.ppo.clip: unknown key"),
    (["train", "tag_gridworld", "env.kwargs.speed=2"], "env.kwargs.speed: unknown key; known keys: num_taggers"),
    (["train", "tag_gridworld", "policies.nobody.algorithm=ppo"], "tag_gridworld has no agent group 'nobody'"),
    (["train", "tag_gridworld", "policies.taggers.algorithm=sac"], "policies.taggers.algorithm: expected one of"),
    (["bench", "tag_gridworld", "--iterations", "0", "env.kwargs.speed=2"], "speed: unknown key; known keys"),
    (["check", "tag_gridworld", "speed=2"], "speed: unknown key; known keys: num_taggers"),
    # negative and zero sizes
    (["train", "tag_gridworld", "env.num_envs=-1"], "env.num_envs: expected an integer >= 1, got -1"),
    (["train", "tag_gridworld", "rollout_length=0"], "rollout_length: expected an integer >= 1, got 0"),
    (["train", "tag_gridworld", "total_env_steps=-5"], "total_env_steps: expected an integer >= 1, got -5"),
    (["train", "tag_gridworld", "checkpoint.keep=0"], "checkpoint.keep: expected an integer >= 1, got 0"),
    (["train", "tag_gridworld", "policies.taggers.model.hidden_sizes=[-4]"], "expected positive layer widths"),
    (["train", "tag_gridworld", "env.kwargs.grid_length=-3"],
     "env.kwargs.grid_length: expected an integer >= 2 and <= 32767, got -3"),
    (["bench", "--envs", "16", "-3"], "--envs: expected an integer >= 1, got -3"),
    (["bench", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["bench", "--repeats", "0"], "--repeats: expected an integer >= 1, got 0"),
    (["bench", "--iterations", "-1"], "--iterations: expected an integer >= 0, got -1"),
    (["tune", "cartpole", "--margin", "0"], "--margin: expected a fraction in (0, 1], got 0.0"),
    (["train", "cartpole", "--seeds", "0"], "--seeds: expected an integer >= 1, got 0"),
    (["train", "cartpole", "--seeds", "2", "--resume", "run"], "--seeds: starts new runs: resume each seed's run"),
    (["tune", "cartpole", "--margin", "1.5"], "--margin: expected a fraction in (0, 1], got 1.5"),
    (["tune", "cartpole", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["train", "cartpole", "env.launch=[0, 1]"], "env.launch: expected [threads per env, envs per block], each >= 1"),
    (["train", "cartpole", "env.launch=[32, 1, 1]"], "env.launch: expected [threads per env, envs per block]"),
    (["eval", "run", "--episodes", "0"], "--episodes: expected an integer >= 1, got 0"),
    (["render", "run", "--out", "a.gif", "--fps", "-1"], "--fps: expected an integer >= 1, got -1"),
    (["check", "cartpole", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["check", "tag_gridworld", "num_taggers=-2"], "num_taggers: expected an integer >= 1, got -2"),
    # NaN and inf
    (["train", "tag_gridworld", "policies.taggers.optimizer.lr=.inf"], "optimizer.lr: expected a finite float > 0"),
    (["train", "tag_gridworld", "policies.taggers.optimizer.lr=.nan"], "optimizer.lr: expected a finite float > 0"),
    (["train", "tag_gridworld", "policies.taggers.ppo.vf_coef=.inf"], "ppo.vf_coef: expected a"),
    (["train", "tag_gridworld", "env.kwargs.grid_length=.nan"],
     "env.kwargs.grid_length: expected an integer >= 2 and <= 32767, got nan"),
    (["train", "pendulum", "env.kwargs.g=.inf"],
     "env.kwargs.g: expected a finite float >= -1e+12 and <= 1e+12, got inf"),
    (["check", "pendulum", "g=.nan"], "g: expected a finite float >= -1e+12 and <= 1e+12, got nan"),
    (["train", "acrobot", "env.start=identical", "env.kwargs.initial_state=[0, 0, 0, 1e6]"],
     "env.kwargs.initial_state[3]: expected a value in [-28.2743, 28.2743] (the state space), got 1000000.0"),
    (["train", "tag_continuous", "env.kwargs.num_acceleration_levels=2147483647"],
     "env.kwargs.num_acceleration_levels: expected an integer >= 0 and <= 65536, got 2147483647"),
    (["train", "cartpole", "torch_threads=100000"], "torch_threads: expected an integer >= 1 and <= 1024, got 100000"),
    # bad arguments
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    (["train"], "CONFIG: missing: give a YAML file"),
    (["train", "tag_gridworld", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "tag_gridworld", "total_env_steps"], "an override must look like key.path=value"),
    (["train", "tag_gridworld", "=3"], "an override must look like key.path=value, got '=3'"),
    (["eval"], "the following arguments are required: checkpoint"),
    (["eval", "run", "--episodes", "many"], "argument --episodes: invalid int value: 'many'"),
    (["render", "run"], "the following arguments are required: --out"),
    (["render", "run", "--out", "episode.png"], "--out: the output must end in .gif or .mp4, got 'episode.png'"),
    (["bench", "--envs"], "argument --envs: expected at least one argument"),
    (["envs", "tag_gridworld", "extra"], "unrecognized arguments: extra"),
    (["check"], "the following arguments are required: env"),
    # missing files and names
    (["train", "missing.yaml"], "no config file 'missing.yaml' and no packaged config of that name"),
    (["train", "tag_gridworld", "--resume", "missing_run"], "no checkpoint found at missing_run"),
    (["eval", "missing_run"], "no checkpoint found at missing_run"),
    (["render", "missing_run", "--out", "episode.gif"], "no checkpoint found at missing_run"),
    (["bench", "--config", "missing.yaml"], "no config file 'missing.yaml'"),
    (["bench", "no_such_env"], "no config file 'no_such_env'"),
    (["envs", "no_such_env"], "unknown env 'no_such_env'"),
    (["check", "no_such_env"], "unknown env 'no_such_env'"),
    (["tune", "no_such_env"], "no config file 'no_such_env'"),
    (["train", "no_such_module:Env", "total_env_steps=10"], "module 'no_such_module' does not import"),
    # more replicas than the memory holds: the env's check, before it allocates
    (["train", "tag_gridworld", f"env.num_envs={HUGE}"], f"env.num_envs: TagGridWorld with num_envs={HUGE}"),
    (["bench", "--envs", str(HUGE), "--iterations", "0"], f"TagGridWorld with num_envs={HUGE}"),
]


@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    for name, text in BAD_YAML.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.yaml").write_bytes(b"env:\x00\xff\xfe\x80")
    (tmp_path / "run").mkdir()  # eval/render's checkpoint: the argument check comes first
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv) or "(nothing)" for argv, _ in CASES])
def test_user_errors_are_one_line_with_exit_status_2(bad_files, capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert re.match(r"warpdrive( \w+)?: error: ", line) and message in line, line
    assert out == ""


def test_an_mp4_without_a_video_backend_is_refused_before_any_episode(bad_files, capsys, monkeypatch) -> None:
    """Without imageio-ffmpeg or PyAV, ``--out episode.mp4`` is one line before a checkpoint is even looked for."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("imageio_ffmpeg", "av") else find_spec(name, *args))
    assert main(["render", "run", "--out", "episode.mp4"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == ("warpdrive render: error: --out: writing episode.mp4 needs a video backend for imageio (pip "
                    "install imageio-ffmpeg or av); .gif needs none")


KEYS = st.sampled_from(["env.num_envs", "env.kwargs.grid_length", "env.kwargs.num_taggers", "env.start",
                        "total_env_steps", "rollout_length", "seed", "device", "torch_threads", "checkpoint.keep",
                        "policies.taggers.optimizer.lr", "policies.taggers.ppo.clip_coef",
                        "policies.taggers.model.hidden_sizes", "policies.runner.algorithm", "logging.progress",
                        "env", "policies", "policies.taggers", "nonsense.key"])
VALUES = st.one_of(st.text(max_size=12), st.integers(-2**70, 2**70).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from([".nan", ".inf", "-.inf", "null", "[]", "{}", "[1, -2]", "{a: 1}", "true", "'",
                                    "*x"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, VALUES), max_size=3))
def test_any_override_loads_or_is_a_config_error(overrides: list[tuple[str, str]]) -> None:
    """Arbitrary override values: a config, or a ConfigError in one line naming a key (the env's own
    parameters are checked when it is built: see CASES)."""
    try:
        load_config("tag_gridworld", [f"{key}={value}" for key, value in overrides])
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith(f"{err.path or '<config>'}: "), err


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=60))
def test_any_yaml_text_loads_or_is_a_config_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """Arbitrary text as a config file (with a valid env): a config, or a ConfigError in one line."""
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text)
    try:
        load_config(str(path), ["env.name=cartpole", "total_env_steps=10"])
    except ConfigError as err:
        assert "\n" not in str(err), err


# --------------------------------------------------------------------------------------------------
# wrong action tensors at the API boundary

#: every registered env as configured by default, and MPE's Box actions
ACTION_ENVS = [(name, {}) for name in sorted(REGISTRY)] + [("simple_spread", {"continuous_actions": True})]
#: dtypes no action buffer accepts
NEVER_ACTIONS = [torch.bool, torch.float64, torch.float16, torch.bfloat16, torch.complex64]
INTEGER_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]


@functools.cache
def _action_env(name: str, overrides: tuple[tuple[str, object], ...], validate: bool) -> Env:
    """One CPU env per case, reused by the examples (a refused or faulty step leaves it usable)."""
    env = env_class(name)(num_envs=3, backend="cpu", seed=0, validate=validate, **dict(overrides))
    env.reset(seed=0)
    return env


def _bad_shapes(shape: tuple[int, ...]) -> st.SearchStrategy[tuple[int, ...]]:
    accepted = {shape} | ({shape[:2]} if shape[2] == 1 else set())
    return st.lists(st.integers(0, 4), max_size=4).map(tuple).filter(lambda s: s not in accepted)


def _choices(space: gym.spaces.Space, head: int) -> int:
    choices = discrete_choices(space)
    assert choices is not None
    return int(choices[head])


def _bad_values(space: gym.spaces.Space, head: int, dtype: torch.dtype, validate: bool) -> st.SearchStrategy:
    """Values of ``dtype`` outside ``space`` at ``head`` that the check of this mode refuses."""
    if dtype == torch.float32:
        nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
        if not validate:  # a finite value out of bounds is the env's to clip: only the host check refuses it
            return nonfinite
        low, high = float(space.low.reshape(-1)[head]), float(space.high.reshape(-1)[head])
        finite = st.floats(width=32, allow_nan=False, allow_infinity=False).filter(lambda v: not low <= v <= high)
        return st.one_of(nonfinite, finite)
    info, n = torch.iinfo(dtype), _choices(space, head)
    edges = [v for v in (-1, n, INT32_LIMIT - 1, -INT32_LIMIT, 2**32 + 1, 2**63 - 1)
             if info.min <= v <= info.max and not 0 <= v < n]
    below = st.integers(info.min, -1) if info.min < 0 else st.nothing()
    return st.one_of(below, st.integers(n, info.max), st.sampled_from(edges))


def _expected_action_error(env: Env, where: tuple[int, int, int], value: float) -> tuple[type, str]:
    """The error type and the text it must hold for the bad action ``value`` at ``where`` (the first one)."""
    space = env.single_action_space()
    e, a, h = where
    box = isinstance(space, gym.spaces.Box)
    if box:
        shown = str(float(np.float32(value)))
    elif not env.validate and not -INT32_LIMIT < value < INT32_LIMIT - 1:  # saturated into the int32 buffer
        shown = f"{-INT32_LIMIT if value < 0 else INT32_LIMIT - 1} (or beyond int32)"
    else:
        shown = str(int(value))
    if env.validate:
        bounds = (f"a value in [{float(space.low.reshape(-1)[h])}, {float(space.high.reshape(-1)[h])}]" if box
                  else f"0 <= index < {_choices(space, h)}")
        return ValueError, f"action out of range: actions[{e}, {a}, {h}] = {shown}, expected {bounds}"
    bounds = "a finite value" if box else f"0 <= index < {_choices(space, h)}"
    return InvalidActionError, f"invalid action: actions[{e}, {a}, {h}] = {shown}, expected {bounds}"


def _one_line(err: BaseException, text: str) -> None:
    message = str(err)
    assert "\n" not in message and text in message, (message, text)


def _by_env(name: str, overrides: dict) -> object:
    """A case that runs in the pytest-xdist worker of the env's own tests (the ``xdist_group`` of
    tests/envs/test_contract.py): the env's kernels are then compiled once in the session, not once more here."""
    group = "mpe" if name.startswith("simple_") else name
    return pytest.param(name, overrides, marks=pytest.mark.xdist_group(group),
                        id=name + "".join(f"[{k}={v}]" for k, v in overrides.items()))


@pytest.mark.parametrize("validate", [True, False], ids=["host-check", "kernel-check"])
@pytest.mark.parametrize(("name", "overrides"), [_by_env(name, overrides) for name, overrides in ACTION_ENVS])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_wrong_action_tensors_are_one_line_errors_naming_the_value(name: str, overrides: dict, validate: bool,
                                                                   data: st.DataObject) -> None:
    env = _action_env(name, tuple(sorted(overrides.items())), validate)
    shape = tuple(env.actions.shape)
    buffer_dtype = env.actions.dtype
    space = env.single_action_space()
    good = env.sample_actions(torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), "seed")))
    t = env.store["t"].clone()
    kind = data.draw(st.sampled_from(["type", "shape", "dtype", "values", "buffer"]), "kind")

    if kind == "type":
        given_actions = data.draw(st.sampled_from([good.tolist(), good.numpy(), 0, "actions"]), "actions")
        with pytest.raises(TypeError) as caught:
            env.step(given_actions)
        _one_line(caught.value, f"actions must be a torch.Tensor of shape {shape}, got {type(given_actions).__name__}")
    elif kind == "shape":
        bad_shape = data.draw(_bad_shapes(shape), "shape")
        with pytest.raises(ValueError) as caught:
            env.step(torch.zeros(bad_shape, dtype=buffer_dtype))
        _one_line(caught.value, f"actions has shape {bad_shape}, expected {shape}")
    elif kind == "dtype":
        wrong = data.draw(st.sampled_from(NEVER_ACTIONS + (INTEGER_DTYPES if buffer_dtype == torch.float32 else [])),
                          "dtype")
        with pytest.raises(TypeError) as caught:
            env.step(good.to(wrong))
        _one_line(caught.value, f"actions has dtype {wrong}, expected one of: ")
    else:
        # one to three bad values at random places, the others valid: the first in (env, agent, head) order is named
        dtype = buffer_dtype if kind == "buffer" or buffer_dtype == torch.float32 else data.draw(
            st.sampled_from(INTEGER_DTYPES), "dtype")
        places = data.draw(st.lists(st.tuples(*(st.integers(0, n - 1) for n in shape)), min_size=1, max_size=3,
                                    unique=True), "places")
        bad = good.to(dtype)
        values = {}
        for where in places:
            values[where] = data.draw(_bad_values(space, where[2], dtype, validate), f"value at {where}")
            bad[where] = values[where]
        first = min(places)
        error, text = _expected_action_error(env, first, values[first])
        with pytest.raises(error) as caught:
            if kind == "buffer":  # written into the buffer, no copy: the same checks
                env.actions.copy_(bad)
                env.step()
            else:
                env.step(bad)
        _one_line(caught.value, text)
        if not validate:  # the kernel took a safe action and the step ran; the next valid step passes
            env.step(env.sample_actions(torch.Generator().manual_seed(1)))
            return
    assert torch.equal(env.store["t"], t), "a refused action stepped the env"
