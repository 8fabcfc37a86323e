"""Every registered env has a semantics page under docs/envs/: its module docstring names the page, and the page
names every field of the env's Config in code (`field` or `field=...`), so that a new field without
documentation fails here. Importing the env classes compiles nothing."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from warpdrive.envs import REGISTRY, env_class

ROOT = Path(__file__).resolve().parents[2]
PAGE = re.compile(r"docs/envs/[\w.-]+\.md")


def page_of(name: str) -> Path:
    """The docs/envs/*.md page that the env's module docstring names (asserted to exist)."""
    cls = env_class(name)
    doc = sys.modules[cls.__module__].__doc__ or ""
    found = PAGE.findall(doc)
    assert found, f"env {name!r}: the docstring of {cls.__module__} names no docs/envs/*.md page"
    assert len(set(found)) == 1, f"env {name!r}: {cls.__module__} names several pages: {sorted(set(found))}"
    page = ROOT / found[0]
    assert page.is_file(), f"env {name!r}: {cls.__module__} names {found[0]}, which does not exist"
    return page


def names_in_code(text: str, field: str) -> bool:
    """Whether ``field`` appears as a whole name inside an inline code span (one line between backticks)."""
    return re.search(rf"`[^`\n]*(?<![\w]){re.escape(field)}(?![\w])[^`\n]*`", text) is not None


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_module_docstring_names_an_existing_page(name: str) -> None:
    page_of(name)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_page_documents_every_config_field(name: str) -> None:
    page = page_of(name)
    text = page.read_text(encoding="utf-8")
    missing = [f.name for f in dataclasses.fields(env_class(name).Config) if not names_in_code(text, f.name)]
    assert not missing, (f"env {name!r}: {page.relative_to(ROOT)} does not document Config field(s) "
                         f"{', '.join(missing)} (name each in code, e.g. `{missing[0]}`)")


def test_a_missing_field_is_detected() -> None:
    text = "| `num_taggers` | 10 |\n`grid_length=4`, and `p.g` in a formula; episode_length in plain text\n"
    assert names_in_code(text, "num_taggers") and names_in_code(text, "grid_length") and names_in_code(text, "g")
    assert not names_in_code(text, "episode_length")  # outside code
    assert not names_in_code(text, "num_tagger")  # a prefix of a name is not the name
