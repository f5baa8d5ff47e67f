"""The live-view core: what `weldmon watch` and the web console (`weldmon console`) both know
about the daemons they follow, and how both stay connected to the broker.

Owns the topic routing (``topics``: ``--prefix`` patterns, what each topic is), the state
model built from events (``state``: prefixes, stations, current welds, verdicts, the
viewer's own link; one set of rules for both views), applying one message to it
(``messages``) and the MQTT subscribe + reconnect loop with the one back-off helper
(``feed``). The views add only what is theirs: the terminal drawing, the console's alert
hygiene, history and pages.

May import: ``monitor.events``, ``monitor.backoff``, deploy helpers that do not import
torch, and its own room; nothing else of the monitor. The views import it.
"""
