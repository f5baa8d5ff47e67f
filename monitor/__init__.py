"""The real-time monitor daemon and offline replay, in rooms by stage of the data path.

    monitor/   cli, daemon (wiring only), replay, reload, promote (+ config_edit, model_cli),
               runtime, config, backoff
      events/    the wire schema: outbound events, vocabularies, inbound messages, JSON Schema
      audio/     samples in: sound device, capture thread, ring buffer, frame-0 clock, files
      segment/   the segmenter factory and the monitor-only segmenters (trigger, file)
      pipeline/  blocks -> stations -> resample -> segmenter -> windows -> inference -> tracker,
                 and the inbox that hands inbound messages to the running pipeline
      publish/   events out: outbox, MQTT publisher and settings, Home Assistant, commands
      ops/       health, metrics, systemd notify, logs, memory, status, defect clips
      watch/     the terminal view (a separate process: an MQTT client)
      console/   the web console (a separate process: an MQTT client like watch)

Import rules (tests/test_import_rules.py enforces them): the monitor never imports training;
``pipeline`` never imports ``publish``; the views (``watch``, ``console``) import only
``monitor.events``, ``monitor.publish.settings``, ``monitor.backoff``, their own room and
deploy helpers that do not import torch. Each room imports only the rooms below it on the
data path (events and backoff at the bottom, then audio, segment, pipeline; publish; ops)
and never the wiring modules above; each room's ``__init__`` says what it owns.
"""
