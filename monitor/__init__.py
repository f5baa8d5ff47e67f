"""The real-time monitor daemon and offline replay, in rooms by stage of the data path.

    monitor/   cli, daemon (wiring only), replay, reload, runtime, config, events (the wire
               schema), backoff
      audio/     samples in: sound device, capture thread, ring buffer, frame-0 clock, files
      segment/   the segmenter factory and the monitor-only segmenters (trigger, file)
      pipeline/  blocks -> stations -> resample -> segmenter -> windows -> inference -> tracker
      publish/   events out: outbox, MQTT publisher and settings, Home Assistant, commands
      ops/       health, metrics, systemd notify, logs, memory, status, defect clips
      watch/     the terminal view (a separate process: an MQTT client)

Import rules (tests/test_import_rules.py enforces them): the monitor never imports training;
``pipeline`` never imports ``publish``; the views (``watch``, ``console``) import only
``monitor.events``, ``monitor.publish.settings``, ``monitor.backoff``, their own room and
deploy helpers that do not import torch. Each room's ``__init__`` says what it owns.
"""
