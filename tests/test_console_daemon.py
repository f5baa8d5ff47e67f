"""The console beside a live daemon: `weldmon run` records a shift of real welds from a
PulseAudio null sink, writes their clips with its own clip writer and publishes to a real
Mosquitto; the overview, open in Chromium, shows the daemon come online, the running weld's
rolling p_defect, the alert banner, the verdicts, and the daemon stopping. The daemon's own
``clip_path`` (inside ``--clips``) is what the weld page plays."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support import shifts
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.console import save_screenshot
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio

pytestmark = [
    pytest.mark.audio,
    pytest.mark.broker,
    pytest.mark.browser,
    pytest.mark.real_data,
    pytest.mark.slow,
]

RATE = shifts.RATE_HZ
SHIFT_RUNS = [4, 17]  # manifest rows with safely idle heads (tests/support/shifts.py)
STARTUP_MS = 90_000  # daemon start on a loaded 2-core box (torch import, model load)
WELD_MS = 60_000


def test_the_overview_follows_a_live_daemon_and_plays_its_clips(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    chromium,
    console_run,
    recordings: list,
    tmp_path: Path,
) -> None:
    # Threshold 0: every judged window reaches it, so each weld alerts and is a defect.
    artifact = export_untrained(tmp_path / "artifact", threshold=0.0).path
    config = write_monitor_config(
        tmp_path,
        artifact,
        mosquitto,
        clips={"policy": "all"},
        events={"window_probs": True},
    )
    state = tmp_path / "state"
    console = console_run(
        [
            *("--broker", f"{mosquitto.host}:{mosquitto.port}", "--listen", "127.0.0.1:0"),
            *("--db", str(tmp_path / "h.sqlite3"), "--clips", str(state / "clips")),
        ]
    )
    url = console.wait_serving()
    page = chromium.new_page(viewport={"width": 1280, "height": 700})
    sink = "console-cell"
    pulse.create_sink(sink, RATE, 1)
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.stderr")
    player = None
    try:
        page.goto(f"{url}/")
        page.wait_for_selector("#live-state.live-on")
        page.wait_for_selector("section.group .badge-online", timeout=STARTUP_MS)
        daemon.wait_for_log("capture_opened", STARTUP_MS / 1000)
        # ~15 s of arc each: the crackle segmenter decides a start seconds into the arc, so a
        # short weld would be over before the card could show it in progress.
        arcs = [recordings[i].flac for i in SHIFT_RUNS]
        shift = shifts.build_shift(arcs, RATE, cut_s=(3.0, 20.0))
        player = pulse.play_array(shift[:, None], RATE, sink)
        # While the first weld goes on: its card shows the rolling p_defect, and the banner.
        page.wait_for_selector("article[data-station='cell1'] .current meter", timeout=WELD_MS)
        page.wait_for_selector(".banner-alert", timeout=WELD_MS)
        save_screenshot(page, "overview-live")
        page.wait_for_function(
            "() => document.querySelectorAll(\"article[data-station='cell1'] tr[data-weld]\")"
            ".length >= 2",
            timeout=WELD_MS,
        )
        assert player.wait(shift.shape[0] / RATE + 30) == 0
    finally:
        if player is not None and player.poll() is None:  # a failed wait: never leak it
            player.kill()
            player.wait()
        code = daemon.stop()
    assert code == 0, daemon.tail()
    page.wait_for_selector("section.group .badge-stopped", timeout=10_000)
    welds = httpx.get(f"{url}/api/welds").json()["welds"]
    assert len(welds) == 2 and all(w["label_name"] == "defect" for w in welds)
    assert all(w["console"]["alerted"] for w in welds)
    first = welds[-1]
    assert first["clip_path"] and Path(first["clip_path"]).is_relative_to(state / "clips")
    assert (
        httpx.get(f"{url}/api/welds/{first['weld_id']}").json()["console"]["clip"]["origin"]
        == "clip_path"
    )
    page.goto(f"{url}/welds/{first['weld_id']}")
    page.wait_for_function(
        "() => { const a = document.getElementById('clip-audio');"
        " return a && (a.readyState >= 1 || a.error); }",
        timeout=15_000,
    )
    audio = page.evaluate(
        "() => { const a = document.getElementById('clip-audio');"
        " return {duration: a.duration, error: a.error && a.error.code}; }"
    )
    assert audio["error"] is None
    assert audio["duration"] == pytest.approx(first["duration_s"], abs=0.05)
    assert page.locator("svg.chart rect.bar-over").count() == first["n_windows"]
    page.close()
