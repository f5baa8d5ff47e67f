"""`weldmon segment FILE...`: the table (or JSON lines) of each file's welds and, with
``--plot``, its figure. Exit 0 when every file was segmented, 1 when some failed (each named
on stderr, the others go on), 2 for bad arguments or config (nothing done)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from deploy.audio import expand_inputs
from deploy.errors import AudioError, WeldmonError
from deploy.segment.modes import SegmentationMode
from monitor.segment.factory import SegmentationConfig
from monitor.segment.inspect import INSPECTABLE, NoSensorLogError, inspect_file, table_lines
from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail


def segmentation_config(config: str | None, mode: str | None) -> SegmentationConfig:
    """The config's ``segmentation:`` section (defaults without one), in ``mode`` when given;
    raises WeldmonError for a bad config or a mode this command cannot run."""
    cfg = SegmentationConfig()
    if config is not None:
        from monitor.config import load_config

        cfg = load_config(config, check_files=False).segmentation
    if mode is not None:
        try:  # validated again: the mode's own checks (an arc model that loads) must hold
            cfg = SegmentationConfig(**{**cfg.model_dump(), "mode": SegmentationMode(mode)})
        except ValidationError as exc:
            raise WeldmonError(f"segmentation: {exc}") from exc
    return inspectable(cfg)


def inspectable(cfg: SegmentationConfig) -> SegmentationConfig:
    """``cfg`` itself; raises WeldmonError when its mode cuts no recording by itself
    (trigger, file)."""
    if cfg.mode not in INSPECTABLE:
        names = ", ".join(m.value for m in INSPECTABLE)
        raise WeldmonError(
            f"segmentation mode {cfg.mode.value!r} cuts no recording by itself; "
            f"the figures and the table need one of: {names}"
        )
    return cfg


def draw_figures(cfg: SegmentationConfig, files: list[Path], target: Path) -> int:
    """One figure per file into the folder ``target`` (replay's ``--plot``), each named on
    stderr; returns how many files failed (each named on stderr)."""
    from monitor.segment.plot import draw, plot_path

    failed = 0
    for path in files:
        try:
            out = draw(inspect_file(path, cfg, traced=True), cfg, plot_path(target, path, True))
        except (AudioError, NoSensorLogError, OSError) as exc:
            failed += 1
            print(f"weldmon replay: no figure of {path}: {exc}", file=sys.stderr)
            continue
        print(f"weldmon replay: figure {out}", file=sys.stderr)
    return failed


def run_segment(args: argparse.Namespace) -> int:
    """The command (see the module docstring)."""
    try:
        cfg = segmentation_config(args.config, args.mode)
        files = expand_inputs(args.inputs)
        if not files:
            return fail(f"no audio files found in {args.inputs}", EXIT_USAGE)
        if args.plot is not None:
            from monitor.segment.plot import require_matplotlib

            require_matplotlib()
            if args.plot.suffix.lower() == ".png" and len(files) > 1:
                return fail(f"--plot {args.plot}: {len(files)} files need a folder", EXIT_USAGE)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_USAGE)
    failed = 0
    many = len(files) > 1
    for path in files:
        try:
            if args.plot is not None:
                from monitor.segment.plot import draw, plot_path

                result = inspect_file(path, cfg, traced=True)
                out = draw(result, cfg, plot_path(args.plot, path, many))
                print(f"weldmon segment: figure {out}", file=sys.stderr)
            else:
                result = inspect_file(path, cfg)
        except (AudioError, NoSensorLogError) as exc:
            failed += 1
            fail(str(exc), EXIT_FAILURE)
            continue
        except OSError as exc:  # the figure could not be written
            failed += 1
            fail(f"{path}: {exc}", EXIT_FAILURE)
            continue
        if args.json:
            for rec in result.records():
                print(json.dumps(rec))
        else:
            print("\n".join(table_lines(result)))
        sys.stdout.flush()
    return EXIT_FAILURE if failed else EXIT_OK
