"""The training package's `weldmon` subcommands: train, cv, export, evaluate, sweep.

Heavy modules (torch, matplotlib) are imported inside each `run`, so `weldmon --help` stays
fast. Exit codes: 0 ok, 1 something failed (e.g. some files could not be judged), 2 bad
arguments or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from training.welds import SEGMENTATION_SOURCES  # no torch: --help stays fast
from weldmon.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    add_output_argument,
    fail,
    message_prefix,
)

DEFAULT_RUNS_FOLDER = Path("runs")  # where runs go without --run-dir / --out


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _usable_output(path: Path, what: str) -> str | None:
    """Why `path` (a file to write) cannot be written, checked before any work; None: fine."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{what}: cannot create {path.parent} ({exc.strerror or exc})"
    if path.is_dir():
        return f"{what}: {path} is a folder"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{what}: {path.parent} is not writable"
    return None


def _load(args: argparse.Namespace):  # -> TrainConfig
    from training.config import ignored_sections, load_config

    overrides = {"data_root": str(args.data_root)} if args.data_root else {}
    cfg = load_config(args.config, overrides)
    for section in ignored_sections(args.config):
        print(
            f"{message_prefix()} note: section {section!r} of {args.config} is for another "
            "modality; ignored",
            file=sys.stderr,
        )
    return cfg


# ---- train -------------------------------------------------------------------------------


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, required=True, help="training config (YAML, or the original JSON)"
    )
    p.add_argument(
        "--data-root", type=Path, help="dataset root (overrides data_root in the config)"
    )
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/train-<stamp>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from last_model.pt"
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (one line per epoch stays)"
    )


def _run_train(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from training import distributed
    from training.config import ConfigError
    from training.ensemble import fit

    if args.resume and args.run_dir is None:
        return fail("--resume needs --run-dir", EXIT_USAGE)
    try:
        cfg = _load(args)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    run_dir = args.run_dir or DEFAULT_RUNS_FOLDER / f"train-{_stamp()}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and cfg.ensemble > 1:  # before joining
        return fail(
            f"ensemble: {cfg.ensemble} is not trained under torchrun; set ensemble: 1 "
            "(one data-parallel model) or run without torchrun",
            EXIT_USAGE,
        )
    ranks = distributed.from_environment()  # torchrun: one process per rank, data-parallel
    if ranks.parallel and args.run_dir is None:
        return fail("under torchrun, give every rank the same --run-dir", EXIT_USAGE)
    data_root = getattr(cfg, "data_root", None)
    if data_root is not None and not Path(data_root).is_dir():
        return fail(f"data_root: {data_root} is not a directory", EXIT_USAGE)
    try:
        result = fit(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    finally:
        distributed.shutdown(ranks)
    if ranks.is_main:
        print(f"run folder: {result.run_dir}")
    return EXIT_OK


# ---- cv ----------------------------------------------------------------------------------


def _configure_cv(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="training config for every fold")
    p.add_argument(
        "--data-root", type=Path, help="dataset root (overrides data_root in the config)"
    )
    add_output_argument(p, type=Path, help="output folder (default: runs/cv-<stamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _run_cv(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from training.config import ConfigError
    from training.cv import cross_validate, format_result

    try:
        cfg = _load(args)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    out = args.output or DEFAULT_RUNS_FOLDER / f"cv-{_stamp()}"
    try:
        result = cross_validate(cfg, out, progress=not args.no_progress)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    print(
        "leave-one-config-folder-out, pooled out-of-fold welds; each fold's threshold from its "
        "training folders only (small sample: read the intervals)"
    )
    print("\n".join(format_result(result)))
    print(f"results: {out}")
    return EXIT_OK if result.rows else EXIT_FAILURE


# ---- export ------------------------------------------------------------------------------


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="e.g. RUN/best_model.pt")
    add_output_argument(
        p,
        type=Path,
        required=True,
        help="e.g. RUN/deploy_single_label.pt (its ONNX twin goes beside it, .onnx)",
    )
    p.add_argument(
        "--name", help="model name events show beside its sha256 (default: config model_name)"
    )
    p.add_argument(
        "--model-version", help="model version, e.g. 2026.03.1 (default: config model_version)"
    )


def _run_export(args: argparse.Namespace) -> int:
    from deploy.contract import check_model_identity
    from deploy.errors import WeldmonError
    from training.checkpoint import CheckpointError
    from training.export import export_checkpoint

    try:
        check_model_identity(args.name, args.model_version)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    problem = _usable_output(args.output, "--output")
    if problem is not None:
        return fail(problem, EXIT_USAGE)
    try:
        result = export_checkpoint(
            args.checkpoint, args.output, name=args.name, version=args.model_version
        )
    except CheckpointError as exc:  # a missing or foreign file: bad input, nothing written
        return fail(str(exc), EXIT_USAGE)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    print(f"Exported deploy model: {result.path}")
    print(result.summary_line())
    print(f"sha256={result.sha256}")
    print(f"ONNX twin: {result.onnx_path}")
    print(f"onnx sha256={result.onnx_sha256}")
    return EXIT_OK


# ---- evaluate ----------------------------------------------------------------------------


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="any deploy artifact")
    p.add_argument("--data-root", type=Path, required=True, help="labelled dataset root")
    p.add_argument("--split", type=Path, help="split.json: evaluate only its validation folders")
    add_output_argument(  # --report: its name before --output was the one spelling
        p, "--report", type=Path, required=True, help="report folder (HTML, CSV, JSON, plots)"
    )
    p.add_argument(
        "--workers", type=int, help="files judged at once (default: one per core, up to 4)"
    )
    p.add_argument(
        "--mode",
        choices=("both", "file", "weld"),
        default="both",
        help="file: whole recordings (the artifact's forward); weld: each weld the segmenter "
        "cuts (what the daemon and replay judge); both (default)",
    )
    p.add_argument(
        "--segmentation",
        choices=SEGMENTATION_SOURCES,
        default="auto",
        help="weld mode's boundaries: auto = the sensor CSV's arc current when present, else "
        "the daemon's default segmenter (default); current; crackle; gate; file (one weld per "
        "file)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "onnx", "torchscript"),
        default="auto",
        help="auto (default): ONNX Runtime for a .onnx and for a .pt with its ONNX twin "
        "beside it, TorchScript otherwise (the same choice as `weldmon predict`)",
    )
    p.add_argument(
        "--no-plots",
        action="store_true",
        help="leave the PNG plots out of the report (the CSV, JSON, metrics and HTML are "
        "still written): saves most of a small evaluation's fixed cost",
    )
    p.add_argument(
        "--compare",
        type=Path,
        metavar="MODEL_B",
        help="a second artifact judged on the same files: paired comparison against --model "
        "(McNemar's exact test, bootstrap of the ROC-AUC difference), written to "
        "paired.json in the report folder",
    )


def _run_evaluate(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from deploy.loader import load_artifact
    from training.evaluate import DEFAULT_WORKERS, evaluate, format_metrics
    from training.report import WELD_PREFIX, checks, write_report
    from training.split import read_split

    workers = DEFAULT_WORKERS if args.workers is None else args.workers
    if workers < 1:
        return fail("--workers must be >= 1", EXIT_USAGE)
    # Bad arguments, data root or model: exit 2 before any file is judged.
    if not args.data_root.is_dir():
        return fail(f"--data-root: {args.data_root} is not a directory", EXIT_USAGE)
    try:
        if args.split is not None:
            read_split(args.split)
        for path in (args.model, *([args.compare] if args.compare is not None else [])):
            model = load_artifact(path, backend=args.backend)
            model.self_test()
    except WeldmonError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        result = evaluate(
            args.model,
            args.data_root,
            split_file=args.split,
            workers=workers,
            backend=args.backend,
            progress=True,
            mode=args.mode,
            segmentation=args.segmentation,
        )
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    print("\n".join(format_metrics(result.metrics)))
    print("\n".join(format_metrics(result.weld_metrics, WELD_PREFIX)))
    html = write_report(result, args.output, plots=not args.no_plots)
    checks_found = checks(result)
    for warning in checks_found["warnings"]:
        print(f"weldmon evaluate: warning: {warning}", file=sys.stderr)
    for bad in {f.path: f for f in result.errors + result.welds if f.error}.values():
        # Some reasons come from the dataset index without the file ("missing audio file").
        where = "" if bad.path and bad.path in bad.error else f"{bad.path}: "
        print(f"weldmon evaluate: {where}{bad.error}", file=sys.stderr)
    print(f"report: {html}")
    # Last, where a reader's eye lands: the report's opening paragraph, in plain words.
    print(f"\n{checks_found['summary_text']}")
    failed = result.errors or any(w.error for w in result.welds)
    if args.compare is not None:
        try:
            compared = _paired(args, workers, result)
        except (WeldmonError, ValueError) as exc:
            return fail(f"--compare: {exc}", EXIT_FAILURE)
        failed = failed or compared
    return EXIT_FAILURE if failed else EXIT_OK


def _paired(args: argparse.Namespace, workers: int, result: Any) -> bool:
    """Judge the same files with --compare, print and write the paired comparison of each
    mode; True when some file failed for the second artifact."""
    import json

    from training.evaluate import evaluate
    from training.paired import paired_comparison
    from training.report import WELD_PREFIX

    other = evaluate(
        args.compare,
        args.data_root,
        split_file=args.split,
        workers=workers,
        backend=args.backend,
        progress=True,
        mode=args.mode,
        segmentation=args.segmentation,
    )
    out: dict[str, Any] = {"model": str(args.model), "compare": str(args.compare)}
    for mode, prefix, rows_a, rows_b in (
        ("file", "", result.files, other.files),
        ("weld", WELD_PREFIX, result.welds, other.welds),
    ):
        if args.mode in (mode, "both"):
            comparison = paired_comparison(rows_a, rows_b)
            print("\n".join(comparison.lines(prefix)))
            out[mode] = comparison.as_dict()
    path = args.output / "paired.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"paired comparison: {path}")
    return bool(other.errors) or any(w.error for w in other.welds)


# ---- sweep -------------------------------------------------------------------------------


def _configure_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, required=True, help="sweep file (see configs/sweep.example.yaml)"
    )
    p.add_argument(
        "--data-root", type=Path, help="dataset root (overrides the sweep's and base config's)"
    )
    p.add_argument(
        "--promote", metavar="NAME", help="freeze run NAME (runs the sweep first if needed)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _run_sweep(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from training.config import ConfigError
    from training.sweep import load_sweep, promote, run_sweep

    try:
        sweep = load_sweep(args.config)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    board = Path(sweep.output_dir) / "leaderboard.md"
    try:
        if args.promote is None or not board.is_file():
            run_sweep(
                sweep,
                data_root=str(args.data_root) if args.data_root else None,
                progress=not args.no_progress,
            )
            print(board.read_text(), end="")
        if args.promote is not None:
            print(f"promoted: {promote(sweep, args.promote)}")
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    return EXIT_OK


# ---- enroll ------------------------------------------------------------------------------


def _configure_enroll(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root", type=Path, required=True, help="dataset root: its good welds are enrolled"
    )
    add_output_argument(p, type=Path, help="the enrolled deploy artifact to write (e.g. cell.pt)")
    p.add_argument(
        "--false-alarm-rate",
        type=float,
        default=0.01,
        help="share of good welds the threshold may call defect (default 0.01)",
    )
    p.add_argument(
        "--base",
        type=Path,
        help="a supervised deploy artifact to teach this cell's threshold to (from 1 good weld; "
        "its cell reference from 3) (default: none, a good-only artifact)",
    )
    p.add_argument(
        "--segmentation",
        choices=SEGMENTATION_SOURCES,
        default="auto",
        help="weld boundaries: auto = sensor CSV's arc current when present, else the "
        "daemon's default segmenter",
    )
    p.add_argument("--cache", type=Path, help="feature cache folder")
    p.add_argument(
        "--scorer",
        choices=("mahalanobis", "knn"),
        help="good-only scorer: Mahalanobis distance to the good windows (default), or the "
        "k-th nearest good window's distance (with --cv: only this one, not both compared)",
    )
    p.add_argument(
        "--embedding",
        choices=("mean", "mean_spread", "mean_spread_delta"),
        help="window embedding: each mel band's mean (default), with its spread, and with its "
        "frame-to-frame change",
    )
    p.add_argument("--name", help="model name events show beside its sha256 (default: base's)")
    p.add_argument("--model-version", help="model version, e.g. 2026.03.1 (default: base's)")
    p.add_argument(
        "--cv",
        type=Path,
        metavar="DIR",
        help="instead of enrolling: the leave-one-good-folder-out figure of each scorer "
        "(ROC-AUC, false alarms, recall, with intervals) into DIR",
    )
    p.add_argument(
        "--teach",
        type=int,
        nargs="+",
        metavar="K",
        help="with --cv: the teach-in acceptance protocol instead, K welds of each good folder "
        "taught (e.g. --teach 1 2); trains a small model per good x defect folder (minutes)",
    )
    p.add_argument(
        "--teach-epochs",
        type=int,
        default=20,
        help="with --teach: epochs of each supervised model (default 20, the cv recipe's)",
    )
    p.add_argument(
        "--teach-groups",
        type=int,
        nargs=2,
        default=(3, 2),
        metavar=("GOOD", "DEFECT"),
        help="with --teach: good and defect folders dealt into this many groups, one model "
        "trained without each pair of groups (default 3 2: 6 models; the folder counts: one "
        "model per good x defect folder, the cleanest and slowest)",
    )


def _run_enroll(args: argparse.Namespace) -> int:
    from deploy.contract import check_model_identity
    from deploy.errors import ArtifactError, WeldmonError
    from training.cv import format_result
    from training.dataset import DatasetError
    from training.enroll import DEFAULT_SCORER, SCORERS, enroll
    from training.enroll_cv import compare_scorers
    from training.enroll_teach import format_table, teach_protocol

    if not 0.0 < args.false_alarm_rate < 0.5:
        return fail("--false-alarm-rate must be in (0, 0.5)", EXIT_USAGE)
    try:
        check_model_identity(args.name, args.model_version)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    if (args.output is None) == (args.cv is None):
        return fail("give --output (enroll) or --cv DIR (the protocol's figure)", EXIT_USAGE)
    if args.teach is not None and (args.cv is None or min(args.teach) < 1):
        return fail("--teach K needs --cv DIR and weld counts K of 1 or more", EXIT_USAGE)
    if args.teach_epochs < 1 or min(args.teach_groups) < 1:
        return fail("--teach-epochs and --teach-groups must be 1 or more", EXIT_USAGE)
    if args.cv is not None and args.embedding is not None:
        return fail("--cv judges each scorer on its own embedding; drop --embedding", EXIT_USAGE)
    try:
        if args.teach is not None:
            table = teach_protocol(
                args.data_root,
                args.cv,
                teach=args.teach,
                false_alarm_rate=args.false_alarm_rate,
                segmentation=args.segmentation,
                cache_dir=args.cache,
                scorers=[args.scorer] if args.scorer else SCORERS,
                epochs=args.teach_epochs,
                groups=tuple(args.teach_groups),
            )
            print(
                "teach-in acceptance, per good config folder: K welds taught, its other welds "
                "and every defect weld scored, never trained on (rates over scorings, "
                "intervals over distinct welds)"
            )
            print("\n".join(format_table(table)))
            return EXIT_OK
        if args.cv is not None:
            results, lines = compare_scorers(
                args.data_root,
                args.cv,
                scorers=[args.scorer] if args.scorer else SCORERS,
                false_alarm_rate=args.false_alarm_rate,
                segmentation=args.segmentation,
                cache_dir=args.cache,
            )
            print(
                "enrollment, leave-one-good-folder-out: each good folder held out in turn, the "
                "others enrolled, every defect weld scored (small sample: read the intervals)"
            )
            for name, result in results.items():
                print(f"\n## {name}")
                print("\n".join(format_result(result)))
            print("\n" + "\n".join(lines))
            return EXIT_OK
        exported = enroll(
            args.data_root,
            args.output,
            false_alarm_rate=args.false_alarm_rate,
            base=args.base,
            segmentation=args.segmentation,
            cache_dir=args.cache,
            embedding=args.embedding,
            scorer=args.scorer or DEFAULT_SCORER,
            name=args.name,
            version=args.model_version,
        )
    except (ArtifactError, DatasetError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    print(f"Enrolled deploy model: {exported.path}")
    print(exported.summary_line())
    print(f"sha256={exported.sha256}")
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "train": Command(_configure_train, _run_train, "Train the MIL CNN from a labelled dataset."),
    "cv": Command(
        _configure_cv, _run_cv, "Leave-one-config-folder-out cross-validation (small data)."
    ),
    "export": Command(
        _configure_export, _run_export, "Export a training checkpoint as the deploy artifact."
    ),
    "evaluate": Command(
        _configure_evaluate, _run_evaluate, "Evaluate any deploy artifact on a labelled dataset."
    ),
    "sweep": Command(
        _configure_sweep, _run_sweep, "Train, export, evaluate and rank several configs."
    ),
    "enroll": Command(
        _configure_enroll,
        _run_enroll,
        "Build a deploy artifact from a cell's good welds alone (anomaly mode), or add the "
        "cell's reference to a supervised artifact.",
    ),
}
