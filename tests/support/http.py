"""A real HTTP client for the daemon's /metrics and /healthz (standard library urllib)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 5.0


def healthz(port: int, host: str = "127.0.0.1") -> tuple[int, dict]:
    """(HTTP status, JSON body) of ``GET /healthz``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=TIMEOUT_S) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metrics(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """Every sample of ``GET /metrics`` by ``name{label=value,...}`` (no braces unlabelled)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=TIMEOUT_S) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values
