"""Fixtures shared by the whole suite live in tests/support/, one module per real part."""

from hypothesis import settings

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
