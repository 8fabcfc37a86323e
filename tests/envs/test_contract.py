"""The env contract (:mod:`warpdrive.core.contract`) for every registered env: each check on the CPU and, for
CPU-vs-CUDA consistency, on the CUDA target here (the GPU, else Numba's simulator); PTX for the GPU.

An env added to the registry is covered by adding nothing. Compiled kernels are cached per env class, target
and code variant for the session, so each env compiles once per target however many checks build it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive import ArraySpec, Env, kernel_function, per_env
from warpdrive.core import contract
from warpdrive.core import env as env_module
from warpdrive.core.random import uniform
from warpdrive.envs import REGISTRY, env_class

ENVS = sorted(REGISTRY)


def by_env(name: str) -> object:
    """``name`` as a parameter whose tests run in one pytest-xdist worker with the env's own test file (see
    ``xdist_group`` there): each compiled program is then compiled once, not by two workers at the same time."""
    return pytest.param(name, marks=pytest.mark.xdist_group("mpe" if name.startswith("simple_") else name))
#: short episodes: two of them, and the autoresets after each, in 25 steps
PARAMETERS = {"episode_length": 12}


@pytest.mark.parametrize("check", list(contract.CHECKS))
@pytest.mark.parametrize("name", [by_env(name) for name in ENVS])
def test_contract(name: str, check: str, gpu_backend: str) -> None:
    assert contract.cuda_backend() == gpu_backend  # consistency runs here, not skipped
    results = contract.CHECKS[check](env_class(name), dict(PARAMETERS), None)
    assert results
    for result in results:
        assert result.status == "pass", str(result)
        if check == "consistency" and (gpu_backend == "cudasim" or env_class(name).bit_identical_on_gpu):
            # the simulator computes with the CPU's arithmetic: bit for bit for every env, no tolerance
            assert result.detail.endswith("(exact)"), str(result)


def test_only_a_real_gpu_gets_a_tolerance_and_only_for_envs_not_bit_identical() -> None:
    """:func:`~warpdrive.core.checker.default_tolerance`: CPU vs CPU and CPU vs the simulator are compared bit
    for bit for every env; a real GPU gets ``GPU_TOLERANCE`` only for an env that does not promise bit-identity."""
    from types import SimpleNamespace

    from warpdrive.core.checker import GPU_TOLERANCE, default_tolerance

    for identical in (True, False):  # (every packaged env promises bit-identity; a user's env may not)
        cpu, sim, gpu = (SimpleNamespace(backend=b, bit_identical_on_gpu=identical) for b in ("cpu", "cudasim", "cuda"))
        assert default_tolerance(cpu, cpu) == default_tolerance(cpu, sim) == default_tolerance(sim, cpu) == 0.0  # type: ignore[arg-type]
        expected = 0.0 if identical else GPU_TOLERANCE
        assert default_tolerance(cpu, gpu) == default_tolerance(gpu, cpu) == expected  # type: ignore[arg-type]
    assert all(env_class(name).bit_identical_on_gpu for name in ENVS)


@pytest.fixture(scope="session")
def ptx_results() -> dict[str, list[contract.CheckResult]]:
    """Every registered env's PTX checks, compiled in one process (a child one under the simulator)."""
    cases = [case for name in ENVS for case in contract.ptx_cases(name, {})]
    results = contract.check_ptx(cases)
    assert len(results) == len(cases), [str(r) for r in results]
    by_env: dict[str, list[contract.CheckResult]] = {name: [] for name in ENVS}
    for (name, _, _), result in zip(cases, results, strict=True):
        by_env[name].append(result)
    return by_env


@pytest.mark.xdist_group("ptx")  # one worker compiles every env's PTX (the session fixture), once
@pytest.mark.parametrize("name", ENVS)
def test_ptx(name: str, ptx_results: dict[str, list[contract.CheckResult]]) -> None:
    for result in ptx_results[name]:
        assert result.status == "pass", str(result)


@kernel_function
def _walk(env, p, s):
    action = s.actions[env, 0, 0]
    s.position[env] += np.float32(action) - np.float32(1.0)
    # a planted bug: the observation depends on how many replicas are stepped together
    s.obs[env, 0, 0] = s.position[env] + np.float32(0.001) * np.float32(s.position.shape[0])
    # a planted bug: action 2 rewards NaN
    s.rewards[env, 0] = np.float32(np.nan) if action == 2 else np.float32(0.0)


@kernel_function
def _place(env, p, s):
    s.position[env] = uniform(p.seed, env, s.episode[env], 0)
    s.obs[env, 0, 0] = s.position[env]


@dataclass(frozen=True)
class WalkConfig:
    episode_length: int = 5

    def validate(self) -> None:
        pass


class BrokenWalk(Env):
    """One walker; its rewards go NaN, its observation depends on the batch size (and the test below makes
    validation accept any action index)."""

    Config = WalkConfig
    start_modes = ("random",)
    step_phases = (per_env(_walk),)
    reset_phases = (per_env(_place),)

    @classmethod
    def num_agents_of(cls, config: WalkConfig) -> int:
        return 1

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(3)

    def observation_size(self) -> int:
        return 1

    def state_arrays(self) -> list[ArraySpec]:
        return [ArraySpec("position", "env", torch.float32)]


def test_a_broken_env_fails_the_checks_it_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract finds what it is written to find, and says where."""
    monkeypatch.setattr(env_module, "check_action_range", lambda *args: None)  # the second planted bug
    finite = contract.check_finite(BrokenWalk, {}, 40)[0]
    assert finite.status == "fail" and finite.detail.startswith("rewards[") and "= nan at step" in finite.detail
    actions = contract.check_actions(BrokenWalk, {})[0]
    assert actions.status == "fail" and "accepted without an error" in actions.detail
    assert contract.check_seeding(BrokenWalk, {}, 12)[0].status == "pass"
    batch = contract.check_batch(BrokenWalk, {}, 12)[0]
    assert batch.status == "fail" and "replica 2 of 3 differs from a run alone" in batch.detail
    assert batch.detail.endswith("in 'obs' at step 1")
    shapes = contract.check_shapes(BrokenWalk, {}, 12)
    assert [r.name for r in shapes] == ["shape 1 x 1", "shape 7 x 1", "shape 3 x 1", "shape 257 x 1", "shape 2 x 1"]
    planted = ("rewards not finite at step", "differs from a run alone in 'obs' at step 1")
    assert all(r.status == "fail" and any(bug in r.detail for bug in planted) for r in shapes), [str(r) for r in shapes]
    assert any(r.detail == f"replica {n - 1} differs from a run alone in 'obs' at step 1"
               for r, n in zip(shapes, (1, 7, 3, 257, 2), strict=True)), [str(r) for r in shapes]
    assert "default draw()" in contract.check_render(BrokenWalk, {})[0].detail
