"""Short reports of Numba's errors in an env's code.

Numba's typing errors nest one report per compiled function, 150-270 lines for an env, with the useful line
at the bottom. :func:`typing_error_summary` finds the innermost cause (an unknown name or attribute) and the
env function, file and line where it is used.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

__all__ = ["typing_error_summary"]

_CAUSES = (
    (re.compile(r"NameError: name '(\w+)' is not defined"), "unknown name {!r}"),
    (re.compile(r"Untyped global name '(\w+)'"), "unknown name {!r}"),
    (re.compile(r"Unknown attribute '(\w+)' of type (\w+)"), "unknown attribute {!r} of {}"),
)
_FUNCTION = re.compile(r"Function\(<function (\w+) at 0x[0-9a-f]+>\)")


def _find_use(function: str, word: str) -> tuple[str, int] | None:
    """File and line of the first use of ``word`` in a loaded module-level function named ``function``."""
    pattern = re.compile(rf"\b{re.escape(word)}\b")
    for module in list(sys.modules.values()):
        candidate: Any = getattr(module, "__dict__", {}).get(function)  # no module __getattr__ magic
        function_object = getattr(candidate, "py_func", candidate)  # a kernel_function wraps the Python one
        code = getattr(function_object, "__code__", None)
        if code is None or getattr(function_object, "__module__", None) != module.__name__:
            continue
        try:
            lines, first = inspect.getsourcelines(code)
        except (OSError, TypeError):
            continue
        for offset, line in enumerate(lines):
            if pattern.search(line):
                return code.co_filename, first + offset
    return None


def typing_error_summary(error: BaseException) -> str:
    """One or two lines saying what Numba could not compile and where, e.g. ``my_env.py:62, in move():
    unknown name 'speed'``; the error's last line when it has no recognisable cause."""
    text = str(error)
    found = []
    for pattern, description in _CAUSES:
        found += [(m.start(), description.format(*m.groups()), m.group(1)) for m in pattern.finditer(text)]
    if not found:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f"Numba cannot compile the env's kernels: {lines[0] if lines else type(error).__name__}"
    position, cause, word = max(found)  # the innermost report is the last
    functions = _FUNCTION.findall(text[:position])
    where = ""
    if functions:
        use = _find_use(functions[-1], word)
        where = f"{use[0]}:{use[1]}, in {functions[-1]}(): " if use else f"in {functions[-1]}(): "
    return f"Numba cannot compile the env's kernels: {where}{cause}"
