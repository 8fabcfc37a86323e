"""Training: typed configs, GAE, rollout storage on the device, PPO/A2C/DDPG, the per-group trainer,
run directories, checkpoints, evaluation and rendering. See ``docs/training.md``.

    from warpdrive.training import load_config, train
    result = train(load_config("cartpole", ["total_env_steps=200000"]))
"""

from warpdrive.training.config import ConfigError, TrainConfig, load_config
from warpdrive.training.evaluate import evaluate
from warpdrive.training.guard import NonFiniteError
from warpdrive.training.run import RunResult, train, trainer_from_checkpoint
from warpdrive.training.trainer import Trainer

__all__ = ["ConfigError", "NonFiniteError", "RunResult", "TrainConfig", "Trainer", "evaluate", "load_config",
           "train", "trainer_from_checkpoint"]
