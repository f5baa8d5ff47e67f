"""``python -m monitor.events`` prints the JSON Schema committed as ``docs/mqtt.schema.json``."""

import sys

from monitor.events.schema import mqtt_json_schema_text

sys.stdout.write(mqtt_json_schema_text())
