"""The field report's probes of `weldmon console` (issue 22, items 9-13 and 17), each against
the real thing: the console as a subprocess, a real Mosquitto, raw sockets and httpx for
HTTP, Chromium for the links, clips written by the daemon's own ClipStore."""

from __future__ import annotations

import re
import socket
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from monitor.console.urls import weld_url
from monitor.events import WeldResult, topic_for
from monitor.ops.clip_policy import ClipsConfig
from monitor.ops.clips import ClipStore
from tests.support.broker import MosquittoBroker
from tests.support.console import console_args, stream_until
from tests.test_console_parts import RATE, T0, result

pytestmark = [pytest.mark.broker]

ANSWER_WITHIN_S = 5.0  # a refusal from the headers comes at once, not after a body upload
HUGE_BODY = 300 * 1024 * 1024  # the report's 300 MB


def _published(mosquitto: MosquittoBroker, mqtt_subscriber, url: str, *results: WeldResult):
    """Publish the results and wait until the console's history holds them all."""
    publisher = mqtt_subscriber(mosquitto, ["weldmon/#"])
    stream_until(url, "conn-connected")  # subscribed: nothing published from here is lost
    for r in results:
        publisher.publish(topic_for(r), r.to_json())
    deadline = time.monotonic() + 15
    want = {r.weld_id for r in results}
    while time.monotonic() < deadline:
        got = {w["weld_id"] for w in httpx.get(f"{url}/api/welds").json()["welds"]}
        if want <= got:
            return
        time.sleep(0.1)
    raise AssertionError(f"results not in the history: {want - got}")


def _raw_post(url: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Send a POST's headers (and ``body``, maybe far less than declared); return what the
    server answers within ANSWER_WITHIN_S (b"" if nothing)."""
    host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN_S) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        try:
            while not _complete(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
    return answer


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    return bool(sep) and (length is None or len(body) >= int(length.group(1)))


def _status(answer: bytes) -> int | None:
    found = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return int(found.group(1)) if found else None


def test_a_review_post_is_refused_before_its_body_is_read(
    mosquitto: MosquittoBroker, console_run, tmp_path: Path
) -> None:
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3"))
    url = run.wait_serving()
    path = "/welds/cell1-x/review"
    multipart = {
        "Content-Type": "multipart/form-data; boundary=b0undary",
        "Content-Length": str(HUGE_BODY),
    }
    # 300 MB declared, one line sent: the answer comes at once; nothing waits for the rest
    # (the review form is never multipart: nothing is spooled to a temporary file).
    answer = _raw_post(url, path, multipart, b"--b0undary\r\n")
    assert _status(answer) == 415, answer
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "999999999"}
    assert _status(_raw_post(url, path, form, b"csrf_token=")) == 413
    # A foreign origin is refused on its headers, whatever the body.
    foreign = {**form, "Origin": "http://attacker.invalid"}
    answer = _raw_post(url, path, foreign, b"verdict=good")
    assert _status(answer) == 403 and b"cross-origin" in answer
    # No length declared (chunked): refused as soon as the bound is passed.
    chunked = {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"}
    piece = b"a" * 32768
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(4))
    assert _status(_raw_post(url, path, chunked, body)) == 413
    assert "Traceback" not in run.text()
    assert run.rss_kib() < 400_000  # nothing was buffered


@pytest.mark.parametrize(
    "query",
    [
        "offset=9223372036854775808",
        "offset=9223372036854775807",
        "until=9999-12-31",
        "since=0001-01-01T00:00:00%2B14:00",
        "since=9999-12-31T23:59:59-14:00",
        "since=0001-01-01",
        "until=0001-01-01",
    ],
)
def test_extreme_history_filters_never_give_500(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, tmp_path: Path, query: str
) -> None:
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3"))
    url = run.wait_serving()
    weld = result("cell1", 1)
    _published(mosquitto, mqtt_subscriber, url, weld)
    page = httpx.get(f"{url}/welds?{query}")
    api = httpx.get(f"{url}/api/welds?{query}")
    assert page.status_code in (200, 400) and api.status_code == page.status_code, page.text
    if query == "offset=9223372036854775808":
        assert api.status_code == 400 and "offset" in api.json()["error"]
        return
    assert api.status_code == 200
    ids = [w["weld_id"] for w in api.json()["welds"]]
    # Before everything / after everything: the weld of 2026 is in or out accordingly.
    unbounded = ("until=9999-12-31", "since=0001-01-01T00:00:00%2B14:00", "since=0001-01-01")
    expect_in = query in unbounded
    assert ids == ([weld.weld_id] if expect_in else [])
    assert "Traceback" not in run.text()


def test_an_ipv6_loopback_listen_serves_the_url_it_prints(console_run, tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    run = console_run(
        ["--broker", "127.0.0.1:1", "--listen", "[::1]:0", "--db", str(tmp_path / "h")]
    )
    url = run.wait_serving()
    assert url.startswith("http://[::1]:")
    answer = httpx.get(f"{url}/")
    assert answer.status_code == 200 and "weldmon" in answer.text
    # The rebinding guard still holds on IPv6.
    assert httpx.get(f"{url}/", headers={"Host": "evil.example"}).status_code == 400


def _clip(state_dir: Path, r: WeldResult) -> Path:
    tone = 0.1 * np.sin(np.arange(2 * RATE) * 2 * np.pi * 440 / RATE)
    path = ClipStore(state_dir, ClipsConfig(policy="all")).write(r, tone, RATE)
    assert path is not None
    return path


def _token(url: str, weld_id: str) -> str:
    page = httpx.get(url + weld_url(weld_id)).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_a_result_cannot_claim_another_welds_clip(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, tmp_path: Path
) -> None:
    state, dataset = tmp_path / "state", tmp_path / "dataset"
    victim = result("cell1", 1)
    victim_clip = _clip(state, victim)
    thief = result("cell1", 1, T0 + timedelta(minutes=1), clip_path=str(victim_clip))
    args = ["--clips", str(state / "clips"), "--dataset", str(dataset)]
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3", *args))
    url = run.wait_serving()
    _published(mosquitto, mqtt_subscriber, url, victim, thief)
    assert httpx.get(url + weld_url(thief.weld_id, "audio")).status_code == 404
    detail = httpx.get(url + weld_url(thief.weld_id)).text
    assert "not this weld&#39;s clip" in detail or "not this weld's clip" in detail
    answer = httpx.post(
        url + weld_url(thief.weld_id, "review"),
        data={"verdict": "good", "reviewer": "ana", "csrf_token": _token(url, thief.weld_id)},
    )
    assert answer.status_code in (303, 200)  # a flagged weld is reviewed, without a clip
    assert victim_clip.exists() and not list(dataset.rglob("*.flac"))
    stats = httpx.get(f"{url}/api/stats").json()
    assert stats["clips"]["clip_path_refused"] >= 1
    # The victim's own review still promotes its own clip.
    answer = httpx.post(
        url + weld_url(victim.weld_id, "review"),
        data={"verdict": "good", "reviewer": "ana", "csrf_token": _token(url, victim.weld_id)},
    )
    assert answer.status_code == 303 and not victim_clip.exists()
    promoted = [p.name for p in dataset.rglob("*.flac")]
    assert len(promoted) == 1 and promoted[0].startswith(victim.weld_id)


def test_a_bad_config_folder_is_a_bad_request_and_moves_nothing(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, tmp_path: Path
) -> None:
    state, dataset = tmp_path / "state", tmp_path / "dataset"
    weld = result("cell1", 1)
    clip = _clip(state, weld)
    args = ["--clips", str(state / "clips"), "--dataset", str(dataset)]
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3", *args))
    url = run.wait_serving()
    _published(mosquitto, mqtt_subscriber, url, weld)
    token = _token(url, weld.weld_id)
    for folder in ("../escape", ".hidden", "a/b", "x" * 200):
        answer = httpx.post(
            url + weld_url(weld.weld_id, "review"),
            data={"verdict": "good", "reviewer": "ana", "csrf_token": token}
            | {"config_folder": folder},
        )
        assert answer.status_code == 400 and "config folder" in answer.text, (folder, answer.text)
    assert clip.exists()
    assert httpx.get(url + weld_url(weld.weld_id)).status_code == 200
    assert httpx.get(f"{url}/api/welds/{weld.weld_id}").json()["console"]["review"] is None


def test_weld_ids_with_question_marks_and_slashes_reach_their_own_pages(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, chromium, tmp_path: Path
) -> None:
    plain = result("cell1", 1)
    odd = [
        result("cell1", 1, T0 + timedelta(minutes=1)).model_copy(update={"weld_id": wid})
        for wid in (f"{plain.weld_id}?x=1", "cell1/a/b", "cell1 50%#frag")
    ]
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3"))
    url = run.wait_serving()
    _published(mosquitto, mqtt_subscriber, url, plain, *odd)
    page = chromium.new_page()  # type: ignore[attr-defined]
    try:
        for weld in odd:
            page.goto(f"{url}/welds")
            page.click(f"a[href='{weld_url(weld.weld_id)}']")
            page.wait_for_load_state()
            assert weld.weld_id in page.inner_text("main"), weld.weld_id
            assert page.url == url + weld_url(weld.weld_id)
            api = httpx.get(url + weld_url(weld.weld_id, base="/api/welds/")).json()
            assert api["weld_id"] == weld.weld_id
    finally:
        page.close()
    # Not found and not allowed stay plain answers.
    assert httpx.get(f"{url}/welds/a/b/c/d").status_code == 404
    assert httpx.get(url + weld_url(plain.weld_id, "review")).status_code == 405
