"""Each algorithm's update on a synthetic rollout: it runs, changes the networks, reports its losses."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from warpdrive.core.typed import from_dict
from warpdrive.training.algorithms import ALGORITHMS, DDPG, PPO, PPOConfig, algorithm_class
from warpdrive.training.algorithms.ppo import clipped_surrogate, explained_variance, ppo_loss
from warpdrive.training.config import PolicySpec
from warpdrive.training.storage import EnvRollout, RolloutStorage

CPU = torch.device("cpu")
DISCRETE = gym.spaces.MultiDiscrete([3, 4])
BOX = gym.spaces.Box(-2.0, 2.0, (2,))


def make_algorithm(name: str, space: gym.spaces.Space, global_size: int = 0, num_agents: int = 1, **section):
    spec = from_dict(PolicySpec, {"algorithm": name, name: section} if section else {"algorithm": name})
    if global_size:
        spec.model.critic_input = "global"
    return algorithm_class(name)(spec, 5, space, global_size, CPU, num_agents=num_agents)


def filled_storage(algorithm, steps: int = 8, envs: int = 3, agents: int = 2, global_size: int = 0):
    """A rollout collected by the algorithm's own act() on random observations."""
    torch.manual_seed(1)
    env_rollout = EnvRollout(steps, envs, agents, 5, CPU, global_state_size=global_size)
    storage = RolloutStorage(env_rollout, slice(0, agents), algorithm.action_size, algorithm.stored_action_dtype,
                             on_policy=algorithm.on_policy)
    for t in range(steps):
        obs = torch.randn(envs, agents, 5)
        state = torch.randn(envs, global_size) if global_size else None
        with torch.no_grad():
            act = algorithm.act(obs, state)
        index = torch.tensor([t])
        env_fields = {"obs": obs, "rewards": torch.randn(envs, agents), "terminated": torch.rand(envs) < 0.1,
                      "truncated": torch.rand(envs) < 0.1, "final_obs": torch.randn(envs, agents, 5)}
        if global_size:
            env_fields.update(global_state=state, final_global_state=torch.randn(envs, global_size))
        env_rollout.write(index, **env_fields)
        fields = {"actions": act.actions}
        if algorithm.on_policy:
            fields.update(logprobs=act.logprobs, values=act.values)
        storage.write(index, **fields)
    env_rollout.truncated[steps // 2, 0] = True  # at least one bootstrap from V(final_obs)
    env_rollout.terminated[steps // 2, 0] = False
    env_rollout.last_obs.normal_()
    if global_size:
        env_rollout.last_global_state.normal_()
    return storage


@pytest.mark.parametrize(
    ("name", "space", "section", "global_size"),
    [
        ("ppo", DISCRETE, {}, 0),
        ("ppo", BOX, {"target_kl": 1e-9}, 0),  # stops after the first epoch
        ("ppo", DISCRETE, {}, 7),  # centralised critic
        ("a2c", DISCRETE, {}, 0),
        ("a2c", BOX, {"gae_lambda": 0.9, "norm_adv": True}, 7),
        ("ddpg", BOX, {"learning_starts": 0, "gradient_steps": 3, "batch_size": 16}, 0),
    ],
)
def test_update_changes_parameters(name, space, section, global_size) -> None:
    algorithm = make_algorithm(name, space, global_size, **section)
    before = {k: v.clone() for k, v in algorithm.model.state_dict().items()}
    metrics = algorithm.update(filled_storage(algorithm, global_size=global_size), progress=0.0)
    changed = [k for k, v in algorithm.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("actor" in k for k in changed) and any(("critic" in k or "value" in k) for k in changed)
    assert "loss_policy" in metrics and "loss_value" in metrics
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())
    if name == "ppo":
        assert {"approx_kl", "clipfrac", "explained_variance", "entropy"} <= set(metrics)
        assert metrics["epochs"] == (1.0 if section.get("target_kl") else 4.0)


def test_ddpg_waits_for_learning_starts_then_updates_targets() -> None:
    algorithm = make_algorithm("ddpg", BOX, learning_starts=40, gradient_steps=2, batch_size=8, policy_frequency=1)
    target_before = [p.clone() for p in algorithm.target.parameters()]
    storage = filled_storage(algorithm, steps=4)  # 4 * 3 * 2 = 24 transitions < 40
    assert algorithm.update(storage, 0.0) == {"replay_size": 24.0}
    assert bool(algorithm.explore_randomly)
    metrics = algorithm.update(storage, 0.0)  # 48 >= 40: learning starts
    assert not bool(algorithm.explore_randomly) and "q_values" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(target_before, algorithm.target.parameters(), strict=True))
    with torch.no_grad():
        act = algorithm.act(torch.randn(3, 2, 5), None)
    assert (act.env_actions.abs() <= 2.0).all()


@pytest.mark.parametrize("name", ["ddpg", "maddpg", "masac"])
def test_delayed_actor_steps_are_logged_whenever_an_iteration_takes_one(name: str) -> None:
    """With an actor step every 2 of 3 gradient steps per iteration, the second iteration's first step has none:
    its actor loss was once dropped from the metrics (only the first step's names were kept)."""
    algorithm = make_algorithm(name, BOX, num_agents=2, learning_starts=0, gradient_steps=3, batch_size=8,
                               policy_frequency=2)
    storage = filled_storage(algorithm, steps=4, agents=2)
    first, second = algorithm.update(storage, 0.0), algorithm.update(storage, 0.0)
    assert algorithm.gradient_steps == 6
    assert "loss_policy" in first and "loss_policy" in second and set(first) == set(second)


def test_ddpg_warm_up_exploration_is_for_training_rollouts_only() -> None:
    algorithm = make_algorithm("ddpg", BOX, exploration_noise=0.0)
    assert bool(algorithm.explore_randomly)  # a fresh algorithm, as evaluation builds one from a checkpoint
    obs = torch.randn(64, 2, 5)
    with torch.no_grad():
        mu = algorithm.model.action(obs)
        training = algorithm.act(obs, None).env_actions
        evaluation = algorithm.act(obs, None, explore=False).env_actions
    torch.testing.assert_close(evaluation, mu)  # the learned actor (noise 0 here), not uniform actions
    assert (training - mu).abs().mean() > 0.5  # uniform over [-2, 2] during the warm-up


def test_ddpg_refuses_discrete_actions() -> None:
    spec = from_dict(PolicySpec, {"algorithm": "ddpg"})
    with pytest.raises(TypeError, match="needs a Box action space"):
        DDPG(spec, 5, gym.spaces.Discrete(3), 0, CPU)


def test_registry_declares_support() -> None:
    assert set(ALGORITHMS) == {"ppo", "a2c", "ddpg", "random", "maddpg", "masac", "vdn", "qmix"}
    assert ALGORITHMS["ppo"].on_policy and ALGORITHMS["a2c"].on_policy and not ALGORITHMS["ddpg"].on_policy
    assert ALGORITHMS["ddpg"].continuous and not ALGORITHMS["ddpg"].discrete
    assert ALGORITHMS["ddpg"].supports_action_space(BOX) and not ALGORITHMS["ddpg"].supports_action_space(DISCRETE)
    assert not ALGORITHMS["ddpg"].global_critic and ALGORITHMS["ppo"].global_critic
    assert not ALGORITHMS["random"].trainable
    with pytest.raises(KeyError, match="unknown algorithm 'sac'"):
        algorithm_class("sac")


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_registered_algorithm_has_its_section_in_policy_configs(name: str) -> None:
    """A policy config holds one section per registered algorithm, named like it, of that algorithm's Config;
    the algorithm is built from it."""
    cls = ALGORITHMS[name]
    spec = from_dict(PolicySpec, {"algorithm": name})
    if cls.Config is None:
        assert spec.algorithm_config is None and not hasattr(spec, name)
    else:
        assert type(spec.algorithm_config) is cls.Config and spec.algorithm_config is getattr(spec, name)
    space = BOX if cls.supports_action_space(BOX) else DISCRETE
    assert algorithm_class(name)(spec, 5, space, 0, CPU).config is spec.algorithm_config


def test_clipped_surrogate_stops_the_gradient_outside_the_clip_range() -> None:
    clip = 0.2
    for ratio_value, advantage, expect_gradient in [
        (1.1, 1.0, True),    # inside the range: the ratio is pushed up
        (1.3, 1.0, False),   # already above 1 + clip with a positive advantage: clipped, no gradient
        (0.7, 1.0, True),    # below 1 - clip but the advantage asks for more: the unclipped term is kept
        (0.7, -1.0, False),  # below 1 - clip with a negative advantage: clipped
        (1.3, -1.0, True),   # above the range, negative advantage: pulled back down
    ]:
        ratio = torch.tensor([ratio_value], requires_grad=True)
        loss = clipped_surrogate(ratio, torch.tensor([advantage]), clip)
        loss.backward()
        assert (ratio.grad.abs().item() > 0) == expect_gradient, (ratio_value, advantage)
        expected = -min(ratio_value * advantage, max(min(ratio_value, 1 + clip), 1 - clip) * advantage)
        assert loss.item() == pytest.approx(expected)


def test_ppo_loss_on_the_rollout_policy() -> None:
    """At the rollout's parameters the ratio is 1: no KL, nothing clipped, and the policy loss is minus the
    mean advantage (before normalisation)."""
    algorithm = make_algorithm("ppo", DISCRETE)
    assert isinstance(algorithm, PPO)
    obs = torch.randn(32, 5)
    with torch.no_grad():
        act = algorithm.act(obs, None)
    advantages = torch.randn(32)
    mb = {"obs": obs, "critic_obs": obs, "actions": act.actions, "logprobs": act.logprobs,
          "advantages": advantages, "returns": act.values + 1.0, "values": act.values}
    config = PPOConfig(norm_adv=False, clip_vloss=False, vf_coef=1.0)
    losses = ppo_loss(algorithm.model, mb, config, ent_coef=0.0)
    assert losses["approx_kl"].abs().item() < 1e-6 and losses["clipfrac"].item() == 0.0
    assert losses["loss_policy"].item() == pytest.approx(-advantages.mean().item(), abs=1e-5)
    assert losses["loss_value"].item() == pytest.approx(0.5, abs=1e-5)
    assert losses["loss_entropy"].item() == 0.0


def test_explained_variance() -> None:
    target = torch.randn(100)
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros(100) + target.mean(), target).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isnan(explained_variance(torch.zeros(4), torch.ones(4)))


def _readme_algorithm_rows() -> dict[str, list[str]]:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Algorithms", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    return {row[0].strip("`"): row for row in rows}


def test_the_readme_table_of_algorithms_says_what_each_declares() -> None:
    """One row per registered algorithm, its columns what the class declares, its example a config that loads."""
    import shlex

    from warpdrive.training.config import load_config

    rows = _readme_algorithm_rows()
    assert sorted(rows) == sorted(ALGORITHMS)
    for name, (_, actions, learns, recurrent, centralised, example) in rows.items():
        cls = ALGORITHMS[name]
        kinds = [kind for kind, yes in (("discrete", cls.discrete), ("continuous", cls.continuous)) if yes]
        assert actions == " and ".join(kinds), name
        assert learns == ("(not trained)" if not cls.trainable else
                          "on-policy rollouts" if cls.on_policy else "off-policy replay"), name
        assert recurrent == ("-" if not cls.trainable else "yes" if cls.recurrent else "no"), name
        assert centralised == ("-" if not cls.trainable else cls.centralised), name
        # "optional" and "mixer" read the env's global state through model.critic_input: global
        if cls.trainable:
            assert cls.global_critic == (cls.centralised in ("optional", "mixer")), name
        words = shlex.split(example.strip("`"))
        assert words[:2] == ["warpdrive", "train"], example
        config = load_config(words[2], words[3:])
        assert name in {policy.algorithm for policy in config.policies.values()}, example
