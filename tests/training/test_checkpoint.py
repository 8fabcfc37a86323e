"""Checkpoints: atomic writes (a crash mid-write leaves the previous checkpoint whole) and bit-exact resume
in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from warpdrive.training import checkpoint as checkpoint_module
from warpdrive.training.checkpoint import atomic_write, find_checkpoint, load_checkpoint
from warpdrive.training.config import load_config
from warpdrive.training.run import train, trainer_from_checkpoint

REPO = Path(__file__).resolve().parents[2]


def grid_config(run_dir: Path, total: int, *overrides: str):
    base = {
        "env": {"name": "tag_gridworld", "num_envs": 6,
                "kwargs": {"num_taggers": 2, "grid_length": 4, "episode_length": 7}},
        "total_env_steps": total,
        "rollout_length": 10,
        "device": "cpu",
        "torch_threads": 1,  # the same in the resuming process: reduction order depends on the thread count
        "policies": {"taggers": {"algorithm": "ppo"}, "runner": {"algorithm": "a2c"}},
        "logging": {"run_dir": str(run_dir), "progress": False, "tensorboard": False, "learning_curve": False},
    }
    return load_config(base, list(overrides))


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def crash(handle) -> None:
        handle.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]  # no temporary file left behind


def test_crash_while_checkpointing_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    first = train(grid_config(run_dir, 60 * 2, "checkpoint.every=1"))
    assert first.checkpoint.name == "iter_000002"

    real_save = torch.save

    def crashing_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        raise KeyboardInterrupt  # killed after the bytes were written, before the rename

    monkeypatch.setattr(checkpoint_module.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        train(grid_config(run_dir, 60 * 3, "checkpoint.every=1"), resume=run_dir)
    monkeypatch.undo()

    found, state = load_checkpoint(run_dir)
    assert found.name == "iter_000002" and state["trainer"]["iteration"] == 2
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["name"] == "iter_000002"
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    trainer, _ = trainer_from_checkpoint(run_dir)
    assert [p.name for p in trainer.policies] == ["taggers", "runner"]


def test_find_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint found at"):
        find_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("gridworld_ppo_a2c", lambda run_dir, total: grid_config(run_dir, total)),
        ("pendulum_ddpg", lambda run_dir, total: load_config(
            {"env": {"name": "pendulum", "num_envs": 4}, "total_env_steps": total, "rollout_length": 10,
             "device": "cpu", "torch_threads": 1,
             "policies": {"shared": {"algorithm": "ddpg", "model": {"hidden_sizes": [16, 16]},
                                     "ddpg": {"learning_starts": 60, "batch_size": 16, "gradient_steps": 3}}},
             "logging": {"run_dir": str(run_dir), "progress": False, "tensorboard": False}})),
    ],
)
def test_resume_in_a_new_process_is_bit_exact(tmp_path: Path, name: str, config) -> None:
    iterations, per_iteration = 6, config(tmp_path / "x", 1).env.num_envs * 10
    total = iterations * per_iteration
    straight = train(config(tmp_path / "straight", total))
    half = train(config(tmp_path / "resumed", total // 2))
    assert half.checkpoint.name == f"iter_{iterations // 2:06d}"

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "warpdrive", "train", "--resume", str(half.run_dir), f"total_env_steps={total}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = find_checkpoint(half.run_dir)
    assert resumed.name == f"iter_{iterations:06d}"
    a, b = load_file(str(straight.checkpoint.models_path)), load_file(str(resumed.models_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the resumed run's metrics read as one run: one row per iteration, same episode statistics
    rows = [json.loads(line) for line in half.metrics_path.read_text().splitlines()]
    straight_rows = [json.loads(line) for line in straight.metrics_path.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, iterations + 1))
    for r, s in zip(rows, straight_rows, strict=True):
        assert {k: v for k, v in r.items() if k.startswith("charts/episodic")} == \
               {k: v for k, v in s.items() if k.startswith("charts/episodic")}
