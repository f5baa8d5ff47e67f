"""docs/mqtt.md's broker ACL, loaded into a real Mosquitto: each client it describes can do
its job with only the rights it grants (issue 22: following it used to switch process data
off silently, since nobody could write `+/process` and the daemon could not read it)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.publish.commands import CommandHandlers, CommandRouter
from monitor.publish.homeassistant import HomeAssistantConfig
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import REPO_ROOT

pytestmark = pytest.mark.broker

WAIT_S = 10.0


def documented_acl() -> str:
    """The ``acl_file`` block under "Broker access (ACL)" in docs/mqtt.md."""
    doc = (REPO_ROOT / "docs" / "mqtt.md").read_text()
    section = doc.split("### Broker access (ACL)", 1)[1]
    match = re.search(r"```text\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, "no ACL block in docs/mqtt.md"
    return match.group(1)


def daemon_subscriptions() -> list[str]:
    """What `weldmon run` subscribes to with every inbound kind on (its own router's list)."""
    handlers = CommandHandlers(
        reload=lambda origin: None,
        trigger=lambda station, state, at, context: False,
        part=lambda station, context: False,
        homeassistant_birth=lambda: None,
        malformed=lambda kind: None,
        process=lambda station, readings, bad: None,
        teach=lambda command: None,
    )
    router = CommandRouter(
        "weldmon",
        HomeAssistantConfig(enabled=True),
        ["cell1"],
        handlers,
        triggers=True,
        process=True,
    )
    return router.subscriptions


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "mosquitto", password=True, acl=documented_acl())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_the_documented_acl_lets_every_inbound_kind_reach_the_daemon(
    acl_broker: MosquittoBroker, mqtt_subscriber: Callable[..., MqttCollector]
) -> None:
    daemon = mqtt_subscriber(acl_broker, daemon_subscriptions(), username="weldmon")
    plc = mqtt_subscriber(acl_broker, ["weldmon/none"], username="plc-line3")
    gateway = mqtt_subscriber(acl_broker, ["weldmon/none"], username="gateway-line3")
    ops = mqtt_subscriber(acl_broker, ["weldmon/none"], username="ops")
    plc.publish("weldmon/cell1/trigger", b"start")
    plc.publish("weldmon/cell1/part", b"A-1042")
    gateway.publish("weldmon/cell1/process", b'{"t": "2026-01-01T00:00:00Z", "current_a": 0}')
    ops.publish("weldmon/cmd/reload", b"reload")
    for topic in ("weldmon/cell1/trigger", "weldmon/cell1/part", "weldmon/cell1/process"):
        daemon.wait_for(topic, 1, WAIT_S)
    daemon.wait_for("weldmon/cmd/reload", 1, WAIT_S)


def test_the_documented_acl_keeps_each_writer_to_its_own_topics(
    acl_broker: MosquittoBroker, mqtt_subscriber: Callable[..., MqttCollector]
) -> None:
    daemon = mqtt_subscriber(acl_broker, daemon_subscriptions(), username="weldmon")
    plc = mqtt_subscriber(acl_broker, ["weldmon/none"], username="plc-line3")
    gateway = mqtt_subscriber(acl_broker, ["weldmon/none"], username="gateway-line3")
    plc.publish("weldmon/cell1/process", b'{"t": "2026-01-01T00:00:00Z", "current_a": 0}')
    gateway.publish("weldmon/cell1/trigger", b"start")
    gateway.publish("weldmon/cmd/reload", b"reload")
    # A marker the gateway may send: once it is in, the denied ones would have been too.
    gateway.publish("weldmon/cell2/process", b'{"t": "2026-01-01T00:00:00Z", "current_a": 0}')
    daemon.wait_for("weldmon/cell2/process", 1, WAIT_S)
    assert [m.topic for m in daemon.messages] == ["weldmon/cell2/process"]


def test_only_the_operators_tooling_may_send_a_teach_command_and_the_daemon_answers_it(
    acl_broker: MosquittoBroker, mqtt_subscriber: Callable[..., MqttCollector]
) -> None:
    command = b'{"action": "start", "station": "cell1"}'
    daemon = mqtt_subscriber(acl_broker, daemon_subscriptions(), username="weldmon")
    ops = mqtt_subscriber(acl_broker, ["weldmon/teach/reply"], username="ops")
    for intruder in ("plc-line3", "gateway-line3", "reader"):
        mqtt_subscriber(acl_broker, ["weldmon/none"], username=intruder).publish(
            "weldmon/cmd/teach", command
        )
    ops.publish("weldmon/cmd/teach", command)
    daemon.wait_for("weldmon/cmd/teach", 1, WAIT_S)
    daemon.publish("weldmon/teach/reply", b"{}")
    ops.wait_for("weldmon/teach/reply", 1, WAIT_S)
    assert len(daemon.matching("weldmon/cmd/teach")) == 1, "only the operators' command is in"


def test_the_console_may_send_a_teach_command_and_read_the_daemons_answer(
    acl_broker: MosquittoBroker, mqtt_subscriber: Callable[..., MqttCollector]
) -> None:
    daemon = mqtt_subscriber(acl_broker, daemon_subscriptions(), username="weldmon")
    console = mqtt_subscriber(acl_broker, ["weldmon/#"], username="console")
    console.publish("weldmon/cmd/teach", b'{"action": "status", "station": "cell1"}')
    daemon.wait_for("weldmon/cmd/teach", 1, WAIT_S)
    daemon.publish("weldmon/teach/reply", b"{}")
    console.wait_for("weldmon/teach/reply", 1, WAIT_S)
