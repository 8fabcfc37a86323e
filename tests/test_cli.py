"""The ``warpdrive`` command as a user types it: train a packaged config, evaluate, render, bench, errors;
a user's env outside the package, as the README's tutorial ends (``path.py:Class``, ``module:Class``, an
installed package's entry point); ``warpdrive envs``; ``warpdrive check``; ``--version`` and the examples of
``train --help`` and ``check --help``; errors in a user's env code, reported in a line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
import yaml

import warpdrive as package
from warpdrive.cli import CHECK_EXAMPLE, TRAIN_EXAMPLE, main
from warpdrive.envs import env_class, make
from warpdrive.training.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "examples" / "rendezvous.py"


def warpdrive(*args: str, cwd: Path, timeout: int = 300, pythonpath: str = str(REPO)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath}
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
                      "--iterations", "1", "total_env_steps=1000", "env.kwargs.num_taggers=3", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = [json.loads(line) for line in bench.stdout.splitlines()]
    assert [r["bench"] for r in rows] == ["env", "train"]
    assert all(r["env_steps_per_s"] > 0 and r["num_envs"] == 16 for r in rows)
    assert rows[0]["num_agents"] == rows[1]["num_agents"] == 4  # one config for both rows (override included)


def test_errors_name_the_key_and_exit_with_2(tmp_path: Path) -> None:
    bad = warpdrive("train", "tag_gridworld", "policies.taggers.ppo.clip_coef=-1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "policies.taggers.ppo.clip_coef: expected a float > 0, got -1" in bad.stderr
    missing = warpdrive("eval", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 2 and "no checkpoint found" in missing.stderr


def _install_entry_points(root: Path, lines: list[str]) -> None:
    """What ``pip install`` of a package declaring ``[project.entry-points."warpdrive.envs"]`` leaves behind."""
    dist = root / "meetings-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: meetings\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[warpdrive.envs]\n" + "\n".join(lines) + "\n")


def test_train_eval_render_the_tutorial_env_by_path(tmp_path: Path) -> None:
    relative = os.path.relpath(TUTORIAL, tmp_path)  # as typed in the directory the user works in
    train = warpdrive("train", f"{relative}:Rendezvous", "total_env_steps=128", "env.num_envs=8", "rollout_length=8",
                      "env.kwargs.num_agents=3", "env.kwargs.episode_length=6", "logging.progress=false", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "Trained 128 env-steps" in train.stdout and "Mean episodic return (last iteration): agents -" in train.stdout
    [run] = (tmp_path / "runs").iterdir()
    assert run.name.startswith("rendezvous-ppo-")  # the env's own name, not its path
    stored = yaml.safe_load((run / "config.yaml").read_text())["env"]
    assert stored["name"] == f"{TUTORIAL}:Rendezvous" and stored["kwargs"]["num_agents"] == 3

    elsewhere = tmp_path / "elsewhere"  # the stored absolute path still finds the file
    elsewhere.mkdir()
    evaluate = warpdrive("eval", str(run), "--episodes", "4", cwd=elsewhere)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert evaluate.stdout.startswith("rendezvous, checkpoint iter_000002, 4 episodes per policy:")
    result = json.loads(evaluate.stdout.strip().splitlines()[-1])
    assert result["trained"]["episodes"] == 4 and result["trained"]["episode_length"] <= 6
    assert result["random"]["return/agents"] < 0  # minus distances

    gif = elsewhere / "episode.gif"
    render = warpdrive("render", str(run), "--out", str(gif), cwd=elsewhere)
    assert render.returncode == 0, render.stderr[-3000:]
    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and 2 <= frames.shape[0] <= 7 and frames.shape[-1] == 3


def test_envs_lists_registered_and_installed_envs(tmp_path: Path) -> None:
    _install_entry_points(tmp_path, ["meet = rendezvous:Rendezvous", "broken = no_such_module:Env"])
    path = os.pathsep.join([str(REPO), str(tmp_path), str(REPO / "examples")])
    listing = warpdrive("envs", cwd=tmp_path, pythonpath=path)
    assert listing.returncode == 0, listing.stderr[-3000:]
    out = listing.stdout
    assert "tag_gridworld (warpdrive.envs.tag_gridworld:TagGridWorld): 11 agents\n  taggers    10 x  observation" in out
    assert "\n  runner      1 x  observation Box(-inf, inf, (45,), float32), action Discrete(5)\n" in out
    assert "pendulum (warpdrive.envs.pendulum:Pendulum): 1 agent\n" in out
    assert "action Box(-2, 2, (1,), float32)\n  parameters: episode_length=200, g=10.0, initial_state=None\n" in out
    assert ("meet (rendezvous:Rendezvous): 8 agents\n"
            "  agents     8 x  observation Box(-inf, inf, (4,), float32), action Discrete(5)\n"
            "  parameters: num_agents=8, size=10.0, step_size=0.5, radius=1.0, episode_length=100\n") in out
    assert ("broken: env 'broken': entry point 'no_such_module:Env' of group 'warpdrive.envs' does not load: "
            "ModuleNotFoundError: No module named 'no_such_module'\n") in out

    one = warpdrive("envs", "examples/rendezvous.py:Rendezvous", cwd=REPO)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.splitlines()[0] == f"examples/rendezvous.py:Rendezvous ({TUTORIAL}:Rendezvous): 8 agents"
    unknown = warpdrive("envs", "rendevous", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("warpdrive envs: error: unknown env 'rendevous'; ")


def test_module_class_names_a_module_in_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "meeting.py").write_text(TUTORIAL.read_text())
    # as the `warpdrive` script runs it: unlike `python -m`, Python does not put the current directory first
    script = "import sys; sys.path.pop(0); from warpdrive.cli import main; sys.exit(main())"
    one = subprocess.run([sys.executable, "-c", script, "envs", "meeting:Rendezvous"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.startswith("meeting:Rendezvous (meeting:Rendezvous): 8 agents\n")


def test_entry_point_envs_resolve_and_train_with_the_default_config(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _install_entry_points(tmp_path, ["meet = rendezvous:Rendezvous"])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    cls = env_class("meet")
    assert cls.__module__ == "rendezvous" and cls.__name__ == "Rendezvous"
    config = load_config("meet", ["total_env_steps=100"])
    assert config.env.name == "meet" and list(config.policies) == ["shared"]
    assert config.policies["shared"].algorithm == "ppo"
    with pytest.raises(ConfigError, match="total_env_steps: missing required key: 'meet' has no config file"):
        load_config("meet")


def test_version_and_the_train_help_example(tmp_path: Path) -> None:
    version = warpdrive("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout == f"warpdrive {package.__version__}\n"
    helped = warpdrive("train", "--help", cwd=tmp_path)
    assert TRAIN_EXAMPLE in " ".join(helped.stdout.split())  # argparse wraps the text
    command, *args = shlex.split(TRAIN_EXAMPLE)
    assert command == "warpdrive"
    # the example as printed, with a budget of one iteration (later overrides win)
    example = warpdrive(*args, "total_env_steps=2048", "logging.progress=false", cwd=tmp_path)
    assert example.returncode == 0, example.stderr[-3000:]
    assert "Trained 2,048 env-steps" in example.stdout
    [run] = (tmp_path / "runs").iterdir()
    assert yaml.safe_load((run / "config.yaml").read_text())["policies"]["taggers"]["optimizer"]["lr"] == 3e-4


def test_check_help_example_runs_the_contract_on_the_tutorial_env() -> None:
    helped = warpdrive("check", "--help", cwd=REPO)
    assert CHECK_EXAMPLE in " ".join(helped.stdout.split())
    command, *args = shlex.split(CHECK_EXAMPLE)
    assert command == "warpdrive"
    checked = warpdrive(*args, cwd=REPO)  # the example names the tutorial file relative to the repository
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    lines = checked.stdout.splitlines()
    assert lines[0] == "examples/rendezvous.py:Rendezvous: all checks pass"
    for name in ("parameters", "actions", "seeding", "finite", "render", "consistency[start='random']", "ptx"):
        assert any(line.startswith(f"  PASS  {name}") for line in lines), (name, lines)


def test_check_finds_an_index_out_of_bounds_on_the_cpu(tmp_path: Path) -> None:
    """`warpdrive check` steps the CPU side with every array index checked (debug mode): an env that writes one
    float past its observation fails there, not only in the simulator's comparison."""
    source = TUTORIAL.read_text()
    planted = "    s.obs[env, agent, 3] = s.centre[env, 1] / p.size\n"
    assert planted in source
    (tmp_path / "meet.py").write_text(source.replace(planted, planted.replace("agent, 3]", "agent, 4]")))
    checked = warpdrive("check", "meet.py:Rendezvous", "episode_length=4", "--no-ptx", cwd=tmp_path)
    assert checked.returncode == 1
    message = "IndexError: Rendezvous: its reset kernels indexed an array out of bounds (index is out of bounds)"
    for name in ("seeding", "finite"):
        assert any(line.startswith(f"  FAIL  {name}: {message}") for line in checked.stdout.splitlines()), (
            checked.stdout)


def test_check_exit_status_and_a_typing_error_in_one_line(tmp_path: Path) -> None:
    unknown = warpdrive("check", "no_such_env", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown env 'no_such_env'" in unknown.stderr
    bad = warpdrive("check", f"{TUTORIAL}:Rendezvous", "num_agents=1", cwd=tmp_path)
    assert bad.returncode == 2 and "num_agents: expected an integer >= 2, got 1" in bad.stderr
    source = TUTORIAL.read_text()
    planted = "    s.x[env, agent] = min(max(x, np.float32(0.0)), p.size)\n"
    assert planted in source
    (tmp_path / "meet.py").write_text(source.replace(planted, planted.replace("p.size)", "p.size) + speed")))
    line = source[:source.index(planted)].count("\n") + 1
    where = f"{tmp_path / 'meet.py'}:{line}, in move(): unknown name 'speed'"
    checked = warpdrive("check", "meet.py:Rendezvous", "episode_length=4", "--no-ptx", cwd=tmp_path)
    assert checked.returncode == 1
    assert f"FAIL  seeding: Numba cannot compile the env's kernels: {where}" in checked.stdout
    assert f"FAIL  actions: Numba cannot compile the env's kernels: {where}" in checked.stdout
    lines = checked.stdout.splitlines()
    assert all(line.startswith(("  PASS", "  FAIL", "  SKIP")) for line in lines[1:]), lines  # one line per check
    train = warpdrive("train", "meet.py:Rendezvous", "total_env_steps=64", "logging.progress=false", cwd=tmp_path)
    assert train.returncode == 1
    assert train.stderr.splitlines() == [f"warpdrive train: error: Numba cannot compile the env's kernels: {where}",
                                         "  (the full Numba error: add --debug, or set WARPDRIVE_DEBUG=1)"]


def test_render_random_actions_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gif = tmp_path / "random.gif"
    assert main(["render", "cartpole", "--random", "--out", str(gif), "--seed", "4"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {gif}"
    frames = iio.imread(gif, index=None)
    # the episode the same seed and random stream play: its first frame and its length
    env = make("cartpole", num_envs=1, device="cpu", seed=4)
    env.reset(seed=4)
    generator = torch.Generator().manual_seed(4)
    steps = 0
    while not bool(env.store["done"][0]):
        env.sample_actions(generator)
        env.step_without_reset()
        steps += 1
    assert frames.shape[0] == steps + 1 and 5 < steps < 500  # random actions let the pole fall soon
    assert main(["render", "cartpole", "--random", "--deterministic", "--out", str(gif)]) == 2
    assert "--deterministic" in capsys.readouterr().err
