"""The suite's groups (tests/support/groups.py): one per test, from the real parts it uses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.groups import (
    GROUPS,
    INTEGRATION_FIXTURES,
    INTEGRATION_MARKERS,
    SLOW_TESTS,
    TRAINING_MODULES,
    group_of,
)

TESTS = Path(__file__).resolve().parent


def test_a_test_reading_the_real_recordings_is_realdata_whatever_else_it_starts() -> None:
    assert group_of({"recordings", "mosquitto", "pulse"}, set()) == "realdata"
    assert group_of({"tmp_path"}, {"real_data", "broker", "slow"}) == "realdata"
    assert group_of({"compat_artifact"}, set()) == "realdata"


@pytest.mark.parametrize("fixture", sorted(INTEGRATION_FIXTURES))
def test_a_test_requesting_a_real_part_is_integration(fixture: str) -> None:
    assert group_of({fixture, "tmp_path"}, set()) == "integration"


@pytest.mark.parametrize("marker", sorted(INTEGRATION_MARKERS))
def test_a_test_marked_with_a_real_part_or_slow_is_integration(marker: str) -> None:
    assert group_of({"tmp_path"}, {marker}) == "integration"


def test_an_in_process_test_is_unit() -> None:
    assert group_of({"tmp_path", "capsys", "monkeypatch"}, {"parametrize"}) == "unit"
    assert group_of({"tmp_path"}, set(), "test_events.py", "test_parse_a_result") == "unit"


def test_a_training_module_or_a_listed_slow_test_is_integration() -> None:
    module = sorted(TRAINING_MODULES)[0]
    assert group_of({"tmp_path"}, set(), module, "test_anything") == "integration"
    module, functions = sorted(SLOW_TESTS.items())[0]
    assert group_of({"tmp_path"}, set(), module, functions[0]) == "integration"


def test_every_module_and_test_the_tables_name_still_exists() -> None:
    stale = [
        name for name in sorted(TRAINING_MODULES | set(SLOW_TESTS)) if not (TESTS / name).is_file()
    ]
    for module, functions in SLOW_TESTS.items():
        if (TESTS / module).is_file():
            tree = ast.parse((TESTS / module).read_text())
            defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
            stale += [f"{module}::{name}" for name in functions if name not in defined]
    assert stale == []


def test_every_collected_test_carries_exactly_one_group(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    assert request.node in items
    wrong = {
        item.nodeid: groups
        for item in items
        if len(groups := [m.name for m in item.iter_markers() if m.name in GROUPS]) != 1
    }
    assert wrong == {}
