"""Templates and what they need: the Jinja2 environment (autoescaped: every string from the
broker is untrusted), display helpers, the window-probability chart, and the overview's
fragments for live updates.

Times are shown in the console host's local time zone (the console runs in the plant); the
header names the zone, and the history's date filters use it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from monitor.console.fleet import Fleet, StationCard
from monitor.console.live import Fragment
from monitor.console.urls import weld_url
from monitor.events import WeldResult
from monitor.live.state import Change

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
SHA_SHORT = 12
# Error codes that mean the daemon cannot judge or cannot deliver: a red HEALTH banner (the
# rest, such as a refused reload or a clip not written, are warnings). `recalibrate`: a taught
# station's good welds drifted from its teach-in, its verdicts can no longer be trusted.
HEALTH_CODES = frozenset({"device_lost", "dead_microphone", "outbox_degraded", "recalibrate"})
CHART_WIDTH = 720  # px of the window-probability chart
CHART_HEIGHT = 160
CHART_PAD = 28
# Result fields shown in the verdict panel; everything else the event carries (context,
# process summary, fields added later) is listed under "more" as it is.
CORE_FIELDS = frozenset(
    {
        "kind",
        "event_id",
        "schema_version",
        "emitted_at",
        "daemon_version",
        "model_sha256",
        "station",
        "weld_id",
        "source",
        "started_at",
        "ended_at",
        "duration_s",
        "label",
        "label_name",
        "p_defect",
        "threshold",
        "n_windows",
        "window_p_max",
        "window_probs",
        "degraded",
        "degraded_reasons",
        "dropped_frames",
        "end_reason",
        "clip_path",
        "model_name",
        "model_version",
        "replay",
        # shown in their own tables (process_rows, context) or in the verdict (quality)
        "process",
        "dropouts",
        "context",
        "margin",
        "confidence",
    }
)


def local(value: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A UTC time (datetime or wire string) in the host's local zone."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone().strftime(fmt)


def zone_name() -> str:
    now = datetime.now().astimezone()
    return f"{now.tzname()} (UTC{now.strftime('%z')[:3]}:{now.strftime('%z')[3:]})"


def short_sha(value: str | None) -> str:
    return value[:SHA_SHORT] if value else "none"


def extra_fields(result: WeldResult) -> list[tuple[str, str]]:
    """Fields beyond the core ones, rendered as text (nested values as compact JSON)."""
    data = json.loads(result.to_json())
    out = []
    for key, value in data.items():
        if key in CORE_FIELDS or value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out.append((key, text))
    return out


def verdict_quality(result: WeldResult) -> tuple[float | None, str | None]:
    """The result's ``margin`` (p_defect - threshold) and ``confidence`` ("high" | "low"),
    each None when the daemon does not send it (older daemons)."""
    data = json.loads(result.to_json())
    margin, confidence = data.get("margin"), data.get("confidence")
    margin = float(margin) if isinstance(margin, int | float) else None
    return margin, confidence if isinstance(confidence, str) else None


def _number(value: float | None, unit: str, digits: int) -> str:
    return "not reported" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def _spread(mean: float | None, std: float | None, unit: str) -> str:
    if mean is None:
        return "not reported"
    return f"{mean:.1f} ± {std:.1f} {unit}" if std is not None else f"{mean:.1f} {unit}"


def process_rows(result: WeldResult) -> list[tuple[str, str]]:
    """The weld's process record and arc dropouts as (quantity, value with unit) rows, at
    the precision the sensors carry (a welder's current to 0.1 A, not to 15 digits)."""
    rows = []
    p = result.process
    if p is not None:
        rows += [
            ("arc time", _number(p.arc_s, "s", 1)),
            ("current (mean ± sd, arc burning)", _spread(p.current_mean_a, p.current_std_a, "A")),
            ("voltage (mean ± sd, arc burning)", _spread(p.voltage_mean_v, p.voltage_std_v, "V")),
            ("arc energy", _number(p.energy_kj, "kJ", 2)),
            ("wire consumed", _number(p.wire_consumed_m, "m", 2)),
            ("process samples in the weld", str(p.samples)),
        ]
    d = p.dropouts if p is not None else result.dropouts
    if d is not None:
        what = "current dropouts" if p is not None else "arc dropouts (heard)"
        text = f"{d.count}" + (
            f" (longest {d.longest_s:.2f} s, {d.total_s:.2f} s in all)" if d.count else ""
        )
        rows.append((what, text))
    return rows


@dataclass(frozen=True)
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    p: float
    start_s: float
    over: bool


@dataclass(frozen=True)
class Chart:
    """The window-probability chart as plain numbers for an inline SVG."""

    bars: list[ChartBar]
    threshold_y: float
    width: int
    height: int
    pad: int
    window_s: float
    estimated: bool  # window length estimated from the duration, not from progress
    ticks: list[tuple[float, str]]


def window_length(result: WeldResult, window_s: float | None, n_windows: int) -> float:
    """One window's length in seconds: from the progress events when the console saw them,
    else estimated from the weld's length (windows are cut from the weld's start)."""
    return window_s if window_s else result.duration_s / max(n_windows, 1)


def window_chart(
    result: WeldResult, window_s: float | None, probs: list[float] | None = None
) -> Chart | None:
    """Bars of every window's p_defect along the weld, with the threshold line; `probs`
    default to the result's own (the clip's sidecar has them when the result has not)."""
    probs = probs or result.window_probs
    if not probs:
        return None
    estimated = window_s is None
    length = window_length(result, window_s, len(probs))
    inner_w = CHART_WIDTH - 2 * CHART_PAD
    inner_h = CHART_HEIGHT - 2 * CHART_PAD
    slot = inner_w / len(probs)
    bars = [
        ChartBar(
            x=CHART_PAD + i * slot + slot * 0.1,
            y=CHART_PAD + inner_h * (1 - p),
            width=max(slot * 0.8, 1.0),
            height=max(inner_h * p, 0.5),
            p=p,
            start_s=i * length,
            over=p >= result.threshold,
        )
        for i, p in enumerate(probs)
    ]
    step = max(1, len(probs) // 8)
    ticks = [
        (CHART_PAD + i * slot + slot / 2, f"{i * length:.0f}") for i in range(0, len(probs), step)
    ]
    return Chart(
        bars,
        CHART_PAD + inner_h * (1 - result.threshold),
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_PAD,
        length,
        estimated,
        ticks,
    )


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # broker strings (part ids, error messages) are untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = local
    env.filters["short_sha"] = short_sha
    env.filters["weld_url"] = weld_url  # weld ids are one encoded path segment
    env.globals["zone_name"] = zone_name
    env.globals["health_codes"] = HEALTH_CODES
    return env


class FragmentRenderer:
    """Renders the overview's parts for the live stream (same templates as the page)."""

    def __init__(self, env: jinja2.Environment, fleet: Fleet, context: dict[str, Any]) -> None:
        self.env = env
        self.fleet = fleet
        self.context = context  # the parts of the page context fragments need

    def header(self) -> list[Fragment]:
        ctx = {**self.context, "fleet": self.fleet}
        return [
            Fragment("header-status", self.env.get_template("_header.html").render(ctx)),
            Fragment("banners", self.env.get_template("_banners.html").render(ctx)),
        ]

    def group(self, prefix: str) -> list[Fragment]:
        group = self.fleet.groups[prefix]
        html = self.env.get_template("_group.html").render(
            {**self.context, "fleet": self.fleet, "g": group}
        )
        return [Fragment(group.key, html, parent="groups")]

    def station(self, station: StationCard) -> list[Fragment]:
        html = self.env.get_template("_station.html").render({**self.context, "s": station})
        return [Fragment(station.key, html)]

    def snapshot(self) -> list[Fragment]:
        out = self.header()
        for prefix in sorted(self.fleet.groups):
            out += self.group(prefix)
        return out

    def __call__(self, change: Change) -> list[Fragment]:
        out = []
        if change.what == "group" and change.prefix in self.fleet.groups:
            out += self.group(change.prefix)
        elif change.what == "station" and change.prefix in self.fleet.groups:
            station = self.fleet.groups[change.prefix].stations.get(change.station or "")
            if station is not None:
                out += self.station(station)
        # Banners follow alerts and statuses, so they come with every change.
        return out + self.header()
