"""Every ``warpdrive`` command shown in the README and docs/ runs as written, on a budget.

The commands are read from the fenced code blocks of each file, in order, and run in a scratch folder holding a
copy of examples/ (the README's tutorial names ``examples/rendezvous.py``). What is added, and only added, to keep
them short: ``train`` gets ``total_env_steps=1`` (one iteration; a later override wins) and no progress bar, a
``--resume`` one more iteration than its run has, and ``bench`` one short repeat of a two-step rollout.
Placeholders such as ``runs/<run>`` or ``runs/rendezvous-ppo-<timestamp>`` become the run the file trained last.
``pip`` and ``torchrun`` lines are not run here (installation is CI itself; two-process training is
tests/training/test_distributed.py).

The README's Python examples that are whole programs (they start with an import; the tutorial's excerpts are
tested as examples/rendezvous.py) run as written in a fresh interpreter, on the same kind of budget.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SUBCOMMANDS = {"train", "eval", "render", "check", "envs", "bench", "tune"}
PLACEHOLDER = re.compile(r"runs/[\w.-]*<\w+>")


def commands_in(path: Path) -> list[list[str]]:
    """The ``warpdrive <subcommand> ...`` commands of the file's code blocks, as argument lists (comments and
    line continuations resolved; a command after ``&&`` counts, output lines such as ``warpdrive train: error``
    do not)."""
    found = []
    for block in re.findall(r"```[\w-]*\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                if not part.strip().startswith("warpdrive "):
                    continue
                words = shlex.split(part, comments=True)
                if len(words) >= 2 and words[0] == "warpdrive" and words[1] in SUBCOMMANDS:
                    found.append(words[1:])
    return found


def test_the_docs_show_commands() -> None:
    """The parser finds what the files show (a broken pattern would let the test below pass on nothing)."""
    shown = {path.name: [words[0] for words in commands_in(path)] for path in DOCS}
    assert shown["README.md"] == ["train", "check", "envs", "render", "train", "eval", "render"]
    assert shown["training.md"] == ["train", "train", "eval", "render", "render", "train", "bench", "tune", "train"]


def on_a_budget(args: list[str], last_run: Path | None) -> list[str]:
    if last_run is not None:
        args = [PLACEHOLDER.sub(f"runs/{last_run.name}", arg) for arg in args]
    if args[0] == "train" and "--resume" in args:
        assert last_run is not None
        config = yaml.safe_load((last_run / "config.yaml").read_text())
        batch = config["env"]["num_envs"] * config["rollout_length"]
        return [*args, f"total_env_steps={2 * batch}", "logging.progress=false"]
    if args[0] == "train":
        return [*args, "total_env_steps=1", "logging.progress=false"]
    if args[0] == "bench":
        return [*args, "--steps", "2", "--repeats", "1", "--iterations", "1", "rollout_length=2"]
    return args


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_every_command_runs(path: Path, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    last_run = None
    for args in commands_in(path):
        args = on_a_budget(args, last_run)
        if any(PLACEHOLDER.search(arg) for arg in args):
            pytest.fail(f"{path.name}: {shlex.join(args)} names a run before any was trained")
        done = subprocess.run([sys.executable, "-m", "warpdrive", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=600)
        assert done.returncode == 0, f"{path.name}: warpdrive {shlex.join(args)}\n{done.stderr[-3000:]}"
        runs = sorted((tmp_path / "runs").iterdir(), key=lambda run: run.stat().st_mtime) if (
            tmp_path / "runs").is_dir() else []
        last_run = runs[-1] if runs else None


#: budget substitutions in the README's Python examples (each must be found: a changed example fails the test)
PYTHON_BUDGET = {"model.learn(15_000)": "model.learn(256)"}


def python_examples() -> list[tuple[int, str]]:
    """``(line, code)`` of the README's Python code blocks that are whole programs."""
    text = (REPO / "README.md").read_text()
    found = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        code = match.group(1)
        if code.startswith(("import ", "from ")):
            found.append((text[:match.start()].count("\n") + 2, code))
    return found


def test_the_readme_shows_python_programs() -> None:
    assert len(python_examples()) >= 5


@pytest.mark.parametrize(("line", "code"), python_examples(),
                         ids=[f"README.md:{line}" for line, _ in python_examples()])
def test_every_python_example_runs(line: int, code: str, tmp_path: Path) -> None:
    if '"cuda"' in code and not torch.cuda.is_available():
        pytest.skip("a GPU example (run where CUDA is available)")
    for written, budget in PYTHON_BUDGET.items():
        code = code.replace(written, budget)
    ast.parse(code)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert done.returncode == 0, f"README.md:{line}\n{done.stderr[-3000:]}"


def test_the_readme_env_catalogue_lists_every_packaged_env_with_its_groups() -> None:
    """The catalogue table names each env of the registry once, with the agent groups its default config has."""
    from warpdrive.envs import REGISTRY, env_class

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Env catalogue"):].split("\n\n")[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = re.match(r"\[`(\w+)`\]", cells[0]).group(1)  # type: ignore[union-attr]
        rows[name] = cells[2]
    assert sorted(rows) == sorted(REGISTRY)
    for name, groups in rows.items():
        env = env_class(name)(num_envs=1, backend="cpu", validate=False)
        assert sorted(groups.split(", ")) == sorted(env.groups()), name
