"""The ``warpdrive`` command as a user types it: train a packaged config, evaluate, render, bench, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio

REPO = Path(__file__).resolve().parents[1]


def warpdrive(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "warpdrive", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_train_eval_render(tmp_path: Path) -> None:
    train = warpdrive("train", "tag_gridworld", "total_env_steps=20000", "policies.runner.algorithm=random",
                      "logging.progress=false", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("tag_gridworld-ppo+random-")
    run = runs[0]
    out = train.stdout
    for line in ("Trained 20,480 env-steps", f"metrics:        runs/{run.name}/metrics.jsonl",
                 f"tensorboard --logdir runs/{run.name}/tensorboard", "learning_curve.png",
                 f"warpdrive render runs/{run.name} --out"):
        assert line in out, out
    assert (run / "learning_curve.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == 20480 and "charts/episodic_return/taggers" in rows[-1]
    assert "policies:" in (run / "config.yaml").read_text()

    evaluate = warpdrive("eval", str(run), "--episodes", "50", cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    result = json.loads(evaluate.stdout.strip().splitlines()[-1])
    assert result["trained"]["episodes"] == 50 and "return/taggers" in result["random"]
    assert "episode_length" in evaluate.stdout

    gif = tmp_path / "episode.gif"
    render = warpdrive("render", str(run), "--out", str(gif), cwd=tmp_path)
    assert render.returncode == 0, render.stderr[-3000:]
    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and frames.shape[0] >= 2 and frames.shape[-1] == 3


def test_bench_prints_json_lines(tmp_path: Path) -> None:
    bench = warpdrive("bench", "tag_gridworld", "--envs", "16", "--steps", "20", "--repeats", "1",
                      "--iterations", "1", "total_env_steps=1000", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = [json.loads(line) for line in bench.stdout.splitlines()]
    assert [r["bench"] for r in rows] == ["env", "train"]
    assert all(r["env_steps_per_s"] > 0 and r["num_envs"] == 16 for r in rows)


def test_errors_name_the_key_and_exit_with_2(tmp_path: Path) -> None:
    bad = warpdrive("train", "tag_gridworld", "policies.taggers.ppo.clip_coef=-1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "policies.taggers.ppo.clip_coef: expected a float > 0, got -1" in bad.stderr
    missing = warpdrive("eval", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 2 and "no checkpoint found" in missing.stderr
