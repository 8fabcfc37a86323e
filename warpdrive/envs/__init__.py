"""Example envs, and how envs are found by name.

An env name is one of (tried in this order):

- a registered name (:data:`REGISTRY`, filled by :func:`register`): ``cartpole``, ``tag_gridworld``, ...;
- ``package.module:Class``: an importable module (the ``warpdrive`` command adds the current directory to
  the import path, as ``python -m`` does);
- ``path/to/file.py:Class``: a Python file, imported by path (relative paths are relative to the current
  directory; :func:`canonical_name` makes them absolute, which is how training configs store them);
- the name of an entry point of group ``warpdrive.envs`` of an installed package, e.g. in its
  ``pyproject.toml``: ``[project.entry-points."warpdrive.envs"] rendezvous = "mypackage.rendezvous:Rendezvous"``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any

from warpdrive.core.env import Env

__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "UnknownEnvError", "available", "canonical_name", "env_class",
           "label", "make", "register"]

#: name -> "module:Class"; envs are imported on first use.
REGISTRY: dict[str, str] = {
    "tag_gridworld": "warpdrive.envs.tag_gridworld:TagGridWorld",
    "tag_continuous": "warpdrive.envs.tag_continuous:TagContinuous",
    "cartpole": "warpdrive.envs.cartpole:CartPole",
    "pendulum": "warpdrive.envs.pendulum:Pendulum",
    "acrobot": "warpdrive.envs.acrobot:Acrobot",
    "mountain_car": "warpdrive.envs.mountain_car:MountainCar",
    "mountain_car_continuous": "warpdrive.envs.mountain_car_continuous:MountainCarContinuous",
    "simple_tag": "warpdrive.envs.mpe:SimpleTag",
    "simple_spread": "warpdrive.envs.mpe:SimpleSpread",
    "simple_adversary": "warpdrive.envs.mpe:SimpleAdversary",
}

#: The entry point group through which installed packages offer envs (name -> "module:Class").
ENTRY_POINT_GROUP = "warpdrive.envs"


class UnknownEnvError(KeyError):
    """An env name that names no env class; the message says which value and what was expected."""

    def __str__(self) -> str:  # KeyError's own str() quotes the message
        return str(self.args[0])


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every env available by a plain name: registered ones, then installed packages' entry points
    (name -> ``"module:Class"``; a registered name hides an entry point of the same name)."""
    return {**REGISTRY, **{name: ep.value for name, ep in _entry_points().items() if name not in REGISTRY}}


def _is_file_target(module: str) -> bool:
    return module.endswith(".py")


def canonical_name(name: str) -> str:
    """``name`` with a relative ``file.py:Class`` made absolute (so that it resolves from any directory);
    other names unchanged."""
    module, sep, cls = name.rpartition(":")
    if sep and _is_file_target(module):
        return f"{Path(module).expanduser().resolve()}:{cls}"
    return name


def _import_file(path_text: str, name: str) -> Any:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise UnknownEnvError(f"env {name!r}: no file {str(path)!r}; expected 'path/to/file.py:Class'")
    # a stable module name per file: the compiled kernels are cached under the module's name
    module_name = f"_warpdrive_env_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # always, for a .py file (see _is_file_target)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise UnknownEnvError(f"env {name!r}: {path} does not import: {type(err).__name__}: {err}") from err
    return module


def _load_target(target: str, name: str) -> type[Env]:
    module_text, sep, attribute = target.rpartition(":")
    if not sep or not module_text or not attribute:
        raise UnknownEnvError(f"env {name!r}: expected 'package.module:Class' or 'path/to/file.py:Class', "
                              f"got {target!r}")
    if _is_file_target(module_text):
        module = _import_file(module_text, name)
    else:
        try:
            module = importlib.import_module(module_text)
        except Exception as err:
            raise UnknownEnvError(f"env {name!r}: module {module_text!r} does not import: "
                                  f"{type(err).__name__}: {err}") from err
    cls = getattr(module, attribute, None)
    if cls is None:
        raise UnknownEnvError(f"env {name!r}: {module_text} has no attribute {attribute!r}")
    if not (isinstance(cls, type) and issubclass(cls, Env)):
        raise UnknownEnvError(f"env {name!r}: {module_text}:{attribute} is {cls!r}, not a subclass of warpdrive.Env")
    return cls


def env_class(name: str) -> type[Env]:
    """The env class that ``name`` names (see the module docstring for the forms a name takes).

    Raises:
        UnknownEnvError: naming the value and what was wrong (an unknown name lists the available ones).
    """
    if name in REGISTRY:
        return _load_target(REGISTRY[name], name)
    if ":" in name:
        return _load_target(name, name)
    entry_points = _entry_points()
    if name in entry_points:
        try:
            cls = entry_points[name].load()
        except Exception as err:
            raise UnknownEnvError(f"env {name!r}: entry point {entry_points[name].value!r} of group "
                                  f"{ENTRY_POINT_GROUP!r} does not load: {type(err).__name__}: {err}") from err
        if not (isinstance(cls, type) and issubclass(cls, Env)):
            raise UnknownEnvError(f"env {name!r}: entry point {entry_points[name].value!r} is {cls!r}, "
                                  "not a subclass of warpdrive.Env")
        return cls
    raise UnknownEnvError(f"unknown env {name!r}; expected one of {', '.join(sorted(available()))}, "
                          "'package.module:Class' or 'path/to/file.py:Class'")


def label(name: str) -> str:
    """A short name for ``name`` (run directories, progress bars): plain names as they are, the env class's
    ``name`` for ``module:Class`` forms."""
    if ":" not in name:
        return name
    cls = env_class(name)
    return cls.name if cls.name != Env.name else cls.__name__


def make(name: str, **kwargs: Any) -> Env:
    """Build the env that ``name`` names; keyword arguments go to its constructor."""
    return env_class(name)(**kwargs)


def register(name: str, target: str) -> None:
    """Register an env class as ``"package.module:ClassName"`` (or ``"path/to/file.py:ClassName"``) under
    ``name``, for this process; installed packages offer envs to every process through the entry point
    group ``warpdrive.envs`` instead."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:ClassName', got {target!r}")
    REGISTRY[name] = canonical_name(target)
