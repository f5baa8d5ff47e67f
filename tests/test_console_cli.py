"""`weldmon console` as a process, with a real HTTP client against a real Mosquitto: refusals
before anything is served, Basic auth, Host checks, bad messages counted and never fatal, a
clean SIGTERM, and no hole in the history across a restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from monitor.events import ErrorEvent, topic_for
from tests.support.base_venv import run_in_base
from tests.support.broker import MosquittoBroker
from tests.support.console import REPO_ROOT, console_args, stream_until
from tests.test_console_parts import SHA, result

pytestmark = [pytest.mark.broker]


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "console", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_base_install_names_the_extra_the_console_needs(base_python: Path) -> None:
    done = run_in_base(base_python, "-m", "weldmon.cli", "console", "--help", timeout=120)
    assert done.returncode == 2
    assert "pip install 'weldmon[console]'" in done.stderr and "Traceback" not in done.stderr


def test_a_non_loopback_listen_without_auth_is_refused(tmp_path: Path) -> None:
    done = _console("--broker", "127.0.0.1:1", "--listen", "0.0.0.0:0", "--db", str(tmp_path / "h"))
    assert done.returncode == 2
    assert "weldmon console:" in done.stderr and "--auth-file" in done.stderr
    assert not (tmp_path / "h").exists()  # nothing was done


@pytest.mark.parametrize(
    "args, says",
    [
        (["--prefix", "a/#"], "'#'"),
        (["--listen", "127.0.0.1:99999"], "port"),
        (["--auth-file", "/nonexistent"], "--auth-file"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, args: list[str], says: str) -> None:
    done = _console("--broker", "127.0.0.1:1", "--db", str(tmp_path / "h"), *args)
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_basic_auth_and_host_checks(
    mosquitto: MosquittoBroker, console_run, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text("ana:s3cret-pw\n")
    users.chmod(0o600)
    run = console_run(console_args(mosquitto, tmp_path / "h.sqlite3", "--auth-file", str(users)))
    url = run.wait_serving()
    assert httpx.get(f"{url}/").status_code == 401
    assert httpx.get(f"{url}/api/welds", auth=("ana", "wrong")).status_code == 401
    ok = httpx.get(f"{url}/", auth=("ana", "s3cret-pw"))
    assert ok.status_code == 200 and "signed in as ana" in ok.text
    assert "frame-ancestors 'none'" in ok.headers["content-security-policy"]
    assert httpx.get(f"{url}/healthz").status_code == 200
    # DNS rebinding: a foreign name pointed at 127.0.0.1 is not served.
    rebound = httpx.get(f"{url}/", auth=("ana", "s3cret-pw"), headers={"Host": "evil.example"})
    assert rebound.status_code == 400
    assert run.stop() == 0 and "stopped" in run.text()


def test_bad_messages_are_counted_and_history_has_no_hole_across_a_restart(
    mosquitto: MosquittoBroker, mqtt_subscriber, console_run, tmp_path: Path
) -> None:
    db = tmp_path / "h.sqlite3"
    publisher = mqtt_subscriber(mosquitto, ["weldmon/#"])
    run = console_run(console_args(mosquitto, db))
    url = run.wait_serving()
    stream_until(url, "conn-connected")  # subscribed: nothing published from here is lost
    first = result("cell1", 1)
    publisher.publish("weldmon/cell1/weld/result", b"{not json")
    publisher.publish("weldmon/cell2/weld/result", first.to_json())  # topic/station mismatch
    publisher.publish(topic_for(first), first.to_json())
    publisher.publish(topic_for(first), first.to_json())  # a redelivery
    error = ErrorEvent(
        daemon_version="0.1.0",
        model_sha256=SHA,
        code="model_reload_failed",
        message="<script>alert(1)</script> sha256 mismatch",
    )
    publisher.publish(topic_for(error), error.to_json())
    # Messages arrive in order on one connection: once the error is shown, all were handled.
    stream_until(url, "model_reload_failed")
    page = httpx.get(f"{url}/api/stats").json()
    assert page["malformed"] == 2 and page["duplicates"] == 1 and page["results"] == 1
    overview = httpx.get(f"{url}/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in overview  # broker text is escaped
    assert run.stop() == 0
    # Published while the console is down: its persistent session gets it after the restart.
    missed = result("cell1", 0)
    publisher.publish(topic_for(missed), missed.to_json())
    run = console_run(console_args(mosquitto, db))
    url = run.wait_serving()
    stream_until(url, missed.weld_id)
    ids = {w["weld_id"] for w in httpx.get(f"{url}/api/welds").json()["welds"]}
    assert ids == {first.weld_id, missed.weld_id}
    assert first.weld_id in httpx.get(f"{url}/").text  # the card is seeded from the history


def test_broker_tls_and_credentials_come_from_the_monitor_config(
    mosquitto_tls: MosquittoBroker, console_run, tmp_path: Path
) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        "mqtt:\n"
        f"  host: localhost\n  port: {mosquitto_tls.port}\n"
        f"  username: {mosquitto_tls.username}\n  password: {mosquitto_tls.password}\n"
        f"  topic_prefix: line7\n"
        f"  tls: {{enabled: true, ca_file: {mosquitto_tls.ca_file}}}\n"
    )
    run = console_run(
        ["--config", str(config), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "h")]
    )
    url = run.wait_serving()
    stream_until(url, "conn-connected")
    assert "line7/#" in run.text()  # the prefix came from the config too
    # Without the config's credentials the same broker refuses the console, visibly.
    bare = console_run(
        [
            *console_args(mosquitto_tls, tmp_path / "h2", prefixes=["line7"]),
            "--tls-ca",
            str(mosquitto_tls.ca_file),
        ]
    )
    stream_until(bare.wait_serving(), "DISCONNECTED")
