"""Env names: registered, ``package.module:Class``, ``path/to/file.py:Class``; what a bad one says."""

from __future__ import annotations

from pathlib import Path

import pytest

from warpdrive.envs import UnknownEnvError, canonical_name, env_class, label

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "examples" / "rendezvous.py"


def test_file_envs_import_once_under_a_name_fixed_by_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO / "examples")
    by_relative = env_class("rendezvous.py:Rendezvous")
    by_absolute = env_class(f"{TUTORIAL}:Rendezvous")
    assert by_relative is by_absolute  # one module: the compiled kernels' cache key is its name
    assert by_relative.__module__.startswith("_warpdrive_env_rendezvous_")
    assert canonical_name("rendezvous.py:Rendezvous") == f"{TUTORIAL}:Rendezvous"
    assert canonical_name("cartpole") == "cartpole" and canonical_name("pkg.mod:Env") == "pkg.mod:Env"
    assert label("rendezvous.py:Rendezvous") == "rendezvous" and label("cartpole") == "cartpole"


@pytest.mark.parametrize(("name", "message"), [
    ("cartpol", "unknown env 'cartpol'; expected one of acrobot, cartpole, "),
    ("missing.py:Env", "env 'missing.py:Env': no file '"),
    ("rendezvous.py:Meeting", "env 'rendezvous.py:Meeting': rendezvous.py has no attribute 'Meeting'"),
    ("rendezvous.py:RendezvousConfig", "env 'rendezvous.py:RendezvousConfig': rendezvous.py:RendezvousConfig is "
                                       "<class '_warpdrive_env_rendezvous_"),
    ("json:dumps", "env 'json:dumps': json:dumps is <function dumps"),
    ("no_such.module:Env", "env 'no_such.module:Env': module 'no_such.module' does not import: "
                           "ModuleNotFoundError: No module named 'no_such'"),
    ("json:", "env 'json:': expected 'package.module:Class' or 'path/to/file.py:Class', got 'json:'"),
])
def test_bad_env_names_say_what_is_wrong(name: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO / "examples")
    with pytest.raises(UnknownEnvError) as raised:
        env_class(name)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_a_file_that_does_not_import_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy\nraise RuntimeError('half written')\n")
    with pytest.raises(UnknownEnvError, match=f"env '{broken}:Env': {broken} does not import: RuntimeError: "
                                              "half written"):
        env_class(f"{broken}:Env")
