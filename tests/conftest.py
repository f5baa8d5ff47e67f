"""Fixtures shared by the whole suite live in tests/support/, one module per real part; every
test is given one group marker (unit, integration, realdata) by tests/support/groups.py."""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.support.groups import assign_groups

pytest_plugins = [
    "tests.support.data",
    "tests.support.broker",
    "tests.support.pulse",
    "tests.support.console",
    "tests.support.base_venv",
    "tests.support.disks",
]

# Hypothesis's per-example deadline (200 ms) times the machine, not the code: on a loaded
# 2-core CI box a correct example can take longer. Speed belongs in bench/, so no deadline.
settings.register_profile("weldmon", deadline=None)
settings.load_profile("weldmon")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    assign_groups(items)
