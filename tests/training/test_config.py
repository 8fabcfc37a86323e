"""Config loading: typed values, errors that name the key path, overrides, packaged configs, schedules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from warpdrive.envs import REGISTRY
from warpdrive.training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    packaged_config,
)
from warpdrive.training.schedules import Schedule

MINIMAL = {"env": {"name": "tag_gridworld"}, "total_env_steps": 1000}


def test_minimal_config_gets_defaults() -> None:
    config = load_config(MINIMAL)
    assert isinstance(config, TrainConfig)
    assert config.env.num_envs == 64 and config.rollout_length == 128
    assert list(config.policies) == ["shared"] and config.policies["shared"].algorithm == "ppo"
    assert config.policies["shared"].ppo.clip_coef == 0.2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["policies.taggers.ppo.clip_coef=-1"], "policies.taggers.ppo.clip_coef: expected a float > 0, got -1"),
        (["policies.taggers.ppo.clip_cof=0.1"],
         "policies.taggers.ppo.clip_cof: unknown key; did you mean 'clip_coef'?"),
        (["env.num_envs=0"], "env.num_envs: expected an integer >= 1, got 0"),
        (["env.num_envs=2.5"], "env.num_envs: expected an integer >= 1, got 2.5"),
        (["policies.a.model.activation=swish"], "policies.a.model.activation: expected one of 'tanh'"),
        (["policies.a.algorithm=sac"],
         "policies.a.algorithm: expected one of 'ppo', 'a2c', 'ddpg', 'random', "),  # then the other modules' ones
        (["policies.a.ppo.norm_adv=3"], "policies.a.ppo.norm_adv: expected true or false, got 3"),
        (["policies.a.model.hidden_sizes=[64, x]"], "policies.a.model.hidden_sizes[1]: expected an integer, got 'x'"),
        (["policies.a.ppo.gamma=1.5"], "policies.a.ppo.gamma: expected a float >= 0 and <= 1, got 1.5"),
        (["device=gpu"], "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["bogus=1"], "bogus: unknown key"),
        (["policies.a.ddpg.gradient_steps=0"], "policies.a.ddpg.gradient_steps: expected an integer >= 1, got 0"),
        # what the non-finite guard would only catch after a wasted iteration is refused up front
        (["policies.a.optimizer.lr=.inf"], "policies.a.optimizer.lr: expected a finite float > 0 and <= 1, got inf"),
        (["policies.a.optimizer.lr=2.0"], "policies.a.optimizer.lr: expected a float > 0 and <= 1, got 2.0"),
        (["policies.a.ppo.vf_coef=.inf"], "policies.a.ppo.vf_coef: expected a finite float >= 0 and <= 100, got inf"),
        (["policies.a.ppo.ent_coef=1.0e+308"], "policies.a.ppo.ent_coef: expected a float >= 0 and <= 100, got 1e+308"),
        (["policies.a.ppo.max_grad_norm=.inf"], "policies.a.ppo.max_grad_norm: expected a finite float > 0, got inf"),
        (["policies.a.ppo.target_kl=.nan"], "policies.a.ppo.target_kl: expected a finite float > 0, got nan"),
        (["policies.a.ppo.gamma=-.inf"], "policies.a.ppo.gamma: expected a finite float >= 0 and <= 1, got -inf"),
        (["policies.a.ddpg.exploration_noise=1.0e+9"],
         "policies.a.ddpg.exploration_noise: expected a float >= 0 and <= 10, got 1000000000.0"),
        (["policies.a.model.log_std_init=.inf"],
         "policies.a.model.log_std_init: expected a finite float >= -20 and <= 2, got inf"),
    ],
)
def test_bad_values_name_the_key_path(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(MINIMAL, overrides)
    assert str(info.value).startswith(message), str(info.value)


def test_missing_required_keys() -> None:
    with pytest.raises(ConfigError, match=r"^total_env_steps: missing required key$"):
        load_config({"env": {"name": "tag_gridworld"}})
    with pytest.raises(ConfigError, match=r"^env\.name: missing required key$"):
        load_config({"env": {}, "total_env_steps": 10})
    with pytest.raises(ConfigError, match=r"^env: missing required key$"):
        load_config({"total_env_steps": 10})


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match="policies: a 'shared' policy serves every group"):
        load_config({**MINIMAL, "policies": {"shared": {}, "taggers": {}}})
    trunk = "policies.shared.model.shared_trunk: a shared trunk needs critic_input"
    with pytest.raises(ConfigError, match=re.escape(trunk)):
        load_config(MINIMAL, ["policies.shared.model.shared_trunk=true", "policies.shared.model.critic_input=global"])
    with pytest.raises(ConfigError, match=re.escape("policies.shared.model.critic_input: ddpg supports only a local")):
        load_config(MINIMAL, ["policies.shared.algorithm=ddpg", "policies.shared.model.critic_input=global"])


def test_overrides_parse_yaml_scalars_and_create_mappings() -> None:
    config = load_config(MINIMAL, [
        "total_env_steps=1e6",  # YAML reads this as a string; integer fields accept whole numbers
        "policies.shared.optimizer.lr=3e-4",
        "policies.shared.model.hidden_sizes=[32, 32]",
        "policies.shared.ppo.target_kl=null",
        "policies.shared.optimizer.lr_schedule.kind=linear",
        "env.kwargs.num_taggers=3",
        "cuda_graph=false",
    ])
    assert config.total_env_steps == 1_000_000
    assert config.policies["shared"].optimizer.lr == 3e-4
    assert config.policies["shared"].model.hidden_sizes == [32, 32]
    assert config.policies["shared"].ppo.target_kl is None
    assert config.policies["shared"].optimizer.lr_schedule.kind == "linear"
    assert config.env.kwargs == {"num_taggers": 3}
    assert config.cuda_graph is False


def test_bad_overrides() -> None:
    with pytest.raises(ConfigError, match=re.escape("must look like key.path=value")):
        apply_overrides({}, ["rollout_length"])
    with pytest.raises(ConfigError, match=r"^rollout_length: is 5, not a mapping: cannot set 'x'"):
        apply_overrides({"rollout_length": 5}, ["rollout_length.x=1"])


def test_load_from_file_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "policies": {"taggers": {"algorithm": "ppo"},
                                                            "runner": {"algorithm": "random"}}}))
    config = load_config(path, ["policies.taggers.ppo.ent_coef=0.0"])
    assert config.policies["taggers"].ppo.ent_coef == 0.0
    assert load_config(config_to_dict(config)) == config
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping of settings"):
        load_config(path)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_packaged_configs_load(name: str) -> None:
    assert packaged_config(name).is_file()
    config = load_config(name)
    assert config.env.name == name


def test_unknown_packaged_config() -> None:
    with pytest.raises(FileNotFoundError, match="no config file 'nope' and no packaged config of that name"):
        load_config("nope")


def test_schedules() -> None:
    assert Schedule().value(0.5, 0.7) == 0.5
    linear = Schedule(kind="linear", final=0.0)
    assert linear.value(1.0, 0.0) == 1.0 and linear.value(1.0, 0.25) == 0.75 and linear.value(1.0, 1.0) == 0.0
    assert Schedule(kind="linear", final=0.1).value(2.0, 1.0) == pytest.approx(0.2)
    cosine = Schedule(kind="cosine", final=0.0)
    assert cosine.value(1.0, 0.0) == 1.0 and cosine.value(1.0, 0.5) == pytest.approx(0.5)
    assert cosine.value(1.0, 1.0) == pytest.approx(0.0)
    assert linear.value(1.0, 2.0) == 0.0  # progress is clamped to [0, 1]
