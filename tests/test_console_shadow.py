"""The console's shadow comparison (monitor/console/shadow_store.py, compare.py): shadow
verdicts kept beside the production results in the real SQLite history; the /compare page in
Chromium lists the differing welds, and its promote button works only for a signed-in user
with the page's CSRF token, publishing ``{prefix}/cmd/promote`` on a real Mosquitto."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from monitor.console.records import Review
from monitor.console.shadow_store import add_shadow, comparison
from monitor.console.store import WeldStore
from monitor.events import WeldResult, topic_for
from monitor.events.shadow import ShadowResult, shadow_topic
from tests.support.broker import MosquittoBroker
from tests.support.console import console_args, save_screenshot, stream_until
from tests.test_console_parts import T0, result

CANDIDATE = "4c1d2e0f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d"
USER, PASSWORD = "ana", "s3cret-pw"
PAGE_TIMEOUT_S = 10.0


def shadow_of(r: WeldResult, label: int, p_defect: float, complete: bool = True) -> ShadowResult:
    """The candidate's verdict on the weld of production result `r`."""
    return ShadowResult(
        daemon_version=r.daemon_version,
        model_sha256=CANDIDATE,
        station=r.station,
        weld_id=r.weld_id,
        source=r.source,
        started_at=r.started_at,
        ended_at=r.ended_at,
        duration_s=r.duration_s,
        end_reason=r.end_reason,
        label=label,
        label_name="defect" if label else "good_weld",
        judged=True,
        p_defect=p_defect,
        threshold=0.5,
        n_windows=r.n_windows,
        window_p_max=p_defect,
        windows_skipped=0 if complete else 1,
        windows_failed=0,
        complete=complete,
        production_model_sha256=r.model_sha256,
        production_label=r.label,
        production_p_defect=r.p_defect,
        production_judged=True,
        agree=label == r.label,
    )


def _welds() -> list[tuple[WeldResult, ShadowResult]]:
    """Four welds at cell1: two agree, one differs (production alarm, shadow good), and one
    incomplete shadow verdict that the comparison leaves out."""
    start = [T0 + timedelta(seconds=10 * i) for i in range(4)]
    a, b, c, d = (result("cell1", label, s) for label, s in zip((1, 0, 1, 0), start, strict=True))
    return [
        (a, shadow_of(a, 1, 0.8)),
        (b, shadow_of(b, 0, 0.1)),
        (c, shadow_of(c, 0, 0.3)),
        (d, shadow_of(d, 1, 0.9, complete=False)),
    ]


def test_the_comparison_counts_agreement_and_each_models_errors_against_the_reviews(
    tmp_path: Path,
) -> None:
    store = WeldStore(tmp_path / "h.sqlite3")
    welds = _welds()
    for r, s in welds:
        store.add_result("weldmon", r, datetime.now(UTC), False, 1.0)
        assert add_shadow(store, "weldmon", s, datetime.now(UTC))
    assert not add_shadow(store, "weldmon", welds[0][1], datetime.now(UTC))  # a duplicate
    differing = welds[2][0]
    store.add_review(
        Review(differing.weld_id, "weldmon", "cell1", "good", "00", "good_weld", 1, False, "ana",
               datetime.now(UTC))
    )  # fmt: skip
    found = comparison(store)
    (cell,) = found.stations
    assert (cell.compared, cell.agreed, cell.reviewed) == (3, 2, 1)
    assert (cell.production.false_alarms, cell.shadow.false_alarms) == (1, 0)
    assert [d.weld_id for d in found.differing] == [differing.weld_id]
    assert found.candidate == {"weldmon": CANDIDATE}
    assert found.figures("weldmon")["console_agreement"] == pytest.approx(2 / 3)
    store.close()


def _publish(mosquitto: MosquittoBroker, mqtt_subscriber) -> list[tuple[WeldResult, ShadowResult]]:
    publisher = mqtt_subscriber(mosquitto, ["weldmon/cmd/#"])
    welds = _welds()
    for r, s in welds:
        publisher.publish(topic_for(r), r.to_json())
        publisher.publish(shadow_topic("weldmon", s.station), s.to_json())
    return welds


def _wait_connected(url: str, auth: tuple[str, str]) -> None:
    deadline = datetime.now() + timedelta(seconds=PAGE_TIMEOUT_S)
    while httpx.get(f"{url}/api/stats", auth=auth).json()["connection"] != "connected":
        assert datetime.now() < deadline, "the console did not connect to the broker"
        time.sleep(0.1)


@pytest.mark.broker
@pytest.mark.browser
def test_the_compare_page_lists_differing_welds_and_promotes_only_with_sign_in_and_token(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, chromium, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text(f"{USER}:{PASSWORD}\n")
    users.chmod(0o600)
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3", "--auth-file", str(users)))
    url = run.wait_serving()
    commands = mqtt_subscriber(mosquitto, ["weldmon/cmd/#"])
    assert httpx.get(f"{url}/compare").status_code == 401  # nobody signed in: not even a look
    _wait_connected(url, (USER, PASSWORD))  # subscribed: nothing published from here is lost
    welds = _publish(mosquitto, mqtt_subscriber)
    differing = welds[2][0].weld_id

    context = chromium.new_context(http_credentials={"username": USER, "password": PASSWORD})
    page = context.new_page()
    try:
        page.goto(f"{url}/compare")
        deadline = datetime.now() + timedelta(seconds=PAGE_TIMEOUT_S)
        while page.locator(f"#differing tr[data-weld='{differing}']").count() == 0:
            assert datetime.now() < deadline, page.content()
            page.wait_for_timeout(200)
            page.reload()
        assert page.locator("#differing tr[data-weld]").count() == 1
        row = page.locator("tr[data-station='weldmon/cell1'] .agreement")
        assert row.inner_text() == "66.7 %"
        link = page.locator(f"#differing tr[data-weld='{differing}'] a")
        assert link.get_attribute("href") == f"/welds/{differing}"
        save_screenshot(page, "compare")

        # Signed in but without the page's token: refused, nothing published.
        forged = httpx.post(
            f"{url}/compare/promote",
            data={"prefix": "weldmon", "expect_sha256": CANDIDATE},
            auth=(USER, PASSWORD),
        )
        assert forged.status_code == 403 and "CSRF" in forged.text
        page.locator("form.promote[data-prefix='weldmon'] button").click()
        page.wait_for_url(re.compile(r"/compare\?sent="))
        assert page.locator("#promote-sent").count() == 1
        page.goto(f"{url}/compare")
        page.locator("form.rollback[data-prefix='weldmon'] button").click()
        page.wait_for_url(re.compile(r"/compare\?sent="))
    finally:
        context.close()

    commands.wait_for("weldmon/cmd/promote", 1, PAGE_TIMEOUT_S)
    (sent,) = [json.loads(m.payload) for m in commands.matching("weldmon/cmd/promote")]
    assert sent["by"] == USER and sent["expect_sha256"] == CANDIDATE
    assert sent["figures"]["console_agreement"] == pytest.approx(2 / 3)
    commands.wait_for("weldmon/cmd/rollback", 1, PAGE_TIMEOUT_S)
    (back,) = [json.loads(m.payload) for m in commands.matching("weldmon/cmd/rollback")]
    assert back["by"] == USER and back["expect_sha256"] is None
    assert run.stop() == 0


@pytest.mark.broker
def test_an_open_console_shows_the_comparison_but_refuses_to_promote(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, tmp_path: Path
) -> None:
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3"))
    url = run.wait_serving()
    stream_until(url, "conn-connected")
    commands = mqtt_subscriber(mosquitto, ["weldmon/cmd/#"])
    _publish(mosquitto, mqtt_subscriber)
    page = httpx.get(f"{url}/compare")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and "sign-in needed" in page.text and token
    refused = httpx.post(
        f"{url}/compare/promote",
        data={"csrf_token": token.group(1), "prefix": "weldmon", "expect_sha256": CANDIDATE},
    )
    assert refused.status_code == 403 and "--auth-file" in refused.text
    back = httpx.post(
        f"{url}/compare/rollback", data={"csrf_token": token.group(1), "prefix": "weldmon"}
    )
    assert back.status_code == 403 and "--auth-file" in back.text
    assert commands.matching("weldmon/cmd/#") == []
    assert run.stop() == 0
