"""The pipeline room: the one data path from audio blocks to weld events (`core.Pipeline`),
shared by `weldmon run` and `weldmon replay`.

Owns the stages in order: station split (`stations`), resampling to the model rate
(`resample`), the station history and window cutting (`windower`), the inference thread
(`inference`) and each weld's verdict (`tracker`), built from `settings` (what a pipeline is
made of and counts). It hands events to a sink it is given; its inbox (`inbox`) hands
inbound triggers, parts and process data to the running pipeline.

May import: deploy, ``monitor.events``, ``monitor.audio`` (blocks), ``monitor.segment``,
``monitor.backoff`` (rate-limited logging of what it drops) and its own room. Never
``monitor.publish``: where events go is the caller's business.
"""
