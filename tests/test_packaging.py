"""warpdrive as users install it: ``python -m build`` makes an sdist and a wheel; the wheel installs
(non-editable) into a new virtual environment and, from outside the source tree, runs ``--version``, the README's
quick start (``warpdrive train tag_gridworld``, with a small budget) and ``warpdrive check cartpole``.

The new environment reuses this one's installed dependencies (torch, Numba: gigabytes to download otherwise) by
adding this environment's site-packages *after* its own. Where warpdrive is installed editable here (as the README
and CI install it), that site-packages also holds setuptools' editable import hook for warpdrive; the test proves
that every warpdrive module the new environment imports comes from the wheel, not from the source tree.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import warpdrive

REPO = Path(__file__).resolve().parents[1]
#: what the source tree may hold beside its files (.gitignore's entries and the repository itself)
NOT_SOURCE = shutil.ignore_patterns(".git", "__pycache__", "*.py[cod]", "*.egg-info", "build", "dist", "runs",
                                    ".venv", ".*_cache", ".whl", ".refbench")

pytestmark = pytest.mark.xdist_group("packaging")


def files_under(root: Path, folder: str) -> set[str]:
    """The paths (relative to ``root``, POSIX) of the files under ``root / folder``, caches left out."""
    return {path.relative_to(root).as_posix() for path in (root / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The (sdist, wheel) that ``python -m build`` makes of a copy of the source tree (building writes into
    the tree it builds: warpdrive.egg-info)."""
    try:
        import build  # noqa: F401 - only its presence is checked here
    except ModuleNotFoundError:
        pytest.fail("the `build` package is missing: install the test extra (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    out = root / "dist"
    # --no-isolation: the build backend (setuptools, from the test extra) is already here; no network
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return sdists[0], wheels[0]


def test_wheel_holds_every_module_and_packaged_config(dist: tuple[Path, Path]) -> None:
    _, wheel = dist
    assert wheel.name == f"warpdrive-{warpdrive.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {name for name in names if name.startswith("warpdrive/")}
    sources = files_under(REPO, "warpdrive")
    assert {n for n in package if n.endswith(".py")} == {s for s in sources if s.endswith(".py")}
    configs = {s for s in sources if re.fullmatch(r"warpdrive/envs/[^/]+/train\.yaml", s)}
    assert len(configs) >= 10 and configs <= package, sorted(configs - package)
    assert package == sources  # nothing else: no stray data, no caches
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "warpdrive = warpdrive.cli:main" in archive.read(entry_points).decode()


def test_sdist_holds_the_tests_and_what_they_read(dist: tuple[Path, Path]) -> None:
    sdist, _ = dist
    top = f"warpdrive-{warpdrive.__version__}"
    assert sdist.name == f"{top}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    for name in ("README.md", "pyproject.toml", "PKG-INFO", "tests/conftest.py", "tests/requirements-reference.txt"):
        assert name in names, name
    for folder in ("warpdrive", "tests", "examples", "docs"):
        assert files_under(REPO, folder) <= names, sorted(files_under(REPO, folder) - names)


def test_wheel_installed_runs_the_quick_start_and_check(dist: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    # installed before this environment's packages become visible to the new one: pip would otherwise find
    # warpdrive already installed (editable, here) and install nothing
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: this environment's site-packages, after the new one's own (addsitedir runs their .pth
    # files too: numba-cuda's redirection of numba.cuda, and setuptools' editable hook for warpdrive if any)
    parents = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (own / "zz_dependencies.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in parents))

    # outside the source tree, without its PYTHONPATH: only an installed warpdrive is importable; the CUDA
    # simulator is left for warpdrive check to choose, as it does for a user without a GPU
    cwd = tmp_path / "user"
    cwd.mkdir()
    # (Numba's cache is keyed by the kernels' source paths, here the new environment's: they compile anew)
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_ENABLE_CUDASIM")}

    def run(*command: str | Path, timeout: int = 600) -> str:
        result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd,
                                env=environment, timeout=timeout)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    assert run(bin_dir / "warpdrive", "--version").strip() == f"warpdrive {warpdrive.__version__}"
    # every module of the package (but __main__, which would run the CLI) imports, each from the wheel's copy
    modules = run(python, "-c", "import importlib, pkgutil, sys, warpdrive\n"
                                "for m in pkgutil.walk_packages(warpdrive.__path__, 'warpdrive.'):\n"
                                "    if not m.name.endswith('.__main__'):\n"
                                "        importlib.import_module(m.name)\n"
                                "for name, m in sorted(sys.modules.items()):\n"
                                "    if name.split('.')[0] == 'warpdrive':\n"
                                "        print(name, m.__file__)").splitlines()
    files = dict(line.split(" ", 1) for line in modules)
    assert "warpdrive.cli" in files and "warpdrive.envs.tag_gridworld.env" in files
    outside = {name: file for name, file in files.items() if not Path(file).is_relative_to(own / "warpdrive")}
    assert not outside, f"modules not imported from the installed wheel in {own}: {outside}"

    # the README's quick start, with a budget of two iterations
    train = run(bin_dir / "warpdrive", "train", "tag_gridworld", "total_env_steps=4096")
    assert "Trained 4,096 env-steps" in train, train
    printed = dict(re.findall(r"^  ([a-z ]+):\s+(\S+)$", train, flags=re.MULTILINE))
    for key in ("run directory", "metrics", "learning curve", "checkpoint"):
        assert key in printed, train
        assert (cwd / printed[key]).exists(), printed[key]
    assert (cwd / printed["metrics"]).read_text().count("\n") == 2  # one line per iteration
    assert (cwd / printed["learning curve"]).stat().st_size > 1000

    # 50 steps (episodes end in them) rather than two full episodes in the CUDA simulator: 30 s, not 2 min; the
    # full contract and the PTX check of every env are tests/envs/test_contract.py's
    check = run(bin_dir / "warpdrive", "check", "cartpole", "--no-ptx", "--steps", "50")
    assert "cartpole: all checks pass" in check, check
