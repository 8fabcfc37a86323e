"""What the training tests share: training a config and judging the result against random actions, and
synthetic rollouts for the off-policy algorithms' update tests."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import torch

from warpdrive.training.config import TrainConfig, config_to_dict, load_config
from warpdrive.training.evaluate import evaluate
from warpdrive.training.storage import EnvRollout, RolloutStorage
from warpdrive.training.trainer import Trainer


@dataclass
class Judged:
    """A trained policy's evaluation metrics (``return/<group>``, ``episode_length``, ...) beside uniformly random
    actions' on the same fresh episodes, and the training's env-steps and seconds."""

    trained: dict[str, float]
    random: dict[str, float]
    env_steps: int
    seconds: float


def train_and_judge(config: TrainConfig, episodes: int, deterministic: bool = False) -> Judged:
    """Train ``config`` to its end, then evaluate one episode in each of ``episodes`` fresh replicas (seed 999)."""
    trainer = Trainer(config)
    start = time.perf_counter()
    while not trainer.done:
        trainer.train_iteration()
    seconds = time.perf_counter() - start
    judge = Trainer(load_config(config_to_dict(config), [f"env.num_envs={episodes}"]))
    judge.load_model_tensors(trainer.model_tensors())
    judged = Judged(evaluate(judge, deterministic=deterministic, seed=999),
                    evaluate(judge, random_actions=True, seed=999), trainer.env_steps, seconds)
    print(f"{config.env.name}: {judged.env_steps} env-steps in {seconds:.1f} s; trained {judged.trained}; "
          f"random {judged.random}")
    return judged


def joint_rollout(algorithm: Any, steps: int = 6, envs: int = 4, seed: int = 1) -> RolloutStorage:
    """A rollout of random observations and rewards for ``algorithm``'s agents, acted in by the algorithm (some
    episodes terminated, some truncated)."""
    generator = torch.Generator().manual_seed(seed)
    agents, obs_size = algorithm.num_agents, algorithm.obs_size
    env_rollout = EnvRollout(steps, envs, agents, obs_size, torch.device("cpu"))
    storage = RolloutStorage(env_rollout, slice(0, agents), algorithm.action_size, algorithm.stored_action_dtype,
                             on_policy=False)
    for t in range(steps):
        obs = torch.randn(envs, agents, obs_size, generator=generator)
        with torch.no_grad():
            act = algorithm.act(obs, None)
        index = torch.tensor([t])
        env_rollout.write(index, obs=obs, rewards=torch.randn(envs, agents, generator=generator),
                          terminated=torch.rand(envs, generator=generator) < 0.2,
                          truncated=torch.rand(envs, generator=generator) < 0.2,
                          final_obs=torch.randn(envs, agents, obs_size, generator=generator))
        storage.write(index, actions=act.actions)
    env_rollout.last_obs.normal_(generator=generator)
    return storage



def restored_copy(original: Any, make_fresh: Any) -> Any:
    """``make_fresh()`` (built under other initial weights) with ``original``'s networks, optimisers, replay and
    counters loaded, saved and read back as a checkpoint does."""
    buffer = io.BytesIO()
    torch.save({"modules": {k: m.state_dict() for k, m in original.modules().items()},
                "state": original.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    torch.manual_seed(123)  # other initial weights
    resumed = make_fresh()
    for name, module in resumed.modules().items():
        module.load_state_dict(saved["modules"][name])
    resumed.load_state_dict(saved["state"])
    return resumed


def assert_same_next_update(original: Any, resumed: Any, storage: RolloutStorage) -> None:
    """Both update from ``storage`` with the same random state; every module's parameters and buffers stay
    bit-identical."""
    for algorithm in (original, resumed):
        torch.manual_seed(7)
        algorithm.update(storage, 0.5)
    for name, module in original.modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, resumed.modules()[name].state_dict()[key]), f"{name}.{key}"
