"""The monitor's segmentation room: the factory (mode -> segmenter) and the segmenters that
need the running monitor: external triggers (``triggers.TriggerSegmenter``, fed from MQTT)
and one weld per file (``triggers.FileSegmenter``, for replay).

The `Segmenter` protocol and the pure segmenters (the arc gate) live in ``deploy.segment``,
where training can use them too; ``factory`` is the only place a mode name is switched on.

May import: ``deploy.segment``, ``monitor.events`` and its own room.
"""
