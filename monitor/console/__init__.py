"""The web console (`weldmon console`): every station live, every weld on record, flagged welds
reviewed in the browser and promoted into the training dataset.

A separate process and an MQTT client like `weldmon watch`: it never talks to the daemon
except through the broker, so a fault here never touches a verdict. It owns its SQLite
history, its HTTP server and the review actions.

May import: ``monitor.live`` (the live-view core it shares with `weldmon watch`),
``monitor.events`` (the wire schema), the MQTT settings, the back-off helper, the
clip-promotion helpers and its own modules; never the pipeline, the publisher's internals,
torch or training.

Layers: ``monitor.live`` (topic routing, live state rules, the reconnecting feed) <-
``fleet`` (the console's alerting on top of the live state) <- ``ingest`` (history, shadow
and teach-in messages) -> ``store`` (SQLite, rows as ``records``); ``state`` holds what one
process shares; ``web`` (Starlette routes and pages) reads both; ``security``, ``clipfiles``
and ``spectrogram`` are its helpers; ``cli`` wires it all.
"""
