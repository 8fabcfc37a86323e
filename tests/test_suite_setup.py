"""The suite's own setup: what its speed relies on."""

from __future__ import annotations

import os

import pytest


@pytest.mark.xdist_group("suite_setup")
def test_xdist_groups_keep_their_tests_in_one_worker(request: pytest.FixtureRequest) -> None:
    """Each env's tests run in one worker (``xdist_group`` marks with ``--dist loadgroup``), so that no program
    is compiled by two workers at once. pytest 9.2 with pytest-xdist 3.8 dropped the marks without a word
    (pytest-xdist#1386); the group then no longer shows in the test's id."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("runs in one process (-n 0): there are no workers to group tests in")
    assert request.config.option.loadgroup, "the suite runs with --dist loadgroup (pyproject.toml's addopts)"
    assert request.node.nodeid.endswith("@suite_setup"), request.node.nodeid
