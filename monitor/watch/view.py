"""Draw a :class:`~monitor.watch.state.WatchState` with rich: a header (the watcher's link,
the daemon's status), then one panel per station (current weld with a p_defect bar, last
verdicts, alerts highlighted), then the daemon's recent errors.

Pure apart from reading the state: ``render(state, now)`` returns a renderable, so the same
function serves the live screen and tests (``Console(record=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from monitor.live.state import CurrentWeld, StationLive, Verdict
from monitor.watch.state import WatchState

SHA_SHORT = 12  # hex digits of the model sha256 shown (enough to tell models apart by eye)
BAR_WIDTH = 30  # characters of the p_defect bar
TIME_FORMAT = "%H:%M:%S"  # operator's local time of day; the date is rarely in doubt
STATUS_STYLE = {"online": "bold green", "offline": "bold red", "stopped": "bold yellow"}
CONNECTION_STYLE = {"connected": "green", "connecting": "yellow", "disconnected": "bold red"}
ALERT_STYLE = "bold white on red"
REPLAY_STYLE = "bold white on blue"
DEFECT_STYLE = "bold red"
GOOD_STYLE = "green"


def _local_time(value: datetime) -> str:
    return value.astimezone().strftime(TIME_FORMAT)


def _header(state: WatchState, now: datetime) -> Text:
    conn = state.connection
    text = Text("weldmon watch  ", style="bold")
    text.append(f"broker {conn.broker}  ")
    style = CONNECTION_STYLE[conn.state]
    if conn.state == "connected":
        since = f" since {_local_time(conn.since)}" if conn.since else ""
        text.append(f"watcher: connected{since}", style=style)
    elif conn.state == "connecting":
        text.append("watcher: connecting...", style=style)
    else:
        retry = f", reconnecting in {conn.retry_in_s:.1f} s" if conn.retry_in_s is not None else ""
        text.append(f"watcher: DISCONNECTED (attempt {conn.attempts}{retry})", style=style)
        if conn.last_error:
            text.append(f"  {conn.last_error}", style="red")
    text.append("\n")
    status = state.status
    if status is None:
        text.append("daemon: no status received yet", style="yellow")
    else:
        text.append("daemon: ")
        text.append(status.state.upper(), style=STATUS_STYLE[status.state])
        sha = status.model_sha256[:SHA_SHORT] if status.model_sha256 else "none"
        text.append(
            f"  since {_local_time(status.at)}  v{status.version}  model {sha}"
            f"  client {status.client_id}"
        )
        if conn.state != "connected":
            text.append("  (last known: the watcher is not connected)", style="yellow")
    if state.malformed:
        text.append(f"\nignored {state.malformed} message(s) that were not weldmon events")
    return text


def _current(weld: CurrentWeld | None, state: WatchState, now: datetime) -> RenderableType:
    if weld is None:
        return Text("idle", style="dim")
    live = state.connection.state == "connected" and (
        state.status is not None and state.status.state == "online"
    )
    # Between progress messages the weld goes on: extrapolate with the watcher's clock while
    # both links are up, otherwise show the last figure the daemon sent.
    elapsed = weld.elapsed_s + (max((now - weld.received_at).total_seconds(), 0.0) if live else 0)
    p = weld.p_defect
    over = p is not None and p >= weld.threshold
    bar = ProgressBar(
        total=1.0,
        completed=p or 0.0,
        width=BAR_WIDTH,
        complete_style=DEFECT_STYLE if over else GOOD_STYLE,
        finished_style=DEFECT_STYLE,
    )
    p_text = "p --" if p is None else f"p {p:.3f}"
    line = Text(f"welding {elapsed:5.1f} s", style="bold")
    if weld.replay:
        line.append(" REPLAY ", style=REPLAY_STYLE)
    line.append(f"  weld {weld.weld_id}", style="dim")
    grid = Table.grid(padding=(0, 1))
    row: list[RenderableType] = [
        bar,
        Text(f"{p_text} / thr {weld.threshold:.3f}  {weld.n_windows} win", no_wrap=True),
    ]
    if weld.alerted:
        row.append(Text(" ALERT ", style=ALERT_STYLE))
    grid.add_row(*row)
    return Group(line, grid)


def _verdicts(verdicts: Sequence[Verdict]) -> RenderableType:
    if not verdicts:
        return Text("no verdicts yet", style="dim")
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("ended", "verdict", "p_defect", "length", "", "weld"):
        table.add_column(column)
    for v in verdicts:
        defect = v.label_name == "defect"
        flags = Text()
        if v.replay:  # from a recording: never mistaken for the line's own weld
            flags.append(" REPLAY ", style=REPLAY_STYLE)
        if v.alerted:
            flags.append(" ALERT ", style=ALERT_STYLE)
        if v.confidence == "low":  # inside the model's out-of-fold uncertain zone
            flags.append(" low confidence ", style="bold yellow")
        if v.degraded_reasons:
            flags.append(" degraded: " + ",".join(v.degraded_reasons), style="yellow")
        table.add_row(
            _local_time(v.ended_at),
            Text(v.label_name, style=DEFECT_STYLE if defect else GOOD_STYLE),
            f"{v.p_defect:.3f}",
            f"{v.duration_s:.1f} s",
            flags,
            Text(v.weld_id, style="dim"),
        )
    return table


def _station(view: StationLive, state: WatchState, now: datetime) -> Panel:
    title = (
        f"[bold]station {view.name}[/]  welds {view.welds}  defects {view.defects}"
        f"  alerts {view.alerts}"
    )
    border = "red" if view.current is not None and view.current.alerted else "blue"
    body = Group(_current(view.current, state, now), _verdicts(view.verdicts))
    return Panel(body, title=title, title_align="left", border_style=border)


def render(state: WatchState, now: datetime) -> RenderableType:
    """The whole screen for ``state`` at the watcher's time ``now`` (aware datetime)."""
    parts: list[RenderableType] = [_header(state, now)]
    if not state.stations:
        parts.append(Text("no station has reported a weld yet", style="dim"))
    for name in sorted(state.stations):
        parts.append(_station(state.stations[name], state, now))
    for error in state.errors:
        where = f" [{error.station}]" if error.station else ""
        parts.append(
            Text(
                f"{_local_time(error.emitted_at)} daemon error {error.code}{where}: "
                f"{error.message}",
                style="red",
            )
        )
    return Group(*parts)
