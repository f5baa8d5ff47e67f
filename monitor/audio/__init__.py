"""The audio room: where samples enter the monitor, as `blocks.AudioBlock`s.

Owns the sound device (device lookup, the PortAudio stream and its ring buffer, the capture
thread that reopens a lost device), frame 0's UTC (`epoch_clock`), recorded files as the
same blocks (`files`, for replay) and the dead-microphone watch (`silence`).

May import: deploy's torch-free helpers, ``monitor.events``, ``monitor.backoff`` and its own
room; nothing downstream (segment, pipeline, publish, ops, views), which receive its blocks.
"""
