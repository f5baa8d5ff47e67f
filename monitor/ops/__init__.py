"""The operations room: what the daemon tells operators besides weld events, and what it
keeps for them.

Owns /metrics and /healthz (`metrics`, `health`), systemd notify and the watchdog
(`notify`), logging set-up (`logs`), the allocator pin (`memory`), the status line and the
counter bookkeeping (`status`), and defect clips (`clips`, decided by `clip_policy`).

May import: deploy's torch-free helpers, ``monitor.events``, ``monitor.audio`` and
``monitor.publish`` (to read their counters) and its own room; never the pipeline.
"""
