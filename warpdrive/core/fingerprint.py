"""Fingerprints of kernel code: what names a compiled program in Numba's disk cache.

Numba's cache notices an edit to the function it compiles but not to the functions that one calls from other
files, and it names each compiled callee by its qualified name and a per-process counter. Two hashes close both
gaps: :func:`source_fingerprint` (everything a program compiles, baked into its cached name) and
:func:`closure_digest` (the content of a closure made by a factory, appended to its name by
:func:`~warpdrive.core.device.kernel_function`).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import sysconfig
import types
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np

__all__ = ["closure_digest", "source_fingerprint"]

#: the core modules every program's code goes through (phase composition, primitives, launchers)
_CORE_MODULES = ("warpdrive.core.compile", "warpdrive.core.device", "warpdrive.core.targets")


def source_fingerprint(objects: Sequence[Any]) -> str:
    """A hash of the code Numba compiles from ``objects`` (kernel functions, classes), as this process holds it.

    Numba's disk cache does not notice edits to functions a kernel calls from other files; this fingerprint
    is baked into every compiled program so that such an edit compiles afresh. It hashes the code in memory,
    not the files on disk: a process that imported a module before the file was edited still holds (and
    compiles) the old code, and must not save it under the new code's name. Covered: each function's bytecode
    and constants, every function it reaches through its globals and closures, the simple values it reads
    (numbers, strings, tuples, arrays), the whole of any project module it reads attributes from, and
    this package's core (where the overloads behind ``barrier``, atomics and the launchers live).
    """
    digest = hashlib.sha256()
    seen: set[int] = set()
    core = [importlib.import_module(name) for name in _CORE_MODULES]
    # the packages of the objects given (an env installed from a package, say) are followed wherever they live
    _PROJECT_PACKAGES.update(str(getattr(_dispatcher_function(o), "__module__", "")).partition(".")[0]
                             for o in objects if isinstance(_dispatcher_function(o), (types.FunctionType, type)))
    for item in [*core, *objects]:
        _hash_object(item, digest, seen)
    return digest.hexdigest()[:16]


_STDLIB_PATHS = tuple(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib"))
_PROJECT_PACKAGES = {"warpdrive"}
"""Top-level packages whose code fingerprints follow: this one and those of the kernels fingerprinted so far."""


def _project_module(name: str | None) -> bool:
    """Whether module ``name`` is this package's or the user's code (not the standard library's or an installed
    library's): only such code is followed into; a library is named by its module, as its version is fixed."""
    if not name:
        return False
    if name.partition(".")[0] in _PROJECT_PACKAGES:
        return True
    path = str(getattr(sys.modules.get(name), "__file__", None) or "")
    installed = f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path
    return bool(path) and not installed and not path.startswith(_STDLIB_PATHS)  # a user's loose module


def _defined_in(value: Any) -> str | None:
    """``value.__module__`` for functions and classes (other objects' attribute lookups may run library code)."""
    value = _dispatcher_function(value)
    return value.__module__ if isinstance(value, (types.FunctionType, type)) else None


def _dispatcher_function(value: Any) -> Any:
    """The Python function of a Numba dispatcher, else ``value`` itself."""
    if type(value).__module__.startswith("numba"):
        return getattr(value, "py_func", value)
    return value


def _hash_object(obj: Any, digest: Any, seen: set[int]) -> None:
    """Add what Numba would compile of ``obj`` to ``digest`` (see :func:`source_fingerprint`)."""
    obj = _dispatcher_function(obj)
    if id(obj) in seen:
        return
    if isinstance(obj, (types.FunctionType, type)) and not _project_module(obj.__module__):
        digest.update(f"library {obj.__module__}.{obj.__qualname__}".encode())
        return
    if isinstance(obj, types.FunctionType):
        seen.add(id(obj))
        digest.update(f"function {obj.__module__}.{obj.__qualname__}".encode())
        _hash_code(obj.__code__, obj.__globals__, digest, seen)
        for cell in obj.__closure__ or ():
            try:
                _hash_value(cell.cell_contents, digest, seen)
            except ValueError:  # an empty cell
                continue
    elif isinstance(obj, type):
        seen.add(id(obj))
        digest.update(f"class {obj.__module__}.{obj.__qualname__}".encode())
        for name, member in sorted(vars(obj).items()):
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, (types.FunctionType, type)):
                digest.update(name.encode())
                _hash_object(member, digest, seen)
    elif isinstance(obj, types.ModuleType):
        seen.add(id(obj))
        digest.update(f"module {obj.__name__}".encode())
        for name, member in sorted(vars(obj).items()):
            if name.startswith("__"):
                continue
            if _defined_in(member) == obj.__name__ or _simple(member):
                digest.update(name.encode())
                _hash_value(member, digest, seen)


def _hash_code(code: types.CodeType, globals_: dict[str, Any], digest: Any, seen: set[int],
               hash_global: Callable[[Any], None] | None = None) -> None:
    """The code object's bytecode, names and constants, and the globals it reads (by ``hash_global``; by
    default followed as :func:`_hash_value` does)."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, globals_, digest, seen, hash_global)
        elif isinstance(const, frozenset):  # its order follows string hashing, which differs between processes
            digest.update(repr(sorted(map(repr, const))).encode())
        else:
            digest.update(repr(const).encode())
    for name in code.co_names:
        if name in globals_:
            digest.update(name.encode())
            if hash_global is None:
                _hash_value(globals_[name], digest, seen)
            else:
                hash_global(globals_[name])


def closure_digest(fn: types.FunctionType) -> str:
    """A short hash of what closure ``fn`` compiles to, the same in every process: its code and the values it
    reads from its closure and its globals. Functions among them count by their qualified names only: a
    module's function has one code per process, and a closure made by :func:`kernel_function` carries its own
    digest in its name (so that nesting closures costs one level of hashing each)."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        function = _dispatcher_function(value)
        if isinstance(function, (types.FunctionType, type)):
            digest.update(f"function {function.__module__}.{function.__qualname__}".encode())
        elif isinstance(value, types.ModuleType):
            digest.update(f"module {value.__name__}".encode())
        elif type(value) in (tuple, list):
            digest.update(f"{type(value).__name__} {len(value)}".encode())
            for item in value:
                add(item)
        else:
            _hash_value(value, digest, set())

    _hash_code(fn.__code__, fn.__globals__, digest, set(), add)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
        try:
            add(cell.cell_contents)
        except ValueError:  # its value would be unknown to the digest
            raise ValueError(f"kernel function {fn.__qualname__} reads {name!r} from its enclosing function "
                             f"before {name!r} is assigned; assign it before the kernel function's def") from None
    return digest.hexdigest()[:12]


def _simple(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_simple(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic, np.ndarray))


def _hash_value(value: Any, digest: Any, seen: set[int]) -> None:
    """A global or closure value a kernel reads: code is followed, simple values hashed, the rest named."""
    if isinstance(value, np.ndarray):
        digest.update(f"array {value.dtype} {value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif _simple(value):
        digest.update(repr(value).encode())
    elif isinstance(value, types.ModuleType):
        if _project_module(value.__name__):
            _hash_object(value, digest, seen)  # a project module: what the kernel reads of it may be anything
        else:
            digest.update(f"library {value.__name__}".encode())
    elif isinstance(_dispatcher_function(value), (types.FunctionType, type)):
        _hash_object(value, digest, seen)
    elif type(value) in (tuple, list, dict) or (is_dataclass(value) and not isinstance(value, type)
                                                  and _project_module(type(value).__module__)):
        if id(value) in seen:
            return
        seen.add(id(value))
        digest.update(type(value).__qualname__.encode())
        if isinstance(value, dict):
            items: Any = [v for pair in value.items() for v in pair]
        elif isinstance(value, (tuple, list)):
            items = value
        else:
            items = [getattr(value, f.name) for f in fields(value)]
        for item in items:
            _hash_value(item, digest, seen)
    else:
        digest.update(type(value).__qualname__.encode())
