"""MASAC: the squashed Gaussian's log-density, the soft targets, automatic entropy tuning, the refusal of
discrete actions, exact resume, and learning on simple_spread with continuous actions."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from torch import distributions as D
from training_helpers import assert_same_next_update, joint_rollout, restored_copy, train_and_judge

import warpdrive
from warpdrive.core.typed import ConfigError, from_dict
from warpdrive.training.algorithms import ALGORITHMS
from warpdrive.training.algorithms.masac import LOG_STD_MAX, LOG_STD_MIN, MASAC
from warpdrive.training.config import PolicySpec, load_config
from warpdrive.training.trainer import Trainer

pytestmark = pytest.mark.xdist_group("mpe")  # simple_spread's programs: compiled by one worker

CPU = torch.device("cpu")
BOX = gym.spaces.Box(-2.0, 2.0, (2,))
CONFIG = str(Path(warpdrive.__file__).parent / "envs" / "simple_spread" / "masac.yaml")


def make_masac(agents: int = 3, obs_size: int = 4, lr: float = 3e-4, **section) -> MASAC:
    spec = from_dict(PolicySpec, {"algorithm": "masac", "model": {"hidden_sizes": [16, 16]},
                                  "optimizer": {"lr": lr}, "masac": section})
    return MASAC(spec, obs_size, BOX, 0, CPU, num_agents=agents)


def set_log_std(algorithm: MASAC, log_std: float) -> None:
    """Make the actor's log-std ``log_std`` for every observation (zero weights, a bias through its tanh)."""
    head = algorithm.model.actor.log_std
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(math.atanh(2.0 * (log_std - LOG_STD_MIN) / (LOG_STD_MAX - LOG_STD_MIN) - 1.0))


def test_declares_continuous_off_policy_without_the_env_global_state() -> None:
    cls = ALGORITHMS["masac"]
    assert cls is MASAC and not cls.on_policy and cls.continuous and not cls.discrete and not cls.global_critic
    assert cls.supports_action_space(BOX) and not cls.supports_action_space(gym.spaces.Discrete(5))


def test_squashed_gaussian_log_density_matches_torch_distributions() -> None:
    """Actions inside the Box bounds, log-densities as torch's tanh-then-affine transformed Normal gives them
    (also where the samples come close to the bounds: log-std 2)."""
    algorithm = make_masac()
    actor = algorithm.model.actor
    obs = torch.randn(256, 3, 4)
    for log_std in (-1.0, 0.0, LOG_STD_MAX - 1e-3):
        set_log_std(algorithm, log_std)
        torch.manual_seed(0)
        with torch.no_grad():
            actions, logp = actor.sample(obs)
            mean, std_log = actor.mean_and_log_std(obs)
        torch.testing.assert_close(std_log, torch.full_like(std_log, log_std), rtol=0, atol=1e-5)
        assert actions.shape == (256, 3, 2) and logp.shape == (256, 3)
        assert (actions.abs() <= 2.0).all()
        torch.manual_seed(0)
        u = mean + std_log.exp() * torch.randn(mean.shape)  # the same draws, before squashing
        squashed = D.TransformedDistribution(D.Normal(mean, std_log.exp()),
                                             [D.TanhTransform(), D.AffineTransform(0.0, 2.0)])
        # torch's log_prob would invert tanh (inexact near the bounds): sum its pieces at the known u
        expected = squashed.base_dist.log_prob(u) - sum(
            t.log_abs_det_jacobian(x, t(x)) for t, x in
            zip(squashed.transforms, [u, torch.tanh(u)], strict=True))
        torch.testing.assert_close(actions, 2.0 * torch.tanh(u), rtol=0, atol=1e-6)
        torch.testing.assert_close(logp, expected.sum(-1), rtol=1e-5, atol=1e-4)


def test_soft_targets_on_a_hand_made_batch() -> None:
    """y_i = r_i + gamma (1 - terminated) (min_k Q'_k,i(x', a') - alpha log pi(a'_i | o'_i)), a' ~ pi(o')."""
    torch.manual_seed(0)
    algorithm = make_masac(agents=2, obs_size=3, gamma=0.9, alpha=0.3)
    batch = {"obs": torch.randn(2, 2, 3), "actions": torch.randn(2, 2, 2), "next_obs": torch.randn(2, 2, 3),
             "rewards": torch.tensor([[1.0, -1.0], [0.5, 2.0]]), "terminated": torch.tensor([1.0, 0.0])}
    torch.manual_seed(5)
    targets = algorithm.critic_targets(batch)
    assert targets.shape == (2, 2)
    assert torch.equal(targets[0], batch["rewards"][0])  # terminated: no bootstrap
    torch.manual_seed(5)  # the same next actions
    with torch.no_grad():
        next_actions, next_logp = algorithm.model.actor.sample(batch["next_obs"])
        for i in range(2):
            x = torch.cat([batch["next_obs"][1].reshape(-1), next_actions[1].reshape(-1), torch.eye(2)[i]])
            q = torch.minimum(algorithm.target[0].net(x)[0], algorithm.target[1].net(x)[0])
            expected = batch["rewards"][1, i] + 0.9 * (q - 0.3 * next_logp[1, i])
            torch.testing.assert_close(targets[1, i], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("log_std", "alpha_rises"), [(-4.5, True), (0.0, False)])
def test_entropy_coefficient_moves_toward_the_target(log_std: float, alpha_rises: bool) -> None:
    """One actor step: alpha rises when the policy's entropy is below the target (-H = -2 here; log-std -4.5:
    about -4.8) and falls above it (log-std 0: about +2.7), by Adam's first step, lr, in log space."""
    lr = 1e-2
    algorithm = make_masac(lr=lr, learning_starts=0, batch_size=64, gradient_steps=1, policy_frequency=1, alpha=0.5)
    set_log_std(algorithm, log_std)
    before = algorithm.model.log_alpha.item()
    metrics = algorithm.update(joint_rollout(algorithm), 0.0)
    entropy = float(metrics["entropy"])
    assert (entropy < algorithm.target_entropy) == alpha_rises, entropy
    change = algorithm.model.log_alpha.item() - before
    assert change == pytest.approx(lr if alpha_rises else -lr, rel=1e-3)
    assert float(metrics["alpha"]) == pytest.approx(math.exp(before + change), rel=1e-6)
    assert algorithm.target_entropy == -2.0


def test_fixed_alpha_stays() -> None:
    algorithm = make_masac(learning_starts=0, batch_size=16, gradient_steps=2, alpha=0.3, autotune=False)
    metrics = algorithm.update(joint_rollout(algorithm), 0.0)
    assert algorithm.model.log_alpha.item() == pytest.approx(math.log(0.3)) and "loss_alpha" not in metrics
    assert {"loss_value", "loss_policy", "q_values", "entropy", "alpha"} <= set(metrics)


def test_waits_for_learning_starts_then_learns_every_network() -> None:
    algorithm = make_masac(learning_starts=40, batch_size=8, gradient_steps=3, policy_frequency=2)
    storage = joint_rollout(algorithm)  # 24 env-steps per rollout
    before = copy.deepcopy(algorithm.model.state_dict())
    target_before = copy.deepcopy(algorithm.target.state_dict())
    assert algorithm.update(storage, 0.0) == {"replay_size": 24.0}
    with torch.no_grad():  # warm-up: uniform actions over the Box
        warm = algorithm.act(torch.zeros(512, 3, 4), None).actions
    assert warm.abs().max() > 1.9
    metrics = algorithm.update(storage, 0.0)
    assert {"loss_value", "loss_policy", "loss_alpha", "alpha", "entropy"} <= set(metrics)
    changed = {k.split(".")[0] for k, v in algorithm.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"actor", "critic", "log_alpha"}
    assert all(not torch.equal(v, target_before[k]) for k, v in algorithm.target.state_dict().items())
    with torch.no_grad():
        deterministic = algorithm.act(torch.randn(8, 3, 4), None, deterministic=True)
    assert (deterministic.env_actions.abs() <= 2.0).all()


def test_resume_from_saved_state_is_exact() -> None:
    """Networks, optimisers (alpha's too), replay and counters saved and loaded into a fresh instance: the next
    update is bit-identical to the original's."""
    settings = {"learning_starts": 10, "batch_size": 8, "gradient_steps": 3, "policy_frequency": 2}
    torch.manual_seed(0)
    original = make_masac(**settings)
    storage = joint_rollout(original)
    original.update(storage, 0.0)
    resumed = restored_copy(original, lambda: make_masac(**settings))
    assert resumed.gradient_steps == 3 and not bool(resumed.explore_randomly)
    assert_same_next_update(original, resumed, storage)


def test_discrete_actions_are_refused_in_one_line_naming_what_to_use() -> None:
    config = load_config("simple_spread", ["device=cpu", "env.num_envs=2", "policies.shared.algorithm=masac"])
    with pytest.raises(ConfigError) as info:
        Trainer(config)
    message = str(info.value)
    assert "\n" not in message
    assert re.match(r"policies\.shared\.algorithm: masac supports only continuous \(Box\) actions, and "
                    r"simple_spread has Discrete\(5\); use .*\bppo\b", message), message
    with pytest.raises(TypeError, match=r"masac needs a Box action space, got Discrete\(5\)"):
        MASAC(from_dict(PolicySpec, {"algorithm": "masac"}), 4, gym.spaces.Discrete(5), 0, CPU, num_agents=2)


def test_masac_spreads_out_on_simple_spread() -> None:
    """3 agents, continuous actions, 40k env-steps: the mean agent return beats random actions' by more than 3
    (measured: -19.5 against -25.2, after 14-23 s of training on one busy core)."""
    judged = train_and_judge(load_config(CONFIG, ["device=cpu", "total_env_steps=40000"]), episodes=200,
                             deterministic=True)
    trained, random = judged.trained["return/agents"], judged.random["return/agents"]
    assert -27 < random < -23
    assert trained > random + 3
