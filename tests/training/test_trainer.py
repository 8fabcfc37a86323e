"""The trainer on Tag-gridworld (two agent groups) and Pendulum (Box actions): policies per group or shared,
metrics, storage contents, evaluation, and configs that do not fit the env."""

from __future__ import annotations

import math
import weakref
from pathlib import Path

import pytest
import torch

from warpdrive.envs import env_class
from warpdrive.training.config import ConfigError, load_config
from warpdrive.training.evaluate import evaluate
from warpdrive.training.run import Run
from warpdrive.training.trainer import Trainer

GRID = {
    "env": {"name": "tag_gridworld", "num_envs": 8,
            "kwargs": {"num_taggers": 2, "grid_length": 4, "episode_length": 10}},
    "total_env_steps": 8 * 12 * 3,
    "rollout_length": 12,
    "device": "cpu",
}


def grid_trainer(*overrides: str) -> Trainer:
    return Trainer(load_config(GRID, list(overrides)))


def test_per_group_policies_and_metric_names() -> None:
    trainer = grid_trainer("policies.taggers.algorithm=ppo", "policies.runner.algorithm=a2c", "cuda_graph=true")
    assert [(p.name, p.agent_ids) for p in trainer.policies] == [("taggers", [0, 1]), ("runner", [2])]
    assert trainer.num_iterations == 3 and not trainer.uses_cuda_graph  # no graphs on the CPU
    metrics = trainer.train_iteration()
    assert metrics["charts/episodes"] > 0  # 10-step episodes in a 12-step rollout
    for key in ("charts/episodic_return/taggers", "charts/episodic_return/runner", "charts/episodic_length",
                "charts/SPS", "time/rollout_s", "time/update_s"):
        assert key in metrics and math.isfinite(metrics[key])
    for group in ("taggers", "runner"):
        for name in ("policy_loss", "value_loss", "entropy", "explained_variance", "learning_rate"):
            assert f"losses/{group}/{name}" in metrics
    assert "losses/taggers/approx_kl" in metrics and "losses/taggers/clipfrac" in metrics
    assert metrics["charts/episodic_length"] <= 10
    while not trainer.done:
        trainer.train_iteration()
    assert trainer.env_steps == 8 * 12 * 3


def test_storage_holds_the_rollout() -> None:
    trainer = grid_trainer("policies.taggers.algorithm=ppo", "policies.runner.algorithm=random")
    env = trainer.env
    first_obs = env.obs.clone()
    trainer.rollout()
    storage = trainer.policies[0].storage
    assert trainer.policies[1].storage is None  # a fixed policy stores nothing
    torch.testing.assert_close(storage.obs[0], first_obs[:, :2])
    torch.testing.assert_close(storage.last_obs, env.obs[:, :2])
    # every episode is truncated at t=10 unless terminated earlier, so each env ends at least once in 12 steps
    assert (storage.dones.any(0)).all()
    # a tagger earns +10 in the step of a tag, else -0.01 (and -0.1 more when it bumps into the border)
    tag_steps = storage.terminated.unsqueeze(-1).expand_as(storage.rewards)
    assert {round(r, 2) for r in storage.rewards[tag_steps].tolist()} <= {10.0, 9.9}
    assert {round(r, 2) for r in storage.rewards[~tag_steps].tolist()} <= {-0.01, -0.11}
    # episode counts agree with the done flags written to storage
    assert trainer.env.episode_totals()["episodes"].item() == float(storage.dones.sum())
    # step by step: the env's final observations are kept where an episode ended
    trainer.collector.step_index.zero_()
    checked = 0
    for t in range(trainer.num_steps):
        with torch.no_grad():
            trainer.collector.step()
        done = env.store["done"]
        torch.testing.assert_close(storage.final_obs[t][done], env.store["final_obs"][done][:, :2])
        checked += int(done.sum())
    assert checked > 0


def test_shared_policy_with_global_critic() -> None:
    trainer = grid_trainer("policies.shared.model.critic_input=global", "policies.shared.algorithm=ppo")
    (policy,) = trainer.policies
    assert policy.groups == ["taggers", "runner"] and policy.global_critic
    assert trainer.global_state_size == 3 * trainer.env.observation_size()
    assert policy.storage.global_state.shape == (12, 8, trainer.global_state_size)
    metrics = trainer.train_iteration()
    assert math.isfinite(metrics["losses/shared/value_loss"])


@pytest.mark.parametrize("algorithm", ["ppo", "a2c"])
def test_a_global_critic_beside_a_local_one(algorithm: str) -> None:
    """One group's critic reads the env's global state, the other's its observations only: the rollout stores
    the state for the first, and the second's view shows none (its critic's input has no room for it)."""
    trainer = grid_trainer("policies.taggers.model.critic_input=global", f"policies.taggers.algorithm={algorithm}",
                           f"policies.runner.algorithm={algorithm}")
    taggers, runner = trainer.policies
    assert taggers.global_critic and not runner.global_critic
    assert taggers.storage.global_state is not None and taggers.storage.last_global_state is not None
    assert runner.storage.global_state is runner.storage.final_global_state is runner.storage.last_global_state is None
    for _ in range(2):  # the update reads each view, the truncated steps' values too
        metrics = trainer.train_iteration()
        assert all(math.isfinite(metrics[f"losses/{group}/value_loss"]) for group in ("taggers", "runner"))


def test_global_critic_sees_the_env_global_state_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """An env that declares ``global_state(obs)``: its state, not the observations concatenated, is stored for
    the critic at every step, at episode ends (from ``final_obs``) and after the last step."""
    monkeypatch.setattr(env_class("tag_gridworld"), "global_state", lambda self, obs: obs.sum(1) + 1.0)
    trainer = grid_trainer("policies.shared.model.critic_input=global", "policies.shared.algorithm=a2c")
    assert trainer.global_state_size == trainer.env.observation_size()
    trainer.train_iteration()
    stored = trainer.collector.env_rollout
    torch.testing.assert_close(stored.global_state, stored.obs.sum(2) + 1.0)
    ended = stored.terminated | stored.truncated
    assert ended.any()
    torch.testing.assert_close(stored.final_global_state[ended], stored.final_obs.sum(2)[ended] + 1.0)
    torch.testing.assert_close(stored.last_global_state, stored.last_obs.sum(1) + 1.0)

    monkeypatch.setattr(env_class("tag_gridworld"), "global_state", lambda self, obs: obs)
    with pytest.raises(ValueError, match=r"TagGridWorld.global_state\(obs\) must return \[num_envs, G\] = \[8, G\], "
                                         r"got shape \[8, 3, \d+\]"):
        grid_trainer("policies.shared.model.critic_input=global")


def test_continuous_actions_with_ppo_and_ddpg() -> None:
    base = {"env": {"name": "pendulum", "num_envs": 4}, "total_env_steps": 4 * 10 * 2, "rollout_length": 10}
    for overrides in (["policies.shared.algorithm=ppo"],
                      ["policies.shared.algorithm=ddpg", "policies.shared.ddpg.learning_starts=40",
                       "policies.shared.ddpg.batch_size=8"]):
        trainer = Trainer(load_config(base, overrides))
        trainer.train_iteration()
        metrics = trainer.train_iteration()
        assert math.isfinite(metrics["losses/shared/value_loss"])
        if "ddpg" in overrides[0]:
            storage = trainer.policies[0].storage
            assert storage.next_obs.shape == (10, 4, 1, 3)
            assert (storage.actions.abs() <= 2.0).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["policies.hunters.algorithm=ppo", "policies.runner.algorithm=ppo", "policies.taggers.algorithm=ppo"],
         "policies.hunters: tag_gridworld has no agent group 'hunters'; its groups: taggers, runner"),
        (["policies.taggers.algorithm=ppo"], "policies: no policy for group(s) runner of tag_gridworld"),
        (["policies.shared.algorithm=ddpg"], "policies.shared.algorithm: ddpg supports only continuous (Box) actions, "
                                              "and tag_gridworld has Discrete(5); use ppo, a2c, vdn or qmix"),
        # the env's own config errors keep their key path under env.kwargs
        (["env.kwargs.num_tagers=2"], "env.kwargs.num_tagers: unknown key; did you mean 'num_taggers'?"),
        (["env.kwargs.grid_length=1"], "env.kwargs.grid_length: expected an integer >= 2 and <= 32767, got 1"),
        (["env.kwargs.starting_location_x=[0, 1, 2]"], "env.kwargs.starting_location_y: give both"),
        (["env.name=tag_grid"], "env.name: unknown env 'tag_grid'"),
        (["policies.shared.ppo.num_minibatches=100000"], "policies.shared.ppo.num_minibatches: 100000 minibatches"),
    ],
)
def test_configs_that_do_not_fit_the_env(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        grid_trainer(*overrides)
    assert str(info.value).startswith(message), str(info.value)


def test_evaluate_one_episode_per_env() -> None:
    trainer = grid_trainer("policies.taggers.algorithm=ppo", "policies.runner.algorithm=random")
    trained = evaluate(trainer, seed=3)
    random = evaluate(trainer, random_actions=True, seed=3)
    greedy = evaluate(trainer, deterministic=True, seed=3)
    for result in (trained, random, greedy):
        assert set(result) == {"episodes", "return/taggers", "return/runner", "episode_length"}
        assert result["episodes"] == 8 and 1 <= result["episode_length"] <= 10


def test_the_first_run_says_it_compiles_the_env_and_a_later_run_that_it_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from warpdrive.core.targets import cache_name
    from warpdrive.training import logging as run_logging

    cache = tmp_path / "cache"
    monkeypatch.setattr(run_logging, "set_numba_cache_dir", lambda: cache)
    config = load_config(GRID, ["logging.progress=true", "logging.tensorboard=false"])
    env = env_class("tag_gridworld")(num_envs=2, backend="cpu", **GRID["env"]["kwargs"])
    logger = run_logging.RunLogger(tmp_path / "run", config)
    (cache / "some_dir").mkdir(parents=True)  # what Numba writes: an index per program name
    # another program of the same env class (another variant): this run still compiles its own
    other = env.program_name("step").replace(".step.", ".other_variant.step.")
    (cache / "some_dir" / f"{cache_name(other)}-12.py311.nbi").touch()
    logger.compiling(env)
    assert "compiling kernels (first run" in capsys.readouterr().err
    (cache / "some_dir" / f"{cache_name(env.program_name('step'))}-12.py311.nbi").touch()
    logger.compiling(env)
    assert f"loading kernels from {cache}" in capsys.readouterr().err


def test_closing_a_trainer_or_its_run_releases_the_env_and_the_policies(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What a trainer holds goes when it is closed, also when the run that holds it is closed (as train() does
    at the end): a run's device memory goes back to the process when the run ends, not when the process does."""
    trainer = grid_trainer()
    trainer.train_iteration()
    env, policy = weakref.ref(trainer.env), weakref.ref(trainer.policies[0])
    trainer.close()
    assert env() is None and policy() is None
    trainer.close()  # again: a no-op

    monkeypatch.chdir(tmp_path)
    run = Run(load_config(GRID, ["logging.progress=false"]))
    run.train_iteration()
    env, policy = weakref.ref(run.trainer.env), weakref.ref(run.trainer.policies[0])
    run.close()
    assert env() is None and policy() is None
