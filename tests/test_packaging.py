"""warpdrive as users install it: ``python -m build`` makes an sdist and a wheel; each installs (non-editable) into
a new virtual environment of its own and, from outside the source tree, runs there: the wheel ``--version``, the
README's quick start (``warpdrive train tag_gridworld``, with a small budget) and ``warpdrive check cartpole``; the
sdist, built into a wheel by pip from the sdist alone, ``--version`` and ``warpdrive envs``. The wheel's declared
dependencies (its core metadata's Requires-Dist) are checked against pyproject.toml's, as the installs here leave
them out.

The new environments reuse this one's installed dependencies (torch, Numba: gigabytes to download otherwise) by
adding this environment's site-packages *after* their own; the build backend (setuptools) that pip builds the sdist
with comes from there too, offline (--no-build-isolation). Where warpdrive is installed editable here (as the README
and CI install it), that site-packages also holds setuptools' editable import hook for warpdrive; the tests prove
that every warpdrive module a new environment imports comes from its own install, not from the source tree.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.request import url2pathname

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import warpdrive

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, a dependency of build there
    import tomli as tomllib

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


class Installed(NamedTuple):
    """A new virtual environment with warpdrive installed from an archive, and how to run in it."""

    bin_dir: Path
    python: Path
    #: the environment's own site-packages, where warpdrive is installed
    own: Path
    #: runs a command in a folder outside the source tree, without PYTHONPATH; returns its stdout
    run: Callable[..., str]


def install(archive: Path, root: Path) -> Installed:
    """A new virtual environment under ``root`` with warpdrive installed non-editable from ``archive`` (a wheel, or
    an sdist that pip builds into one), its dependencies borrowed from this environment."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: this environment's site-packages, after the new one's own (addsitedir runs their .pth
    # files too: numba-cuda's redirection of numba.cuda, and setuptools' editable hook for warpdrive if any)
    parents = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (own / "zz_dependencies.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in parents))

    # outside the source tree, without its PYTHONPATH: only an installed warpdrive is importable; the CUDA
    # simulator is left for warpdrive to choose, as it does for a user without a GPU
    cwd = root / "user"
    cwd.mkdir()
    # (Numba's cache is keyed by the kernels' source paths, here the new environment's: they compile anew)
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_ENABLE_CUDASIM")}

    def run(*command: str | Path, timeout: int = 600) -> str:
        result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd,
                                env=environment, timeout=timeout)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    # --ignore-installed: pip would otherwise find warpdrive already installed (editable, here, seen through the
    # .pth file) and install nothing; it installs into the new environment and touches nothing of this one.
    # --no-build-isolation: an sdist is built with the setuptools seen through the .pth file (no network);
    # --no-cache-dir: no wheel built from an earlier sdist at the same path is reused (pip caches those)
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--ignore-installed",
        "--no-build-isolation", "--no-cache-dir", archive, timeout=300)
    installed = next(own.glob("warpdrive-*.dist-info"))
    # pip's record of where it installed from: the archive itself
    url = json.loads((installed / "direct_url.json").read_text())["url"]
    assert url.startswith("file:") and Path(url2pathname(url.removeprefix("file:"))).resolve() == archive.resolve()
    return Installed(bin_dir, python, own, run)


def modules_imported_from_the_install(installed: Installed) -> dict[str, str]:
    """Import every module of the package in ``installed`` (but __main__, which would run the CLI), check that
    each comes from the new environment's own copy, and return {module: file}."""
    modules = installed.run(installed.python, "-c",
                            "import importlib, pkgutil, sys, warpdrive\n"
                            "for m in pkgutil.walk_packages(warpdrive.__path__, 'warpdrive.'):\n"
                            "    if not m.name.endswith('.__main__'):\n"
                            "        importlib.import_module(m.name)\n"
                            "for name, m in sorted(sys.modules.items()):\n"
                            "    if name.split('.')[0] == 'warpdrive':\n"
                            "        print(name, m.__file__)").splitlines()
    files = dict(line.split(" ", 1) for line in modules)
    assert "warpdrive.cli" in files and "warpdrive.envs.tag_gridworld.env" in files
    own = installed.own / "warpdrive"
    outside = {name: file for name, file in files.items() if not Path(file).is_relative_to(own)}
    assert not outside, f"modules not imported from the install in {own}: {outside}"
    return files


def requires_dist(metadata: str) -> dict[str | None, set[Requirement]]:
    """The Requires-Dist of core metadata (a wheel's METADATA), by extra (None: the dependencies proper), each
    without its ``extra == ...`` marker."""
    message = email.message_from_string(metadata)
    extras = [canonicalize_name(e) for e in message.get_all("Provides-Extra") or []]
    declared: dict[str | None, set[Requirement]] = {None: set(), **{e: set() for e in extras}}
    for line in message.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        extra = next((e for e in extras if marker and marker.evaluate({"extra": e})
                      and not marker.evaluate({"extra": ""})), None)
        if extra is not None:
            requirement.marker = None
        declared[extra].add(requirement)
    return declared


def test_wheel_declares_the_dependencies_of_pyproject(dist: tuple[Path, Path]) -> None:
    # the installs here leave dependencies out (--no-deps): what pip would install is checked here instead
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        declared = requires_dist(archive.read(metadata).decode())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert declared[None] == {Requirement(r) for r in project["dependencies"]}
    assert len(declared[None]) == len(project["dependencies"]) >= 10
    extras = {canonicalize_name(e): {Requirement(r) for r in rs} for e, rs in project["optional-dependencies"].items()}
    assert {e: rs for e, rs in declared.items() if e is not None} == extras


def test_wheel_installed_runs_the_quick_start_and_check(dist: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = dist
    installed = install(wheel, tmp_path)
    bin_dir, run, cwd = installed.bin_dir, installed.run, tmp_path / "user"

    assert run(bin_dir / "warpdrive", "--version").strip() == f"warpdrive {warpdrive.__version__}"
    # every module of the package imports, each from the wheel's copy
    modules_imported_from_the_install(installed)

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


def test_sdist_installed_holds_what_the_wheel_holds_and_runs(dist: tuple[Path, Path], tmp_path: Path) -> None:
    # pip builds the sdist into a wheel itself (setuptools from the sdist's pyproject.toml, setup files and
    # PKG-INFO alone), then installs that; the quick start and check are the wheel's test's (the same files)
    sdist, wheel = dist
    installed = install(sdist, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))).decode()
    # the same package files as the wheel of python -m build (caches written at install time left out), and the
    # same declared dependencies
    assert files_under(installed.own, "warpdrive") == {n for n in names if n.startswith("warpdrive/")}
    dist_info = next(installed.own.glob("warpdrive-*.dist-info"))
    assert requires_dist((dist_info / "METADATA").read_text()) == requires_dist(metadata)

    bin_dir, run = installed.bin_dir, installed.run
    assert run(bin_dir / "warpdrive", "--version").strip() == f"warpdrive {warpdrive.__version__}"
    modules_imported_from_the_install(installed)
    envs = run(bin_dir / "warpdrive", "envs")
    for name in ("tag_gridworld", "tag_continuous", "cartpole"):
        assert re.search(rf"^{name} \(warpdrive\.envs\.{name}:", envs, flags=re.MULTILINE), envs
