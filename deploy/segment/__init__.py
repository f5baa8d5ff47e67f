"""Segmentation that training also needs: the one `Segmenter` protocol (`protocol`), the arc
gate (`gate`: `GateSegmenter`, `GateParams`, `segment_recording`), band levels (`levels`)
and the factory for the modes that need nothing but the audio (`factory`).

The daemon runs these very segmenters (through ``monitor.segment.factory``), so training and
evaluation can judge the windows the daemon cuts. Pure numpy, no torch.

May import: ``deploy.errors`` and its own room (never torch, training or the monitor).
"""
