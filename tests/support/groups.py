"""The suite's three groups: every test gets exactly one marker, from what it uses (README,
"Developing"):

- ``realdata``: reads the real recordings or the original pipeline's artifact
  (../shared/weld-audio, ../shared/compat), whatever else it uses;
- ``integration``: starts a real part (Mosquitto, PulseAudio, Chromium, a loop-mounted disk,
  the base-install venv) or is marked slow, without the real recordings;
- ``unit``: everything else: in-process, seconds at most (``pytest -m unit``).

Assigned centrally, from the fixtures a test requests and its part markers, so a new test
file is grouped without a line of its own. A unit test that turns out slow gets a part
marker (or ``slow``), which moves it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

GROUPS = ("unit", "integration", "realdata")
# The fixtures (tests/support/data.py) and marker that mean the real recordings or artifact.
REALDATA_FIXTURES = frozenset({"weld_audio_dir", "recordings", "compat_artifact"})
REALDATA_MARKERS = frozenset({"real_data"})
# The fixtures that start a real part, and the markers of tests that start one themselves.
INTEGRATION_FIXTURES = frozenset(
    {
        "mosquitto",
        "mosquitto_tls",
        "mosquitto_auth",
        "mqtt_subscriber",
        "pulse_server",
        "pulse",
        "chromium",
        "console_run",
        "ext4_mount",
        "full_disk",
        "base_python",
    }
)
INTEGRATION_MARKERS = frozenset({"broker", "audio", "browser", "slow"})


def group_of(fixtures: set[str], markers: set[str]) -> str:
    """The one group of a test that requests `fixtures` and carries `markers`."""
    if fixtures & REALDATA_FIXTURES or markers & REALDATA_MARKERS:
        return "realdata"
    if fixtures & INTEGRATION_FIXTURES or markers & INTEGRATION_MARKERS:
        return "integration"
    return "unit"


def assign_groups(items: Iterable[pytest.Item]) -> None:
    """Mark each collected test with its group (one already grouped by hand keeps it)."""
    for item in items:
        markers = {mark.name for mark in item.iter_markers()}
        if markers & set(GROUPS):
            continue  # grouped by hand: a test whose cost its fixtures do not show
        fixtures = set(getattr(item, "fixturenames", ()))
        item.add_marker(group_of(fixtures, markers))
