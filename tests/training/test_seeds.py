"""Several seeds of one config (``warpdrive train CONFIG --seeds N``): separate runs and their aggregate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from warpdrive.cli import main
from warpdrive.core.device import cuda_available
from warpdrive.core.typed import ConfigError
from warpdrive.training.config import load_config
from warpdrive.training.graphs import new_stream
from warpdrive.training.logging import read_metrics
from warpdrive.training.run import train
from warpdrive.training.seeds import aggregate_runs, bootstrap_interval, plot_seed_curves, train_seeds

SMALL = ["total_env_steps=3072", "logging.progress=false", "env.num_envs=8", "rollout_length=64",
         "checkpoint.at_end=false", "logging.learning_curve=false"]


def _learned(rows: list[dict]) -> list[dict]:
    """Metrics rows without the clock's readings (``charts/SPS``, ``time/...``)."""
    return [{k: v for k, v in row.items() if k != "charts/SPS" and not k.startswith("time/")} for row in rows]


def test_the_bootstrap_interval_of_a_mean() -> None:
    values = np.random.default_rng(3).normal(10.0, 2.0, size=30)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high
    # about the normal interval of the mean: 1.96 standard errors either side
    half = 1.96 * values.std() / np.sqrt(values.size)
    assert abs((high - low) / 2 - half) < 0.15 * half
    assert bootstrap_interval(values) == (low, high)  # deterministic
    assert bootstrap_interval([4.0]) == (4.0, 4.0) and bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_runs_are_aggregated_where_each_has_a_return() -> None:
    key = "charts/episodic_return/agents"
    runs = [
        [{"env_steps": 10, key: 1.0}, {"env_steps": 20, key: 3.0}, {"env_steps": 30}],
        [{"env_steps": 10, key: 2.0}, {"env_steps": 20}, {"env_steps": 30, key: 7.0}],
        [{"env_steps": 10, key: 6.0}, {"env_steps": 20, key: 5.0}],  # stopped earlier
    ]
    rows, finals = aggregate_runs(runs)
    assert [row["env_steps"] for row in rows] == [10, 20]  # logged by every run
    assert rows[0]["agents"]["mean"] == 3.0 and rows[0]["agents"]["seeds"] == 3
    assert rows[1]["agents"]["mean"] == 4.0 and rows[1]["agents"]["seeds"] == 2
    assert rows[0]["agents"]["ci_low"] <= 3.0 <= rows[0]["agents"]["ci_high"]
    assert finals["agents"]["per_seed"] == [3.0, 7.0, 5.0] and finals["agents"]["mean"] == 5.0


def test_train_seeds_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cartpole", "--seeds", "2", "seed=5", "total_env_steps=6144", "logging.progress=false",
                 "env.num_envs=8", "rollout_length=128", "checkpoint.at_end=false"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Trained 2 seeds (5..6) of cartpole")
    [group] = (tmp_path / "runs").iterdir()
    runs = [read_metrics(group / f"seed_{seed}" / "metrics.jsonl") for seed in (5, 6)]
    assert [yaml.safe_load((group / f"seed_{s}" / "config.yaml").read_text())["seed"] for s in (5, 6)] == [5, 6]
    key = "charts/episodic_return/agents"
    returns = [[row[key] for row in rows if key in row] for rows in runs]
    assert returns[0] != returns[1]  # two seeds, two runs
    aggregate = [json.loads(line) for line in (group / "aggregate.jsonl").read_text().splitlines()]
    by_steps = [{row["env_steps"]: row for row in rows} for rows in runs]
    for row in aggregate:
        expected = [run[row["env_steps"]][key] for run in by_steps if key in run[row["env_steps"]]]
        assert row["agents"]["mean"] == pytest.approx(np.mean(expected), rel=1e-12)
    summary = json.loads((group / "summary.json").read_text())
    assert summary["seeds"] == [5, 6] and summary["final_return"]["agents"]["per_seed"] == [r[-1] for r in returns]
    assert (group / "aggregate.png").stat().st_size > 0
    assert f"Final mean episodic return, agents: {np.mean([r[-1] for r in returns]):.3f}" in out


def test_seed_curves_are_plotted_from_per_seed_values(tmp_path: Path) -> None:
    """The benchmark scripts' curves (a label with three seeds, one with a single seed, a baseline) as a PNG."""
    curves = {"a": {0: [1.0, 2.0, 3.0], 100: [2.0, 3.0, 4.0]}, "b": {0: [0.5], 100: [0.7]}}
    out = plot_seed_curves(curves, tmp_path / "curves.png", "title", baseline=("random", 0.0))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_seed_of_several_trains_as_that_seed_alone(tmp_path: Path) -> None:
    """Each run draws from its own generator: seed 6 of ``--seeds 2 seed=5`` is ``seed=6`` run by itself, bit
    for bit (the runs share torch's default generator only while building their networks, which reseeds)."""
    several = train_seeds(load_config("cartpole", [*SMALL, "device=cpu", "seed=5",
                                                   f"logging.root={tmp_path / 'several'}"]), 2)
    alone = train(load_config("cartpole", [*SMALL, "device=cpu", "seed=6", f"logging.root={tmp_path / 'alone'}"]))
    rows = _learned(read_metrics(several.runs[1].metrics_path))
    assert rows == _learned(read_metrics(alone.metrics_path))
    assert any(key.startswith("losses/") for key in rows[-1])  # it learned: the losses are compared too
    assert rows != _learned(read_metrics(several.runs[0].metrics_path))
    assert several.summary["concurrent"] == 1  # on the CPU, one after another


def test_concurrent_runs_need_a_gpu_and_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cartpole", "--seeds", "2", "--concurrent", "2", "device=cpu", *SMALL]) == 2
    assert "--concurrent" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert main(["train", "cartpole", "--concurrent", "2", *SMALL]) == 2
    assert "add --seeds N" in capsys.readouterr().err
    assert main(["train", "cartpole", "--seeds", "2", "--concurrent", "0", *SMALL]) == 2
    with pytest.raises(ConfigError, match="need a CUDA device"):
        train_seeds(load_config("cartpole", [*SMALL, "device=cpu"]), 2, concurrent=2)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_new_streams_are_not_torchs_pooled_ones() -> None:
    """Streams that training makes are the caller's alone: never one of the pool that torch.cuda.Stream()
    hands out round-robin (which another run of the process may hold), and they run work."""
    device = torch.device("cuda")
    pooled = {torch.cuda.Stream(device).cuda_stream for _ in range(80)}
    made = [new_stream(device) for _ in range(4)]
    assert len({stream.cuda_stream for stream in made}) == 4 and not {s.cuda_stream for s in made} & pooled
    with torch.cuda.stream(made[0]):
        x = torch.arange(1000, device=device).sum()
    made[0].synchronize()
    assert int(x) == 499500


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("config", ["cartpole", "simple_spread/maddpg"])
def test_seeds_at_once_on_the_gpu_train_as_one_at_a_time(config: str, tmp_path: Path) -> None:
    """Runs in threads on streams of their own (their graphs captured in turn) learn what they learn one
    after another, bit for bit, as runs one after another repeat bit for bit. Big enough (512 envs, 20
    iterations, updates replayed from CUDA graphs) that runs racing on shared memory would show: the H200
    showed such a race at 512 envs from the third iteration, which 64 envs and 8 iterations did not."""
    overrides = ["device=cuda", "env.num_envs=512", "rollout_length=64", f"total_env_steps={512 * 64 * 20}",
                 "logging.progress=false", "checkpoint.at_end=false", "logging.learning_curve=false"]
    results = {at_once: train_seeds(load_config(config, [*overrides, f"logging.root={tmp_path / str(at_once)}"]),
                                    4, concurrent=at_once) for at_once in (1, 4)}
    assert results[4].summary["concurrent"] == 4
    for sequential, together in zip(results[1].runs, results[4].runs, strict=True):
        first, second = (_learned(read_metrics(run.metrics_path)) for run in (sequential, together))
        assert first[-1]["env_steps"] == 512 * 64 * 20
        assert second == first
