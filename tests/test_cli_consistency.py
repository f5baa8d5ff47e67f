"""One command line: every subcommand's --help ends with an example and the exit codes, the
output path is --output everywhere (--out an alias), messages are prefixed `weldmon <cmd>:`,
bad arguments exit 2, and logs read as console on a terminal, JSON elsewhere, without
breaking a progress bar."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from monitor.ops import logs
from weldmon.cli import EXAMPLES, EXIT_CODES_HELP, REGISTRY, main

REPO = Path(__file__).resolve().parents[1]
WRITERS = ("scan", "cv", "export", "evaluate", "convert", "enroll")  # commands that write an output


def _parser(name: str) -> argparse.ArgumentParser:
    """The parser `weldmon NAME` builds (as `weldmon.cli.main` does)."""
    module = importlib.import_module(REGISTRY[name][0])
    parser = argparse.ArgumentParser(prog=f"weldmon {name}")
    module.COMMANDS[name].configure(parser)
    return parser


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_subcommands_help_shows_an_example_and_the_exit_codes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert f"example:\n  weldmon {name}" in text, text
    assert EXAMPLES[name].startswith(f"weldmon {name}")
    assert EXIT_CODES_HELP in text


@pytest.mark.parametrize("name", list(REGISTRY))
def test_an_output_path_is_spelled_output_with_out_as_its_alias(name: str) -> None:
    parser = _parser(name)
    for action in parser._actions:
        names = set(action.option_strings)
        if names & {"--out", "--output"}:
            assert {"--out", "--output"} <= names, (name, action.option_strings)
    if name in WRITERS:
        assert any("--output" in a.option_strings for a in parser._actions), name


def test_out_and_output_mean_the_same_thing() -> None:
    parser = _parser("scan")
    common = ["--model", "m.onnx", "a.flac"]
    assert parser.parse_args(["--out", "x", *common]).output == Path("x")
    assert parser.parse_args(["--output", "x", *common]).output == Path("x")
    evaluate = _parser("evaluate")
    for flag in ("--report", "--output", "--out"):
        got = evaluate.parse_args(["--model", "m", "--data-root", "d", flag, "r"])
        assert got.output == Path("r")


def _weldmon(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["train", "--config", "missing.yaml"], 2),
        (["cv", "--config", "missing.yaml"], 2),
        (["export", "--checkpoint", "c.pt", "--output", "o.pt", "--model-version", "a b"], 2),
        (["scan", "--model", "missing.onnx", "--output", "out", "a.flac"], 2),
        (["predict", "--model", "missing.onnx", "a.flac"], 2),
        (["replay", "--model", "missing.onnx", "a.flac"], 2),
        (["config", "check", "missing.yaml"], 2),
        (["model", "info", "missing.pt"], 2),
        (["run", "--config", "missing.yaml"], 2),
        (["export", "--checkpoint", "missing.pt", "--output", "o.pt"], 2),
        (["enroll", "--data-root", ".", "--output", "c.pt", "--false-alarm-rate", "2"], 2),
        (["clips", "list", "--config", "missing.yaml"], 2),
    ],
)
def test_messages_name_their_command_and_bad_input_exits_2(
    args: list[str], code: int, tmp_path: Path
) -> None:
    done = _weldmon(*args, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    # `weldmon <cmd>:`, or `weldmon <cmd> <sub>:` for commands with sub-commands
    assert lines and re.match(rf"weldmon {args[0]}( [a-z]+)?: ", lines[0]), done.stderr


def test_unknown_options_and_commands_exit_2() -> None:
    assert _weldmon("scan", "--no-such-flag").returncode == 2
    assert _weldmon("no-such-command").returncode == 2


# ---- logs and progress bars -----------------------------------------------------------------


def _format_with_stderr(stderr: int | None, env: dict[str, str]) -> str:
    code = "from monitor.ops.logs import resolve_format; print(resolve_format('auto'))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_logs_are_console_on_a_terminal_and_json_under_systemd_or_a_pipe() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    leader, follower = pty.openpty()  # a real terminal for the child's stderr
    try:
        assert _format_with_stderr(follower, env) == "console"
        assert _format_with_stderr(follower, {**env, "JOURNAL_STREAM": "8:1234"}) == "json"
    finally:
        os.close(leader)
        os.close(follower)
    assert _format_with_stderr(subprocess.PIPE, env) == "json"


def test_a_log_line_goes_above_the_progress_bar_not_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    line = json.dumps({"event": "weld_result", "station": "cell1"})
    with tqdm(total=10, desc="replay", file=screen, mininterval=0) as bar:
        bar.update(3)
        logs._STDERR.write(line + "\n")
        bar.update(1)
    # tqdm clears the bar (carriage returns), writes the line, then redraws the bar: the log
    # line is whole on its own line, and no bar is drawn into it.
    rows = [row.split("\r")[-1] for row in screen.getvalue().split("\n")]
    assert line in rows  # what the terminal shows on that row: the line alone
    assert any(row.startswith("replay:") for row in rows)  # the bar is labelled


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_help_example_is_a_command_line_its_parser_accepts(name: str) -> None:
    words = shlex.split(EXAMPLES[name])
    assert words[:2] == ["weldmon", name]
    parser = _parser(name)
    parser.exit_on_error = False
    try:
        parser.parse_args(words[2:])
    except (argparse.ArgumentError, SystemExit) as exc:
        pytest.fail(f"the example of `weldmon {name}` does not parse: {EXAMPLES[name]} ({exc})")
