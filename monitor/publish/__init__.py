"""The publish room: events out to MQTT and commands in.

Owns the event router and its sink protocol (`router`: journal, MQTT, metrics, teach-in,
OPC UA and stdout are equal sinks), the MQTT publisher (`publisher`: what goes out; it holds
its queue, `spool`, the one facade over the durable `outbox`, and its reconnecting
connection, `link`), the ``mqtt:`` settings (`settings`, which the views use to connect too),
commands in (`commands`), OPC UA (`opcua`) and Home Assistant discovery (`homeassistant`).

May import: deploy's torch-free helpers, ``monitor.events``, ``monitor.backoff`` and its own
room.
"""
