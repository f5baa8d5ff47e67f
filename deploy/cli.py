"""`weldmon predict`, `weldmon scan` and `weldmon convert` (torch is imported only for a
TorchScript artifact and for `convert`; the base install runs predict and scan on an ONNX
artifact without it)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.loader import BACKENDS
from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Command, add_output_argument

if TYPE_CHECKING:  # torch-backed at run time: imported where a model is loaded
    from deploy.model import DeployModel


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="deploy artifact (.pt or .onnx)")
    parser.add_argument(
        "--sha256", default=None, help="refuse the model unless its sha256 equals this"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): ONNX Runtime for a .onnx and for a .pt with its ONNX twin "
        "beside it, TorchScript otherwise; onnx / torchscript: that one or an error",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="intra-op threads for inference (default: the backend's own choice)",
    )


def _load(args: argparse.Namespace) -> DeployModel:
    """Load, pin-check and self-test the artifact, as run and replay do: a model that does
    not give finite probabilities is refused before any file is judged."""
    from deploy.errors import ArtifactError
    from deploy.loader import load_artifact

    if args.threads is not None and args.threads < 1:
        raise ArtifactError("--threads must be >= 1")
    model = load_artifact(args.model, args.sha256, backend=args.backend, threads=args.threads)
    model.self_test()
    return model


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite time >= 0 s, got {text!r}")
    return value


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    parser.add_argument("file", type=Path, help="recording (FLAC/WAV/...; any rate, any channels)")
    parser.add_argument(
        "--window-start",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="mode B: judge only the window starting here (default: mode A, whole recording)",
    )


def _run_predict(args: argparse.Namespace) -> int:
    from deploy.errors import ArtifactError, AudioError
    from deploy.predict import predict_file

    try:
        model = _load(args)
    except ArtifactError as exc:
        print(f"weldmon predict: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        record = predict_file(model, args.file, args.window_start)
    except AudioError as exc:
        print(f"weldmon predict: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ArtifactError as exc:  # the model misbehaved on this recording
        print(f"weldmon predict: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(record, allow_nan=False))
    return EXIT_OK


def _parse_offsets(text: str) -> list[float]:
    try:
        offsets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"offsets must be numbers in seconds: {text!r}") from exc
    if not offsets or any(o < 0 or not math.isfinite(o) for o in offsets):
        raise argparse.ArgumentTypeError(f"offsets must be finite times >= 0 s: {text!r}")
    return offsets


def _configure_scan(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    add_output_argument(parser, required=True, type=Path, help="folder for the CSV and JSON")
    parser.add_argument(
        "--offsets",
        type=_parse_offsets,
        default=None,
        metavar="S,S,...",
        help="window starts in seconds (default: every whole window from the start)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="audio files, or folders (searched for audio files, recursively)",
    )


def _run_scan(args: argparse.Namespace) -> int:
    from deploy.audio import expand_inputs
    from deploy.errors import ArtifactError, ReportError
    from deploy.scan import check_out_dir, scan, write_report

    try:
        check_out_dir(args.output)  # before the scan: a long scan must not be lost at the end
        model = _load(args)
    except (ArtifactError, ReportError) as exc:
        print(f"weldmon scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        files = expand_inputs(args.files)
        report = scan(model, files, args.offsets, progress=not args.no_progress)
    except ArtifactError as exc:
        print(f"weldmon scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    csv_path, json_path = write_report(report, model, args.output)
    print(
        f"weldmon scan: scanned {report.files_ok + report.files_failed} files "
        f"({report.files_failed} failed), {report.windows} windows -> {csv_path}, {json_path}",
        file=sys.stderr,
    )
    for row in report.rows:
        if row["status"] == "error":
            print(f"weldmon scan: {row['error']}", file=sys.stderr)
    return EXIT_FAILURE if report.files_failed else EXIT_OK


def _configure_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="deploy artifact (.pt)")
    add_output_argument(
        parser,
        type=Path,
        default=None,
        help="the .onnx to write (default: its twin, the model's path with .onnx)",
    )


def _unwritable(output: Path) -> str | None:
    """Why a file cannot be created at ``output`` (None: it can): tried with a scratch file
    beside it, as the export's own temporary file will be."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}."):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _run_convert(args: argparse.Namespace) -> int:
    from deploy.errors import ArtifactError

    output = args.output or args.model.with_suffix(".onnx")
    if output.suffix != ".onnx":
        print(f"weldmon convert: --output must end in .onnx, got {output}", file=sys.stderr)
        return EXIT_USAGE
    if output.resolve() == args.model.resolve():
        print("weldmon convert: --output would overwrite --model", file=sys.stderr)
        return EXIT_USAGE
    problem = _unwritable(output)
    if problem is not None:  # before the conversion: its work must not be lost at the end
        print(f"weldmon convert: --output: cannot write {output} ({problem})", file=sys.stderr)
        return EXIT_USAGE
    try:
        from deploy.convert import convert_artifact
        from deploy.onnx_export import ExportDependencyError
    except ModuleNotFoundError as exc:
        print(
            f"weldmon convert: needs {exc.name}, which is not installed; install "
            "weldmon[export] (or weldmon[train])",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        result = convert_artifact(args.model, output)
    except ExportDependencyError as exc:
        print(f"weldmon convert: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ArtifactError as exc:
        print(f"weldmon convert: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the folder was checked; the disk can still fill up
        print(f"weldmon convert: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Converted deploy model: {result.onnx.path}")
    print(f"sha256={result.onnx.sha256}")
    print(
        f"source sha256={result.source_sha256} | window probabilities within "
        f"{result.max_abs_diff:.1e} of the .pt on probe windows"
    )
    return EXIT_OK


def _configure_model(parser: argparse.ArgumentParser) -> None:
    add_model_info(parser.add_subparsers(dest="action", metavar="ACTION", required=True))


def add_model_info(actions: Any) -> None:
    """`weldmon model info MODEL` into `actions` (an argparse subparsers object; the monitor's
    `weldmon model` adds promote and rollback beside it)."""
    info = actions.add_parser(
        "info",
        help="print what an artifact says about itself, as JSON (nothing is run)",
        description="Name, version, sha256, threshold, front end, training provenance and any "
        "embedded evaluation figures of a .pt or .onnx deploy artifact (the original "
        "pipeline's too), read without running it and without torch. An ensemble's "
        "out-of-fold calibration (threshold, false-alarm rate and recall with intervals, "
        "ROC-AUC, uncertain band) is also printed to stderr, with a warning when its "
        "intervals are wide.",
    )
    info.add_argument("model", type=Path, metavar="MODEL", help="deploy artifact (.pt or .onnx)")


def run_model_info(args: argparse.Namespace) -> int:
    """Print `args.model`'s metadata as JSON (`weldmon model info`)."""
    return _run_model(args)


def _run_model(args: argparse.Namespace) -> int:
    from deploy.artifact_info import artifact_info
    from deploy.errors import ArtifactError

    try:
        info = artifact_info(args.model)
    except ArtifactError as exc:
        print(f"weldmon model {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(info, indent=2))
    if info.get("calibration"):
        # The JSON is for tools; these lines are for the person reading the terminal.
        from deploy.calibration import format_calibration

        for line in format_calibration(info["calibration"]):
            print(f"weldmon model {args.action}: calibration: {line}", file=sys.stderr)
    for warning in info.get("warnings", []):
        print(f"weldmon model {args.action}: warning: {warning}", file=sys.stderr)
    return EXIT_OK


COMMANDS = {
    "predict": Command(_configure_predict, _run_predict),
    "scan": Command(_configure_scan, _run_scan),
    "convert": Command(
        _configure_convert,
        _run_convert,
        "Write the ONNX twin of a .pt deploy artifact (this project's or the original's).",
    ),
}
