"""Typed configs: plain dataclasses filled from YAML data, with errors that name the key path.

A config class is a dataclass whose fields carry type hints (``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``list[X]``, ``dict[str, X]``, ``Any`` or another config dataclass) and,
where a number has limits, a :func:`bounded` default (:func:`bounded_magnitude` for an env's rewards and physical
scales, whose sums and products the kernels form in float32); floats must be finite (no ``.inf`` or ``.nan``).
:func:`from_dict` builds one from nested dicts and lists (what ``yaml.safe_load`` returns) and raises
:class:`ConfigError` at the first problem::

    policies.taggers.ppo.clip_coef: expected a float > 0, got -1

A dataclass may define ``validate(self, path: str)`` for checks across fields; it runs after the fields
are filled and raises :class:`ConfigError` itself.

Training configs and env configs (:class:`~warpdrive.core.env.Env`'s ``Config``) are both declared this way.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np

__all__ = ["MAGNITUDE_LIMIT", "ConfigError", "bounded", "bounded_magnitude", "check_length", "from_dict", "join_path",
           "to_dict"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or bad; the message starts with its key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<config>'}: {message}")
        self.path = path
        self.message = message

    def under(self, prefix: str) -> ConfigError:
        """The same error one level down: its key path prefixed with ``prefix`` (``env.kwargs`` + ``num_taggers``)."""
        return ConfigError(join_path(prefix, self.path) if self.path else prefix, self.message)


def bounded(default: Any, *, gt: float | None = None, ge: float | None = None,
            lt: float | None = None, le: float | None = None) -> Any:
    """A dataclass field default with numeric limits, checked by :func:`from_dict`.

    ``None`` is always accepted for fields typed ``X | None``; the limits apply to numbers only.
    """
    return dataclasses.field(default=default, metadata={"bounds": (gt, ge, lt, le)})


#: The largest magnitude of an env parameter that the kernels add up or multiply in float32: every reward
#: parameter, and the physical scales (lengths, speeds, accelerations, angles). See :func:`bounded_magnitude`.
MAGNITUDE_LIMIT = 1e12


def bounded_magnitude(default: Any, *, gt: float | None = None, ge: float | None = None,
                      lt: float | None = None, le: float | None = None) -> Any:
    """A :func:`bounded` default for an env parameter the kernels sum or multiply in float32 (a reward, a length,
    a speed, an acceleration, an angle): besides the limits given, ``|value| <= MAGNITUDE_LIMIT`` (1e12).

    The rule: every quantity the kernels derive from such parameters stays finite in float32, whose largest
    value is about 3.4e38 (2**128); being finite in float32 one by one is not enough (a reward of 3.4e38 is,
    the episode's return is not):

    - rewards: one step's reward of an agent sums a few terms, at most one per agent (a tagger is credited once
      for each runner it tags in the step); an episode's return sums fewer than 2**31 steps (``t`` is int32);
      with fewer than 2**31 agents, one return stays below 1e12 * 2**31 * 2**31 (about 4.6e30), which leaves a
      factor of about 7e7 for the sums of returns over episodes and replicas (``finished_return``, a trainer's
      statistics);
    - physical scales: the kernels form products of two of them (squared distances, ``max_speed * skill``)
      and sums of a few (a speed plus an acceleration): at most about (3e12)**2 = 1e25.

    Values that large are of no use anyway: float32 cannot even add 1 to 1e12. A value outside the limits is
    refused as :func:`bounded`'s are, naming the field, the value and the range:
    ``wall_hit_penalty: expected a float >= -1e+12 and <= 1e+12, got 3.4e+38``.
    """
    if gt is None and (ge is None or ge < -MAGNITUDE_LIMIT):
        ge = -MAGNITUDE_LIMIT
    if lt is None and (le is None or le > MAGNITUDE_LIMIT):
        le = MAGNITUDE_LIMIT
    return bounded(default, gt=gt, ge=ge, lt=lt, le=le)


def check_length(path: str, name: str, value: Sequence[Any] | None, size: int, layout: str) -> None:
    """For a ``validate``: a sequence field (``None`` allowed) has ``size`` values, laid out as ``layout`` says
    (e.g. ``"(x, x_dot, theta, theta_dot)"``); the values' types are checked by the field's declaration."""
    if value is not None and len(value) != size:
        raise ConfigError(join_path(path, name), f"expected {size} values {layout}, got {len(value)}")


def join_path(path: str, key: str | int) -> str:
    """``path.key`` (``path[key]`` for a list index; ``key`` alone at the top)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe_bounds(bounds: tuple[float | None, ...]) -> str:
    gt, ge, lt, le = bounds
    parts = [f"{op} {_number(v)}" for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if v is not None]
    return " and ".join(parts)


def _number(value: float) -> str:
    """A limit as written: in ``%g`` where that is exact (1e+12, 0.5), other integers in full (2**32 as
    4294967296)."""
    short = f"{value:g}" if value != 0 else "0"
    return short if float(short) == value or not float(value).is_integer() else str(int(value))


def _check_bounds(value: float, bounds: tuple[float | None, ...] | None) -> bool:
    if bounds is None:
        return True
    gt, ge, lt, le = bounds
    return ((gt is None or value > gt) and (ge is None or value >= ge)
            and (lt is None or value < lt) and (le is None or value <= le))


def _expected(kind: str, bounds: tuple[float | None, ...] | None) -> str:
    limits = _describe_bounds(bounds) if bounds else ""
    return f"expected {kind}{' ' + limits if limits else ''}"


def _convert(value: Any, hint: Any, path: str, bounds: tuple[float | None, ...] | None = None) -> Any:
    if isinstance(value, np.ndarray):  # env parameters are often given as arrays
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        others = [o for o in options if o is not type(None)]
        if len(others) == 1:
            return _convert(value, others[0], path, bounds)
        raise TypeError(f"{path}: unions other than 'X | None' are not supported in configs")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(path, f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        (item,) = get_args(hint)[:1]
        items = [_convert(v, item, join_path(path, i), bounds) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        _, item = get_args(hint)
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(path, f"keys must be strings, got {key!r}")
        return {k: _convert(v, item, join_path(path, k), bounds) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # YAML reads 1e6 as a string and 1.0e6 as a float; accept both when they are whole numbers
            number = _as_float(value)
            if number is None or not number.is_integer():
                raise ConfigError(path, f"{_expected('an integer', bounds)}, got {value!r}")
            value = int(number)
        if not _check_bounds(value, bounds):
            raise ConfigError(path, f"{_expected('an integer', bounds)}, got {value!r}")
        return value
    if hint is float:
        number = _as_float(value)
        # NaN and inf are never settings: they would reach the weights (lr=.inf) or pass every bound (NaN)
        if number is None or not math.isfinite(number) or not _check_bounds(number, bounds):
            kind = "a float" if number is None or math.isfinite(number) else "a finite float"
            raise ConfigError(path, f"{_expected(kind, bounds)}, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported config type {hint!r}")


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build the dataclass ``cls`` from ``data`` (a mapping), checking every key and value.

    Raises:
        ConfigError: for an unknown key, a missing required key or a bad value; the message names the
            key path (``a.b.c``) and says what was expected.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of {cls.__name__} settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
            raise ConfigError(join_path(path, str(key)), f"unknown key; {hint}")
    values = {}
    for name, f in fields.items():
        sub = join_path(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(sub, "missing required key")
            continue
        values[name] = _convert(data[name], hints[name], sub, f.metadata.get("bounds"))
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        # validate(path); a validate() without a path (an older env's) is called as it is
        if inspect.signature(validate).parameters:
            validate(path)
        else:
            validate()
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass (or nested containers of them) as plain dicts, lists and scalars, ready for YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
