"""The console's teach-in controls (monitor/console/teach.py): in Chromium, the /teach page's
buttons publish ``{prefix}/cmd/teach`` (start, drop a weld, accept) on a real Mosquitto, the
page shows the daemon's answers from ``{prefix}/teach/reply`` (published here as the daemon
would) and the run's welds, and a request without sign-in (401) or without the page's CSRF
token (403) is refused and publishes nothing. The overview's station card says "taught" and
a `recalibrate` error is a red HEALTH banner."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from monitor.events import ErrorEvent, topic_for
from monitor.events.teach import TeachReply, teach_reply_topic
from monitor.events.vocabulary import ErrorCode, ThresholdSource
from tests.support.broker import MosquittoBroker
from tests.support.console import console_args, save_screenshot, stream_until
from tests.test_console_parts import SHA, T0, result
from tests.test_console_shadow import PAGE_TIMEOUT_S, _wait_connected

USER, PASSWORD = "ana", "s3cret-pw"
STATION = "weldmon/cell1"


def _reply(action: str, **fields) -> TeachReply:
    """The daemon's answer, as monitor/teach/station.py makes it."""
    return TeachReply(
        daemon_version="0.1.0", model_sha256=SHA, action=action, station="cell1",
        outcome="applied", by=USER, artifact_threshold=0.705, **fields,
    )  # fmt: skip


def _until(page, url: str, selector: str, text: str | None = None) -> None:
    """Reload `url` until `selector` is on it (with `text`, if given)."""
    deadline = datetime.now() + timedelta(seconds=PAGE_TIMEOUT_S)
    while True:
        found = page.locator(selector)
        if found.count() and (text is None or found.first.inner_text() == text):
            return
        assert datetime.now() < deadline, page.content()
        page.wait_for_timeout(200)
        page.goto(url)


@pytest.mark.broker
@pytest.mark.browser
def test_the_teach_page_starts_drops_accepts_and_shows_the_daemons_replies(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, chromium, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text(f"{USER}:{PASSWORD}\n")
    users.chmod(0o600)
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3", "--auth-file", str(users)))
    url = run.wait_serving()
    commands = mqtt_subscriber(mosquitto, ["weldmon/cmd/#"])
    assert httpx.get(f"{url}/teach").status_code == 401  # nobody signed in
    _wait_connected(url, (USER, PASSWORD))
    daemon = mqtt_subscriber(mosquitto, ["weldmon/none"])  # publishes as the daemon would
    daemon.publish(topic_for(first := result("cell1", 0, T0)), first.to_json())
    second = result("cell1", 0, T0 + timedelta(seconds=30))

    context = chromium.new_context(http_credentials={"username": USER, "password": PASSWORD})
    page = context.new_page()
    try:
        page.goto(f"{url}/teach")
        _until(page, f"{url}/teach", f"section[data-station='{STATION}'] .no-answer")
        page.locator(f"form.teach-start[data-station='{STATION}'] button").click()
        page.wait_for_url(re.compile(r"/teach\?sent="))
        assert page.locator("#teach-sent").count() == 1

        collecting = _reply(
            "start", state="collecting", run_id="run1", welds=2, windows=40,
            weld_ids=[first.weld_id, second.weld_id], threshold=0.705,
        )  # fmt: skip
        daemon.publish(teach_reply_topic("weldmon"), collecting.to_json())
        section = f"section[data-station='{STATION}']"
        _until(page, f"{url}/teach", f"{section} .state", "collecting")
        assert page.locator(f"{section} .teach-welds tr[data-weld]").count() == 2
        # a result of the run that came after the daemon's answer is listed too, marked
        third = result("cell1", 0, T0 + timedelta(seconds=60), teach_in=True, teach_in_run="run1")
        daemon.publish(topic_for(third), third.to_json())
        _until(page, f"{url}/teach", f"{section} tr.teach-pending[data-weld='{third.weld_id}']")
        assert page.locator(f"{section} .teach-welds tr[data-weld]").count() == 3
        save_screenshot(page, "teach")
        page.locator(f"form.teach-drop[data-weld='{second.weld_id}'] button").click()
        page.wait_for_url(re.compile(r"/teach\?sent="))
        page.locator(f"form.teach-accept[data-station='{STATION}'] button").click()
        page.wait_for_url(re.compile(r"/teach\?sent="))

        taught = _reply(
            "accept", state="taught", threshold=0.62, threshold_source=ThresholdSource.TEACH_IN,
            warning="only 1 weld(s) taught: the calibration is rough",
        )  # fmt: skip
        daemon.publish(teach_reply_topic("weldmon"), taught.to_json())
        _until(page, f"{url}/teach", f"{section} .state", "taught")
        assert page.locator(f"{section} .threshold").inner_text() == "0.6200"
        assert page.locator(f"{section} .source").inner_text() == "teach_in"
        assert "rough" in page.locator(f"{section} .answer").inner_text()
        assert page.locator(f"{section} .teach-welds").count() == 0

        # The overview: the card's "taught" badge once a weld is judged by the teach-in,
        # and a `recalibrate` error as the station's red HEALTH banner.
        judged = result(
            "cell1", 0, T0 + timedelta(minutes=5),
            threshold_source=ThresholdSource.TEACH_IN, teach_in_id="run1", teach_in_welds=1,
        )  # fmt: skip
        daemon.publish(topic_for(judged), judged.to_json())
        drifted = ErrorEvent(
            daemon_version="0.1.0", model_sha256=SHA, code=ErrorCode.RECALIBRATE,
            station="cell1", message="cell1: the median score of its last 5 good welds ...",
        )  # fmt: skip
        daemon.publish(topic_for(drifted, "weldmon"), drifted.to_json())
        _until(page, f"{url}/", "article[data-station='cell1'] .tag-taught")
        page.locator(".banner-health", has_text="recalibrate").wait_for(timeout=10_000)

        # Signed in but without the page's token, or with it but not signed in: refused.
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.content()).group(1)
        form = {"prefix": "weldmon", "station": "cell1"}
        forged = httpx.post(f"{url}/teach/start", data=form, auth=(USER, PASSWORD))
        assert forged.status_code == 403 and "CSRF" in forged.text
        anonymous = httpx.post(f"{url}/teach/start", data={**form, "csrf_token": token})
        assert anonymous.status_code == 401
    finally:
        context.close()

    commands.wait_for("weldmon/cmd/teach", 3, PAGE_TIMEOUT_S)
    sent = [json.loads(m.payload) for m in commands.matching("weldmon/cmd/teach")]
    assert [(c["action"], c["station"], c["by"]) for c in sent] == [
        ("start", "cell1", USER),
        ("drop", "cell1", USER),
        ("accept", "cell1", USER),
    ]
    assert sent[1]["weld_id"] == second.weld_id
    assert run.stop() == 0


@pytest.mark.broker
def test_an_open_console_shows_the_teach_page_but_refuses_its_commands(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, tmp_path: Path
) -> None:
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3"))
    url = run.wait_serving()
    stream_until(url, "conn-connected")
    commands = mqtt_subscriber(mosquitto, ["weldmon/cmd/#"])
    commands.publish(topic_for(weld := result("cell1", 0, T0)), weld.to_json())
    deadline = datetime.now() + timedelta(seconds=PAGE_TIMEOUT_S)
    while 'section class="teach-station"' not in (page := httpx.get(f"{url}/teach")).text:
        assert datetime.now() < deadline, page.text
    assert "sign-in needed" in page.text and "/teach/start" not in page.text  # no buttons
    # the console's CSRF token, from a page that has forms (the cards' mute buttons)
    token = re.search(r'name="csrf_token" value="([^"]+)"', httpx.get(f"{url}/").text)
    assert token
    form = {"csrf_token": token.group(1), "prefix": "weldmon", "station": "cell1"}
    refused = httpx.post(f"{url}/teach/start", data=form)
    assert refused.status_code == 403 and "--auth-file" in refused.text
    # a reply that is not one is counted as a bad message, never shown
    commands.publish(teach_reply_topic("weldmon"), b'{"kind": "teach_in"}')
    deadline = datetime.now() + timedelta(seconds=PAGE_TIMEOUT_S)
    while httpx.get(f"{url}/api/stats").json()["malformed"] != 1:
        assert datetime.now() < deadline, "the bad reply was not counted"
    assert "no-answer" in httpx.get(f"{url}/teach").text
    assert run.stop() == 0
    assert commands.matching("weldmon/cmd/teach") == []
