"""The non-finite guard: a NaN from the env stops the run, names policy, iteration and tensor, and leaves
the last good checkpoint; switched off, the run trains on (and its weights are ruined)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from warpdrive import Env, kernel_function
from warpdrive.cli import main
from warpdrive.core.actions import InvalidActionError
from warpdrive.core.compile import per_agent
from warpdrive.envs import REGISTRY, register
from warpdrive.training import NonFiniteError, load_config, train
from warpdrive.training.checkpoint import load_checkpoint
from warpdrive.training.guard import check_finite
from warpdrive.training.trainer import Trainer

NAN_STEP = 3
"""The episode step whose reward (or observation) is NaN: with 2 steps per rollout, in iteration 2."""


@kernel_function
def _poison(env, agent, p, s):
    nan = np.float32(np.nan) if s.t[env] == p.nan_step else np.float32(0.0)
    if p.nan_obs:
        s.obs[env, agent, 0] = nan
        s.rewards[env, agent] = np.float32(1.0)
    else:
        s.obs[env, agent, 0] = np.float32(s.t[env])
        s.rewards[env, agent] = nan + np.float32(1.0)


@dataclass(frozen=True)
class PoisonConfig:
    episode_length: int = 8
    nan_step: int = NAN_STEP
    nan_obs: bool = False
    """NaN in the observation instead of the reward."""

    def validate(self) -> None:
        pass


class Poison(Env):
    """One agent, two actions, one observation; a NaN reward (or observation) at step ``nan_step`` of each
    episode."""

    name = "poison"
    Config = PoisonConfig
    step_phases = (per_agent(_poison),)
    reset_phases = ()

    @classmethod
    def num_agents_of(cls, config: PoisonConfig) -> int:
        return 1

    def single_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(2)

    def observation_size(self) -> int:
        return 1

    def kernel_params(self) -> dict[str, object]:
        return {"nan_step": self.config.nan_step, "nan_obs": self.config.nan_obs}


@pytest.fixture(scope="module", autouse=True)
def registered():
    register("poison", f"{__name__}:Poison")
    yield
    REGISTRY.pop("poison")


def poison_config(tmp_path: Path, *overrides: str) -> list[str]:
    return ["total_env_steps=24", "env.num_envs=4", "rollout_length=2", "device=cpu", "checkpoint.every=1",
            "policies.shared.ppo.num_minibatches=2", "logging.tensorboard=false", "logging.progress=false",
            "logging.learning_curve=false", f"logging.run_dir={tmp_path / 'run'}", *overrides]


def weights(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """The newest checkpoint's iteration and networks."""
    checkpoint, state = load_checkpoint(run_dir)
    return state["trainer"]["iteration"], checkpoint.load_models()


@pytest.mark.parametrize(("nan_obs", "first"), [(False, "rewards"), (True, "observations")])
def test_a_nan_from_the_env_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path, nan_obs: bool,
                                                                            first: str) -> None:
    config = load_config("poison", poison_config(tmp_path, f"env.kwargs.nan_obs={str(nan_obs).lower()}"))
    with pytest.raises(NonFiniteError) as info:
        train(config)
    err = info.value
    assert (err.policy, err.iteration, err.tensors[0]) == ("shared", 2, first)
    # the NaN spread through the update into the weights, and the guard names each casualty
    assert "weights" in err.tensors and "value_loss" in err.tensors
    assert str(err).startswith(f"non-finite {first}, ") and "policy 'shared' at iteration 2" in str(err)
    iteration, tensors = weights(tmp_path / "run")
    assert iteration == 1
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_switched_off_the_run_trains_on_into_nan(tmp_path: Path) -> None:
    result = train(load_config("poison", poison_config(tmp_path, "guard_nonfinite=false")))
    assert result.env_steps == 24
    iteration, tensors = weights(tmp_path / "run")
    assert iteration == 3
    assert not all(torch.isfinite(t).all() for t in tensors.values())


def test_the_cli_reports_it_in_one_line_with_status_1(tmp_path: Path, capsys) -> None:
    assert main(["train", "poison", *poison_config(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("warpdrive train: error: non-finite rewards, ") and "at iteration 2" in err


def test_losses_and_gradient_norm_must_be_finite_other_metrics_need_not(tmp_path: Path) -> None:
    trainer = Trainer(load_config("poison", poison_config(tmp_path, "env.kwargs.nan_step=100")))
    metrics = trainer.train_iteration()  # finite: no error
    flags = {"shared/observations": True, "shared/rewards": True, "shared/weights": True}
    check_finite(1, trainer.policies, flags, {**metrics, "losses/shared/explained_variance": math.nan})
    for name in ("policy_loss", "grad_norm"):
        message = rf"^non-finite {name} \(NaN or inf\) in policy 'shared' at iteration 7;"
        with pytest.raises(NonFiniteError, match=message):
            check_finite(7, trainer.policies, flags, {**metrics, f"losses/shared/{name}": math.inf})
    with pytest.raises(NonFiniteError, match=r"^non-finite weights "):
        check_finite(7, trainer.policies, {**flags, "shared/weights": False}, metrics)


def test_an_invalid_action_found_by_the_step_kernel_stops_the_iteration(tmp_path: Path) -> None:
    """The step kernel's action check (Env.check_actions) travels to the host with the metrics."""
    trainer = Trainer(load_config("poison", poison_config(tmp_path)))
    # what the kernel records for actions[2, 0, 0] = 7 (one agent, one head): (1 - 0) << 32 | 7
    trainer.env.store["action_fault"][2] = (1 << 32) | 7
    with pytest.raises(InvalidActionError, match=r"actions\[2, 0, 0\] = 7, expected 0 <= index < 2"):
        trainer.train_iteration()
    assert not bool(trainer.env.action_faults_found())  # cleared: the next iteration is not refused for it
