"""Training is deterministic on the CPU for every registered algorithm that learns: two runs of one config and
seed end with bit-identical networks, also when the process draws from torch's default generator between the
iterations of one of them (a run draws from its own), and another seed gives other networks. (On a GPU,
training is not bit-reproducible: see docs/training.md.)"""

from __future__ import annotations

import pytest
import torch

from warpdrive.training.algorithms import ALGORITHMS
from warpdrive.training.config import load_config
from warpdrive.training.trainer import Trainer

# a discrete multi-agent env for the algorithms that take discrete actions, a Box one for the others
DISCRETE = {"env": {"name": "tag_gridworld", "num_envs": 4,
                    "kwargs": {"num_taggers": 2, "grid_length": 4, "episode_length": 6}},
            "rollout_length": 8, "device": "cpu"}
BOX = {"env": {"name": "pendulum", "num_envs": 4}, "rollout_length": 8, "device": "cpu"}
# off-policy algorithms learn only once their buffer holds this much
SETTINGS = {"ddpg": ["policies.shared.ddpg.learning_starts=16", "policies.shared.ddpg.batch_size=8"],
            "maddpg": ["policies.shared.maddpg.learning_starts=16", "policies.shared.maddpg.batch_size=8"],
            "masac": ["policies.shared.masac.learning_starts=16", "policies.shared.masac.batch_size=8"]}
ITERATIONS = 4


def trained_networks(name: str, seed: int, draw_between: bool = False) -> dict[str, torch.Tensor]:
    algorithm = ALGORITHMS[name]
    base = DISCRETE if algorithm.discrete else BOX
    batch = base["env"]["num_envs"] * base["rollout_length"]
    trainer = Trainer(load_config(base, [f"policies.shared.algorithm={name}", f"seed={seed}",
                                         f"total_env_steps={ITERATIONS * batch}", *SETTINGS.get(name, [])]))
    for _ in range(ITERATIONS):
        trainer.train_iteration()
        if draw_between:  # what other code in the process (another run, a user's callback) might draw
            torch.rand(17), torch.randn(5), torch.randint(0, 9, (3,))
    return {key: value.clone() for key, value in trainer.model_tensors().items()}


@pytest.mark.parametrize("name", [name for name, cls in ALGORITHMS.items() if cls.trainable])
def test_same_seed_same_networks_other_seed_other_networks(name: str) -> None:
    first, again, other = trained_networks(name, 0), trained_networks(name, 0, True), trained_networks(name, 1)
    assert first.keys() == again.keys() == other.keys() and first
    for key in first:
        assert torch.equal(first[key], again[key]), f"{name}: {key} differs between two runs with seed 0"
    assert any(not torch.equal(first[key], other[key]) for key in first), f"{name}: seeds 0 and 1 trained alike"
