"""Fixtures shared by the whole suite live in tests/support/, one module per real part."""

pytest_plugins = [
    "tests.support.data",
    "tests.support.broker",
    "tests.support.pulse",
    "tests.support.console",
    "tests.support.base_venv",
]
