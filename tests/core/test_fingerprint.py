"""Program fingerprints hash the code a process holds in memory, so that the disk cache never stores old code
under a new name (a process that imported a module before its file was edited compiles the old code)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import pytest

from warpdrive.core.compile import sequence
from warpdrive.core.device import kernel_function
from warpdrive.core.fingerprint import source_fingerprint
from warpdrive.core.targets import run_in_chunks
from warpdrive.envs import make

KERNEL = """
from warpdrive.core.device import kernel_function
import {helper}

SCALE = {scale}
NAMES = {{"x", "y", "z"}}

@kernel_function
def kernel(x):
    return {helper}.shift(x) * SCALE
"""
HELPER = """
def shift(x):
    return x + {shift}
"""


@pytest.fixture
def modules(tmp_path: Path, request: pytest.FixtureRequest):
    """Writes a kernel module and a helper module it reads through a module attribute; yields a writer and an
    importer of them (unique names per test, removed afterwards)."""
    suffix = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    kernel_name, helper_name = f"fp_kernel_{suffix}", f"fp_helper_{suffix}"
    sys.path.insert(0, str(tmp_path))

    def write(scale: float = 2.0, shift: int = 1) -> None:
        (tmp_path / f"{kernel_name}.py").write_text(KERNEL.format(helper=helper_name, scale=scale))
        (tmp_path / f"{helper_name}.py").write_text(HELPER.format(shift=shift))

    def load(reload: bool = False):
        importlib.invalidate_caches()
        if reload:
            importlib.reload(sys.modules[helper_name])
            return importlib.reload(sys.modules[kernel_name])
        return importlib.import_module(kernel_name)

    yield write, load
    sys.path.remove(str(tmp_path))
    for name in (kernel_name, helper_name):
        sys.modules.pop(name, None)


def test_an_edit_on_disk_changes_nothing_until_the_code_is_loaded(modules) -> None:
    write, load = modules
    write(scale=2.0)
    module = load()
    before = source_fingerprint([module.kernel])
    write(scale=3.0)  # the file changes; this process still holds (and would compile) SCALE = 2.0
    assert source_fingerprint([module.kernel]) == before
    module = load(reload=True)
    assert source_fingerprint([module.kernel]) != before


def test_a_helper_in_another_module_is_part_of_the_fingerprint(modules) -> None:
    write, load = modules
    write(shift=1)
    before = source_fingerprint([load().kernel])
    write(shift=2)
    assert source_fingerprint([load(reload=True).kernel]) != before
    write(shift=1)
    assert source_fingerprint([load(reload=True).kernel]) == before


def test_fingerprints_agree_between_processes_with_other_string_hashing(tmp_path: Path) -> None:
    """Sets of strings iterate in an order that depends on PYTHONHASHSEED: the fingerprint must not, or no
    process would ever find another's cached program."""
    (tmp_path / "fp_kernel_proc.py").write_text(KERNEL.format(helper="fp_helper_proc", scale=2.0) + textwrap.dedent("""
        @kernel_function
        def named(x):
            return x in {"alpha", "beta", "gamma", "delta"}
        """))
    (tmp_path / "fp_helper_proc.py").write_text(HELPER.format(shift=1))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import fp_kernel_proc as m; "
              "from warpdrive.core.fingerprint import source_fingerprint; from warpdrive.envs import make; "
              "env = make('tag_gridworld', num_envs=1, device='cpu', seed=0, validate=False); "
              "print(source_fingerprint([m.kernel, m.named]), env._fingerprint(), env._runner('step')[0].__qualname__)")
    prints = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        prints.add(done.stdout.strip())
    assert len(prints) == 1, prints


def _scaled(scale: float):
    @kernel_function
    def scaled(x):
        return x * scale

    return scaled


def test_closures_are_named_after_their_content() -> None:
    """Numba names compiled callees by qualified name and a per-process counter: two different closures under
    one name, cached by two processes, once made a third process's step program run its reset's code."""
    assert _scaled(2.0).__qualname__ == _scaled(2.0).__qualname__
    assert _scaled(2.0).__qualname__ != _scaled(3.0).__qualname__
    double, triple = _scaled(2.0), _scaled(3.0)
    # a closure of closures differs where a closure it calls does
    assert sequence(double, triple).__qualname__ != sequence(double, double).__qualname__
    assert sequence(double, triple).__qualname__ == sequence(_scaled(2.0), _scaled(3.0)).__qualname__


def test_a_closure_reading_an_unassigned_variable_is_refused() -> None:
    def factory():
        @kernel_function
        def early(x):
            return later(x)

        def later(x):
            return x

        return early

    with pytest.raises(ValueError, match="reads 'later' from its enclosing function before 'later' is assigned"):
        factory()


def test_running_a_program_leaves_fingerprints_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU's thread pool, made on the first program run, once changed a core module's globals and with them
    every fingerprint: a process then compiled a program again under a second name."""
    env = make("tag_gridworld", num_envs=1, device="cpu", seed=0, validate=False)
    before = env._fingerprint()
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    ranges: list[tuple[int, int]] = []
    run_in_chunks(lambda p, s, start, stop: ranges.append((start, stop)), None, None, 4)
    assert sorted(ranges) == [(0, 2), (2, 4)]
    assert env._fingerprint() == before
