"""`weldmon watch`, the terminal view: a separate process that is only an MQTT client.

Owns the CLI and screen loop (`app`), its one prefix of the live-view core (`state`) and the
rich rendering (`view`); the state rules and the reconnect loop are ``monitor.live``'s.

May import: ``monitor.live``, ``monitor.events``, ``monitor.publish.settings``,
``monitor.backoff``, deploy helpers that do not import torch, and its own room; nothing else
of the monitor.
"""
