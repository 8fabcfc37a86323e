"""The non-finite guard: a NaN from the env stops the run, names policy, iteration and tensor, and leaves
the last good checkpoint; switched off, the run trains on (and its weights are ruined). The replay learners
(DDPG, MADDPG, MASAC, VDN, QMIX) are guarded alike: a diverging critic by its loss, a non-finite gradient
(behind finite losses) by its network's gradient norm."""

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
from warpdrive.training.algorithms import ALGORITHMS
from warpdrive.training.algorithms.replay import ReplayLearner
from warpdrive.training.checkpoint import load_checkpoint
from warpdrive.training.config import TrainConfig
from warpdrive.training.guard import check_finite
from warpdrive.training.trainer import Trainer

pytestmark = pytest.mark.xdist_group("poison")  # this file's env: compiled by one worker

NAN_STEP = 3
"""The episode step whose reward (or observation) is NaN: with 2 steps per rollout, in iteration 2."""


HUGE = 3.0e38
"""A finite float32 reward whose squared TD error is not."""


@kernel_function
def _poison(env, agent, p, s):
    bad = np.float32(HUGE) if p.huge_reward else np.float32(np.nan)
    nan = bad if s.t[env] == p.nan_step else np.float32(0.0)
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
    huge_reward: bool = False
    """A reward of ``HUGE`` (finite) instead of NaN."""
    box: bool = False
    """A Box action (ignored, as the discrete one) for the algorithms of continuous actions."""

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

    def single_action_space(self) -> gym.spaces.Space:
        if self.config.box:
            return gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        return gym.spaces.Discrete(2)

    def observation_size(self) -> int:
        return 1

    def kernel_params(self) -> dict[str, object]:
        return {"nan_step": self.config.nan_step, "nan_obs": self.config.nan_obs,
                "huge_reward": self.config.huge_reward}


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


@pytest.mark.parametrize("algorithm", ["ppo", "ddpg"])
def test_a_nan_observation_behind_a_refused_box_action_is_named_as_the_cause(tmp_path: Path, algorithm: str) -> None:
    """Box actions on the CPU (validate mode): NaN observations make the policy's actions NaN, which the env
    refuses in the middle of the rollout; the guard names the observations (the cause), not the action."""
    config = load_config("poison", poison_config(tmp_path, "env.kwargs.nan_obs=true", "env.kwargs.box=true",
                                                 f"policies.shared.algorithm={algorithm}"))
    with pytest.raises(NonFiniteError) as info:
        train(config)
    assert (info.value.policy, info.value.iteration, info.value.tensors[0]) == ("shared", 2, "observations")


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
    for name in ("policy_loss", "grad_norm", "critic_grad_norm", "actor_grad_norm"):
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


# -- the replay learners ------------------------------------------------------------------------------------

OFF_POLICY = [name for name, cls in ALGORITHMS.items() if cls.trainable and issubclass(cls, ReplayLearner)]


def off_policy_config(tmp_path: Path, algorithm: str, *overrides: str) -> TrainConfig:
    """A tiny run of ``algorithm`` on the poison env (NaN-free unless ``overrides`` say): one gradient step
    per iteration from the first on, so iteration ``i`` takes gradient step ``i - 1``."""
    section = f"policies.shared.{algorithm}"
    return load_config("poison", [
        "total_env_steps=24", "env.num_envs=4", "rollout_length=2", "device=cpu", "checkpoint.every=1",
        "logging.tensorboard=false", "logging.progress=false", "logging.learning_curve=false",
        f"logging.run_dir={tmp_path / 'run'}", f"policies.shared.algorithm={algorithm}",
        f"env.kwargs.box={str(not ALGORITHMS[algorithm].discrete).lower()}", "policies.shared.model.hidden_sizes=[8]",
        f"{section}.learning_starts=0", f"{section}.batch_size=64", f"{section}.gradient_steps=1", *overrides])


def test_every_replay_learner_is_covered() -> None:
    assert set(OFF_POLICY) == {"ddpg", "maddpg", "masac", "vdn", "qmix"}


@pytest.mark.parametrize("algorithm", OFF_POLICY)
def test_a_diverging_off_policy_critic_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                                                        algorithm: str) -> None:
    """A finite reward of 3e38 (in the replay from iteration 2) squares to inf in the TD loss: the rewards
    pass, the loss is the first casualty."""
    with pytest.raises(NonFiniteError) as info:
        train(off_policy_config(tmp_path, algorithm, "env.kwargs.huge_reward=true"))
    err = info.value
    loss = "td_loss" if algorithm in ("vdn", "qmix") else "value_loss"
    assert (err.policy, err.iteration, err.tensors[0]) == ("shared", 2, loss)
    assert "rewards" not in err.tensors
    assert str(err).startswith(f"non-finite {loss}") and "in policy 'shared' at iteration 2;" in str(err)
    iteration, tensors = weights(tmp_path / "run")
    assert iteration == 1
    assert all(torch.isfinite(t).all() for t in tensors.values())


@pytest.mark.parametrize(("algorithm", "network", "step", "norm", "overrides"), [
    ("ddpg", "critic", 1, "critic_grad_norm", []),  # (its actor steps at even steps only)
    ("ddpg", "actor", 2, "actor_grad_norm", []),
    ("maddpg", "actor", 1, "actor_grad_norm", []),  # (its actor steps after the critic, at every step)
    ("masac", "critic", 1, "critic_grad_norm", []),  # (its actor steps at even steps only)
    # (one actor step per critic step; log alpha's loss is from the actor's samples before its step)
    ("masac", "actor", 1, "actor_grad_norm", ["policies.shared.masac.policy_frequency=1"]),
    ("vdn", None, 1, "grad_norm", []),
    ("qmix", None, 1, "grad_norm", []),
], ids=["ddpg-critic", "ddpg-actor", "maddpg-actor", "masac-critic", "masac-actor", "vdn", "qmix"])
def test_a_non_finite_gradient_behind_finite_losses_is_named_by_its_norm(tmp_path: Path, monkeypatch,
                                                                         algorithm: str, network: str | None,
                                                                         step: int, norm: str,
                                                                         overrides: list[str]) -> None:
    """An inf in one gradient of ``network`` (``None``: the agent network) at gradient step ``step``, and
    no later step of the iteration uses what it stepped: every loss of the iteration is finite, the gradient
    norm is not (and the weights it stepped follow)."""
    backward = ReplayLearner.backward

    def poisoned(self: ReplayLearner, loss: torch.Tensor, parameters: list[torch.Tensor]) -> None:
        backward(self, loss, parameters)
        module = self.model if network is None else getattr(self.model, network)
        if self.gradient_steps == step and parameters[0] is next(module.parameters()):
            parameters[0].grad.view(-1)[0] = math.inf

    monkeypatch.setattr(ReplayLearner, "backward", poisoned)
    with pytest.raises(NonFiniteError) as info:
        train(off_policy_config(tmp_path, algorithm, "env.kwargs.nan_step=100", *overrides))
    err = info.value
    assert (err.policy, err.iteration, err.tensors) == ("shared", step + 1, [norm, "weights"])
    assert str(err).startswith(f"non-finite {norm}, weights (NaN or inf) in policy 'shared' at iteration {step + 1};")
    iteration, tensors = weights(tmp_path / "run")
    assert iteration == step
    assert all(torch.isfinite(t).all() for t in tensors.values())
