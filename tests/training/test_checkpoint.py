"""Checkpoints: atomic writes (a crash mid-write leaves the previous checkpoint whole); a process killed
with SIGKILL at any point resumes bit-exactly; damaged files are found by their checksums and the newest
whole checkpoint is used; a resume refuses config changes that do not fit the checkpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from warpdrive.cli import main
from warpdrive.training.checkpoint import CheckpointError, atomic_write, find_checkpoint, load_checkpoint
from warpdrive.training.config import ConfigError, config_to_dict, load_config
from warpdrive.training.logging import MetricsFileError, read_metrics
from warpdrive.training.run import resume_changes, train

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


STEPS = 60  # env-steps per iteration of grid_config: 6 envs x 10 steps
KILLED_RUN = Path(__file__).with_name("killed_run.py")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run of 6 iterations with checkpoints at 2, 4 and 6 (the newest 2 kept)."""
    return train(grid_config(tmp_path_factory.mktemp("straight") / "run", 6 * STEPS, "checkpoint.every=2"))


@pytest.mark.parametrize(
    ("point", "note"),
    [
        ("update", None),
        ("metrics", "left out a partial last line"),
        ("checkpoint", "checkpoints/.iter_000004.safetensors.tmp-"),
        ("pointer", None),
    ],
)
def test_sigkill_then_resume_is_bit_exact(tmp_path: Path, straight, capsys, point: str, note: str | None) -> None:
    """A process killed (SIGKILL, by itself: tests/training/killed_run.py) in iteration 4 of 5, in the
    middle of an update, of a metrics line, of a checkpoint file, or between a checkpoint and
    ``latest.json``, resumes from its checkpoint at iteration 2 to the uninterrupted run's networks."""
    run_dir = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(grid_config(run_dir, 5 * STEPS, "checkpoint.every=2"))))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(KILLED_RUN), point, "train", str(config)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    assert json.loads((checkpoints / "latest.json").read_text())["name"] == "iter_000002"
    if point == "checkpoint":  # killed halfway through the file
        [tmp] = checkpoints.glob(".iter_000004.safetensors.tmp-*")
        assert 0 < tmp.stat().st_size < (checkpoints / "iter_000002.safetensors").stat().st_size
    if point == "metrics":
        assert not (run_dir / "metrics.jsonl").read_text().endswith("\n")
    if point == "pointer":  # iteration 4 was saved whole, but latest.json is the commit point
        find_checkpoint(checkpoints / "iter_000004.pt")

    assert main(["train", "--resume", str(run_dir), f"total_env_steps={6 * STEPS}"]) == 0
    err = capsys.readouterr().err
    assert "warpdrive train: note: resuming iter_000002 with total_env_steps: 300 -> 360" in err
    if note is not None:
        assert any(line.startswith("warpdrive train: note: ") and note in line for line in err.splitlines()), err
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]
    resumed = find_checkpoint(run_dir)
    assert resumed.name == "iter_000006"
    a, b = load_file(str(straight.checkpoint.models_path)), load_file(str(resumed.models_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == list(range(1, 7))
    for r, s in zip(rows, read_metrics(straight.metrics_path), strict=True):
        assert {k: v for k, v in r.items() if k.startswith("charts/episodic")} == \
               {k: v for k, v in s.items() if k.startswith("charts/episodic")}


def _zero_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "bad_file", "found"),
    [
        (lambda d: (d / "iter_000006.pt").write_bytes((d / "iter_000006.pt").read_bytes()[:1000]),
         "iter_000006.pt", "iter_000004"),
        (lambda d: _zero_middle(d / "iter_000006.safetensors"), "iter_000006.safetensors", "iter_000004"),
        (lambda d: (d / "iter_000006.json").unlink(), "iter_000006.json", "iter_000004"),
        (lambda d: (d / "iter_000006.json").write_text('{"sha256": {"iter_0'), "iter_000006.json", "iter_000004"),
        (lambda d: (d / "latest.json").write_text('{"name": "iter_0'), "latest.json", "iter_000006"),
        (lambda d: (d / "latest.json").unlink(), "latest.json", "iter_000006"),
    ],
    ids=["truncated-state", "zeroed-weights", "no-manifest", "garbled-manifest", "garbled-latest", "no-latest"],
)
def test_a_damaged_checkpoint_falls_back_to_the_newest_whole_one(tmp_path: Path, straight, caplog, damage,
                                                                bad_file: str, found: str) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.copytree(straight.run_dir / "checkpoints", checkpoints)
    damage(checkpoints)
    with caplog.at_level(logging.WARNING, "warpdrive"):
        checkpoint, state = load_checkpoint(tmp_path / "run")
    assert checkpoint.name == found and state["trainer"]["iteration"] == int(found[5:])
    warnings = [r.getMessage() for r in caplog.records]
    assert any(str(checkpoints / bad_file) in w for w in warnings), warnings
    assert all("\n" not in w for w in warnings)
    if found != "iter_000006":  # named itself, the damaged checkpoint is refused: no fallback
        with pytest.raises(CheckpointError, match=re.escape(str(checkpoints / bad_file))):
            find_checkpoint(checkpoints / "iter_000006.pt")


def test_every_checkpoint_damaged_is_one_line_and_exit_2(tmp_path: Path, straight, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight.run_dir / "checkpoints", run_dir / "checkpoints")
    for name in ("iter_000004", "iter_000006"):
        _zero_middle(run_dir / "checkpoints" / f"{name}.pt")
    with pytest.raises(CheckpointError, match=r"no whole checkpoint in .*iter_000006\.pt is damaged.*iter_000004\.pt"):
        find_checkpoint(run_dir)
    for argv in (["eval", str(run_dir)], ["train", "--resume", str(run_dir)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith(f"warpdrive {argv[0]}: error: no whole checkpoint in {run_dir / 'checkpoints'}")
        assert all(line.startswith(f"warpdrive {argv[0]}: warning: ") for line in err[:-1]), err


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path: Path, straight, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight.run_dir, run_dir)
    refused = ["env.kwargs.grid_length=5", "env.num_envs=8", "policies.runner.algorithm=ppo",
               "policies.taggers.model.hidden_sizes=[8]", "seed=3"]
    assert main(["train", "--resume", str(run_dir), "total_env_steps=1000", *refused]) == 2
    [err] = capsys.readouterr().err.splitlines()
    assert err.startswith("warpdrive train: error: --resume: the checkpoint was saved with another config "
                          "(env.num_envs: 6 -> 8; env.kwargs.grid_length: 4 -> 5; policies.taggers.model.")
    assert "; policies.runner.algorithm: 'a2c' -> 'ppo'; seed: 0 -> 3)" in err
    assert "total_env_steps" not in err.split("may change only")[0]  # an allowed change
    # a config file given with --resume is compared too, before anything is built
    other = grid_config(run_dir, 6 * STEPS, "checkpoint.every=2", "rollout_length=5")
    with pytest.raises(ConfigError, match=r"rollout_length: 10 -> 5\); a resumed run may change only total_env_steps, "
                                          r"logging\.\*, checkpoint\.\*, policies\.\*\.optimizer\.\*"):
        train(other, resume=run_dir)


def test_resume_changes_lists_the_allowed_ones() -> None:
    saved = config_to_dict(grid_config("run", 100))
    new = config_to_dict(grid_config("elsewhere", 200, "checkpoint.every=3", "logging.progress=true",
                                     "guard_nonfinite=false", "policies.runner.optimizer.lr=1e-4"))
    assert resume_changes(saved, new) == [
        "total_env_steps: 100 -> 200", "policies.runner.optimizer.lr: 0.0003 -> 0.0001",
        "guard_nonfinite: True -> False", "logging.progress: False -> True", "checkpoint.every: 0 -> 3"]
    assert resume_changes(saved, saved) == []


def test_read_metrics_refuses_a_damaged_line_before_the_last(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iter\n{"iteration": 3}\n')
    with pytest.raises(MetricsFileError, match=f"{re.escape(str(path))}:2: not a JSON object"):
        read_metrics(path)


def test_resume_with_a_damaged_metrics_line_is_one_line_naming_it(tmp_path: Path, straight, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight.run_dir, run_dir)
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().split("\n")
    metrics.write_text("\n".join([lines[0], lines[1][:7], *lines[2:]]))
    assert main(["train", "--resume", str(run_dir), f"total_env_steps={8 * STEPS}"]) == 2
    note, err = capsys.readouterr().err.splitlines()  # the resume's note, then the error
    assert note.startswith("warpdrive train: note: resuming iter_000006")
    assert err.startswith(f"warpdrive train: error: {metrics}:2: not a JSON object (") and "mend or delete" in err


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
