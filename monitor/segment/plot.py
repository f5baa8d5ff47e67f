"""The figure of `weldmon segment --plot` and `weldmon replay --plot`: one recording's level,
the segmenter's own track, the welds it cut and, where a sensor log is beside it, the arc
current.

matplotlib comes with the ``console`` and ``train`` extras, not with the base install, so it
is imported when a figure is drawn; `require_matplotlib` names the extra when it is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from deploy.errors import WeldmonError
from deploy.segment.modes import SegmentationMode
from monitor.segment.factory import SegmentationConfig
from monitor.segment.inspect import LEVEL_FRAME_S, FileSegments

FIGURE_SIZE_IN = (11.0, 5.0)
DPI = 90


class PlotUnavailableError(WeldmonError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise PlotUnavailableError naming the extra to install when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'weldmon[console]' (or 'weldmon[train]')"
        )


def plot_path(target: Path, source: Path, many: bool) -> Path:
    """Where the figure of ``source`` goes: ``target`` itself when it names a .png and one
    file is drawn, else ``target/<source stem>.png``."""
    if target.suffix.lower() == ".png" and not many:
        return target
    return target / f"{source.stem}.png"


def draw(result: FileSegments, cfg: SegmentationConfig, out: Path) -> Path:
    """Write ``result``'s figure to ``out`` (PNG); returns ``out``."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, never a display
    from matplotlib import pyplot as plt

    fig, (top, mid) = plt.subplots(2, 1, sharex=True, figsize=FIGURE_SIZE_IN, dpi=DPI)
    try:
        t = (np.arange(result.level_db.size) + 0.5) * LEVEL_FRAME_S
        top.plot(t, result.level_db, color="0.3", linewidth=0.6, label="level (dBFS, 50 ms)")
        top.set_ylabel("level dBFS")
        _track(mid, result, cfg)
        for ax in (top, mid):
            for k, (a, b) in enumerate(result.welds):
                ax.axvspan(
                    a, b, color="tab:green", alpha=0.18, label="weld cut" if k == 0 else None
                )
        if result.current is not None:
            twin = top.twinx()
            twin.plot(*result.current, color="tab:red", linewidth=0.8, label="arc current (A)")
            twin.set_ylabel("current A", color="tab:red")
            for a, b in result.arcs or []:
                top.axvline(a, color="tab:red", linestyle=":", linewidth=0.8)
                top.axvline(b, color="tab:red", linestyle=":", linewidth=0.8)
            twin.legend(loc="upper right", fontsize=8)
        top.legend(loc="upper left", fontsize=8)
        mid.legend(loc="upper left", fontsize=8)
        mid.set_xlabel("time in file (s)")
        mid.set_xlim(0.0, result.duration_s)
        top.set_title(f"{result.path.name}: {result.mode.value}, {len(result.welds)} weld(s)")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out


def _track(ax, result: FileSegments, cfg: SegmentationConfig) -> None:  # ax: matplotlib Axes
    """The segmenter's own track and the lines it decides by."""
    if not result.trace:
        ax.text(
            0.5,
            0.5,
            f"{result.mode.value} mode: cut by the arc current",
            ha="center",
            transform=ax.transAxes,
        )
        return
    times, values, refs = (np.array(c) for c in zip(*result.trace, strict=True))
    if result.mode is SegmentationMode.CRACKLE:
        ax.plot(times, values, color="tab:blue", linewidth=0.7, label="crackle: log10 kurtosis")
        ax.axhline(
            refs[0],
            color="tab:orange",
            linestyle="--",
            linewidth=0.9,
            label=f"crackle_on ({cfg.crackle.crackle_on:g})",
        )
        ax.set_ylabel("log10 kurtosis")
        return
    if result.mode is SegmentationMode.ARC:
        ax.plot(times, values, color="tab:blue", linewidth=0.7, label="arc probability")
        ax.axhline(
            cfg.arc.on_p,
            color="tab:orange",
            linestyle="--",
            linewidth=0.9,
            label=f"on_p ({cfg.arc.on_p:g})",
        )
        ax.axhline(
            cfg.arc.off_p,
            color="tab:purple",
            linestyle=":",
            linewidth=0.8,
            label=f"off_p ({cfg.arc.off_p:g})",
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("P(arc)")
        return
    gate = cfg.gate
    ax.plot(times, values, color="tab:blue", linewidth=0.7, label="gate: smoothed level (dB)")
    ax.plot(times, refs, color="0.4", linewidth=0.8, label="noise floor")
    ax.plot(
        times,
        refs + gate.on_db,
        color="tab:orange",
        linestyle="--",
        linewidth=0.8,
        label=f"on (+{gate.on_db:g} dB)",
    )
    ax.plot(
        times,
        refs + gate.off_db,
        color="tab:purple",
        linestyle=":",
        linewidth=0.8,
        label=f"off (+{gate.off_db:g} dB)",
    )
    ax.set_ylabel("band level dB")
