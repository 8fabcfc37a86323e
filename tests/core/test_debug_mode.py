"""The author's mode (``Env(debug=True)`` or ``WARPDRIVE_DEBUG=1``): on the CPU every array index of the env's
kernels is checked, and one out of bounds raises ``IndexError`` naming the env and the program. And what the base
class checks of a user env's config without limits declared: every float, also in a tuple field, finite and not
zero only by rounding in float32.

The env below has a planted bug: its step reads one float past the agent's observation. Only bounds-checked
programs of it are ever run (an unchecked one would read the next agent's row, or past the array).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest

from warpdrive import Env, kernel_function, per_agent
from warpdrive.core.typed import ConfigError, bounded

OBS_SIZE = 2


@dataclass(frozen=True)
class _Config:
    episode_length: int = bounded(3, ge=1)
    offsets: tuple[float, ...] | None = None
    """No limits declared: the base class still checks each value in float32."""


@kernel_function
def _observe(env, agent, p, s):
    for j in range(OBS_SIZE):
        s.obs[env, agent, j] = np.float32(agent + j)


@kernel_function
def _read_past_the_observation(env, agent, p, s):
    s.rewards[env, agent] = s.obs[env, agent, OBS_SIZE]  # the planted bug: index OBS_SIZE is one past the end


class OnePastTheEnd(Env):
    name = "one_past_the_end"
    Config = _Config
    start_modes = ("random",)
    step_phases = (per_agent(_read_past_the_observation),)
    reset_phases = (per_agent(_observe),)

    @classmethod
    def num_agents_of(cls, config: _Config) -> int:
        return 2

    def single_action_space(self) -> gym.spaces.Space:
        return gym.spaces.Discrete(2)

    def observation_size(self) -> int:
        return OBS_SIZE


@pytest.mark.parametrize("how", ["debug=True", "WARPDRIVE_DEBUG=1"])
def test_the_bounds_checked_mode_catches_an_index_out_of_bounds(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "debug=True":
        monkeypatch.delenv("WARPDRIVE_DEBUG", raising=False)
        env = OnePastTheEnd(num_envs=3, backend="cpu", debug=True)
    else:
        monkeypatch.setenv("WARPDRIVE_DEBUG", "1")
        env = OnePastTheEnd(num_envs=3, backend="cpu")
    assert env.debug
    env.reset()  # the reset kernels index within bounds
    assert env.obs[:, :, 1].tolist() == [[1.0, 2.0]] * 3
    with pytest.raises(IndexError, match=r"^OnePastTheEnd: its step kernels indexed an array out of bounds "
                                         r"\(index is out of bounds\)$"):
        env.random_step()


@pytest.mark.parametrize(("value", "debug"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_warpdrive_debug_turns_the_mode_on_unless_unset_or_0(value: str | None, debug: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("WARPDRIVE_DEBUG", raising=False)
    else:
        monkeypatch.setenv("WARPDRIVE_DEBUG", value)
    assert OnePastTheEnd(backend="cpu").debug is debug
    assert OnePastTheEnd(backend="cpu", debug=not debug).debug is not debug  # the argument wins


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ((0.0, 1e39), r"^offsets\[1\]: expected a float finite in float32 \(\|value\| <= 3.403e\+38: the kernels "
                      r"compute in float32\), got 1e\+39$"),
        ((-1e39,), r"^offsets\[0\]: expected a float finite in float32"),
        ((1.0, 2.0, 1e-46), r"^offsets\[2\]: expected 0 or at least 1.401e-45 in magnitude \(it is 0 in float32, "
                            r"the kernels' precision\), got 1e-46$"),
    ],
)
def test_floats_in_tuple_fields_are_checked_in_float32(offsets: tuple[float, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OnePastTheEnd(backend="cpu", offsets=offsets)
    assert OnePastTheEnd(backend="cpu", offsets=(3.4e38, 0.0, -1.5e-45)).config.offsets == (3.4e38, 0.0, -1.5e-45)


def test_the_contract_checks_in_the_bounds_checked_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """``warpdrive check`` and :func:`~warpdrive.core.contract.check_env` step the env bounds-checked whether or
    not ``WARPDRIVE_DEBUG`` is set: the planted read fails the checks that step it, by name."""
    from warpdrive.core.contract import check_env

    monkeypatch.setenv("WARPDRIVE_DEBUG", "0")
    report = check_env(f"{__file__}:OnePastTheEnd", {}, ptx=False)
    failed = {result.name: result.detail for result in report.results if result.status == "fail"}
    message = "IndexError: OnePastTheEnd: its step kernels indexed an array out of bounds (index is out of bounds)"
    for name in ("seeding", "finite", "batch", "consistency[start='random']"):
        assert failed.get(name) == message, (name, failed)
