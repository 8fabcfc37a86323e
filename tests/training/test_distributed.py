"""Training on two processes as a user launches it: ``torchrun --standalone --nproc-per-node=2 -m warpdrive
train ...``, gloo on the CPU. The ranks end with bit-identical networks, the logged env-steps count both
ranks, the pair's checkpoint resumes bit-exactly with two ranks (and is refused by one), and a rank that
raises stops the job with its error shown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from warpdrive.training.checkpoint import load_checkpoint
from warpdrive.training.config import ConfigError, load_config
from warpdrive.training.distributed import networks_digest, rank_seed
from warpdrive.training.run import train

REPO = Path(__file__).resolve().parents[2]
FAILING_ENV = Path(__file__).with_name("rank_failure_env.py")
QUIET = ["device=cpu", "logging.progress=false", "logging.tensorboard=false", "logging.learning_curve=false"]


def torchrun(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node=2 -m warpdrive train ARGS`` (the venv's torchrun)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "warpdrive", "train", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def env_steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["env_steps"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_ranks_identical(run_dir: Path) -> dict:
    """The newest checkpoint holds both ranks' own states; each rank's networks were the saved ones."""
    checkpoint, state = load_checkpoint(run_dir)
    ranks = state["trainer"]["ranks"]
    assert state["trainer"]["world_size"] == 2 and len(ranks) == 2
    saved = networks_digest(load_file(str(checkpoint.models_path)))
    assert [r["networks_sha256"] for r in ranks] == [saved, saved]
    # each rank simulated replicas of its own
    assert [r["env"]["seed"] for r in ranks] == [0, rank_seed(0, 1)]
    assert not torch.equal(ranks[0]["env"]["store"]["obs"], ranks[1]["env"]["store"]["obs"])
    return state


def test_tag_gridworld_on_two_ranks(tmp_path: Path) -> None:
    # 2 ranks x 4 replicas x 8 steps = 64 env-steps per iteration; PPO taggers, A2C runner
    run_dir = tmp_path / "tag"
    proc = torchrun("tag_gridworld", "env.num_envs=4", "rollout_length=8", "total_env_steps=192",
                    "policies.runner.algorithm=a2c", f"logging.run_dir={run_dir}", *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("Trained 192 env-steps") == 1, proc.stdout  # rank 0 alone reports
    assert env_steps_logged(run_dir) == [64, 128, 192]
    assert_ranks_identical(run_dir)


def test_cartpole_ppo_on_two_ranks_resumes_bit_exactly(tmp_path: Path) -> None:
    # 2 ranks x 8 replicas x 16 steps = 256 env-steps per iteration, 4 iterations, checkpoints at 2 and 4
    straight = tmp_path / "straight"
    args = ["cartpole", "env.num_envs=8", "rollout_length=16", "total_env_steps=1024", "checkpoint.every=2", *QUIET]
    proc = torchrun(*args, f"logging.run_dir={straight}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert env_steps_logged(straight) == [256, 512, 768, 1024]
    assert_ranks_identical(straight)

    # resume a copy of the run from its checkpoint at iteration 2: same networks at iteration 4
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    proc = torchrun("--resume", str(resumed / "checkpoints" / "iter_000002.pt"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = load_file(str(straight / "checkpoints" / "iter_000004.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "iter_000004.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert env_steps_logged(resumed) == [256, 512, 768, 1024]

    # one process cannot take over two ranks' env replicas and random streams
    config = load_config("cartpole", ["env.num_envs=8", "rollout_length=16", "total_env_steps=2048", *QUIET])
    with pytest.raises(ConfigError, match=r"saved by a run of 2 process\(es\) and this run has 1: .*"
                                          r"torchrun --nproc-per-node=2"):
        train(config, resume=straight)


def test_a_failing_rank_stops_the_job_with_its_error(tmp_path: Path) -> None:
    # rank 1's env raises in the second iteration while rank 0 waits for it in a collective: torchrun
    # stops rank 0 and fails, showing rank 1's error (the timeout bounds a hang)
    proc = torchrun("cartpole", f"env.name={FAILING_ENV}:CartPoleFailingOnRank1", "env.num_envs=8",
                    "rollout_length=16", "total_env_steps=1024", f"logging.run_dir={tmp_path / 'run'}", *QUIET,
                    cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "RuntimeError: rank 1 failed on purpose" in output, output[-4000:]
    assert "rank      : 1 (local_rank: 1)" in output, output[-4000:]  # torchrun's summary names the rank


def test_ranks_are_refused_before_any_work_without_a_gpu_each(monkeypatch: pytest.MonkeyPatch) -> None:
    import warpdrive.training.distributed as distributed

    for name, value in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="'cuda:1' would put every rank on one GPU"):
        distributed.setup("cuda:1")
    monkeypatch.setattr(distributed, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"started 4 ranks on this node, but it has 2 GPU\(s\).*"
                                          r"--nproc-per-node=2"):
        distributed.setup("auto")
