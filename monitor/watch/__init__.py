"""`weldmon watch`, the terminal view: a separate process that is only an MQTT client.

Owns the connection loop and CLI (`app`), the pure state model (`state`) and the rich
rendering (`view`).

May import: ``monitor.events``, ``monitor.publish.settings``, ``monitor.backoff``, deploy
helpers that do not import torch, and its own room; nothing else of the monitor.
"""
