"""The JSON Schema of the MQTT wire format: every outbound event (`monitor.events`) and the
inbound messages (`monitor.events.inbound`), as ``python -m monitor.events`` prints it for
``docs/mqtt.schema.json``.
"""

from __future__ import annotations

import json
from typing import Any

from monitor.events import EVENT_ADAPTER, SCHEMA_VERSION, StatusMessage
from monitor.events.inbound import PartMessage, ProcessMessage, TriggerMessage
from monitor.events.shadow import ModelChange, ModelCommand, ShadowResult
from monitor.events.teach import TeachCommand, TeachReply


def mqtt_json_schema() -> dict[str, Any]:
    """JSON Schema of every outbound event (a oneOf discriminated on ``kind``), with the
    status and trigger messages under ``$defs``."""
    template = "#/$defs/{model}"
    schema = EVENT_ADAPTER.json_schema(ref_template=template)
    defs = schema.setdefault("$defs", {})
    for model in (
        StatusMessage,
        TriggerMessage,
        PartMessage,
        ProcessMessage,
        ShadowResult,
        ModelChange,
        ModelCommand,
        TeachCommand,
        TeachReply,
    ):
        sub = model.model_json_schema(ref_template=template)
        defs.update(sub.pop("$defs", {}))
        defs[model.__name__] = sub
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://weldmon.invalid/mqtt.schema.json",
        "title": "weldmon MQTT event",
        "description": (
            f"Events on {{prefix}}/{{station}}/weld/* and {{prefix}}/error, schema_version "
            f"{SCHEMA_VERSION}. The retained {{prefix}}/status payload is $defs/StatusMessage; "
            "inbound {prefix}/{station}/trigger payloads are $defs/TriggerMessage, "
            "{prefix}/{station}/part payloads $defs/PartMessage, inbound "
            "{prefix}/{station}/process payloads $defs/ProcessMessage (or one "
            "$defs/ProcessReading). A shadow model's verdicts on "
            "{prefix}/{station}/shadow/result are $defs/ShadowResult, "
            "inbound {prefix}/cmd/promote and {prefix}/cmd/rollback payloads "
            "$defs/ModelCommand, their outcome on {prefix}/model/change $defs/ModelChange; "
            "inbound {prefix}/cmd/teach payloads $defs/TeachCommand, the answer on "
            "{prefix}/teach/reply $defs/TeachReply."
        ),
        **schema,
    }


def mqtt_json_schema_text() -> str:
    """The schema as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(mqtt_json_schema(), indent=2, sort_keys=True) + "\n"
