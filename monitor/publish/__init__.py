"""The publish room: events out to MQTT and commands in.

Owns the durable outbox (`outbox`), the MQTT publisher (`publisher`: what goes out, over
the reconnecting connection in `link`), the ``mqtt:`` settings (`settings`, which the views
use to connect too) and Home Assistant discovery (`homeassistant`).

May import: deploy's torch-free helpers, ``monitor.events``, ``monitor.backoff`` and its own
room.
"""
