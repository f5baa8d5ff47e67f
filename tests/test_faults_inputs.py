"""The field report's command-line probes (issue 22, items 14, 15 and 17): files that cannot
be read, are not what they claim, or are huge; a reader that goes away. Each command runs
as a subprocess and must end with one plain message and exit 2 (or stop quietly for a
closed pipe), never a traceback, and must refuse a huge file from its size, not after
reading it: the peak memory of each subprocess is measured (wait4's ru_maxrss).

Huge files are sparse (truncate), so they cost neither disk nor memory here. The tests run
as root, which reads mode-000 files; "Permission denied" is made real by running the
command without the capabilities that let root ignore file modes (setpriv).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import REPO_ROOT
from tests.support.syscall_refusals import require_tool

TIMEOUT_S = 300.0
GIB = 1024**3
# Peak memory a refusal may cost: the interpreter and its imports (torch for a .pt model,
# ~0.5 GB), far from the gigabytes that reading a 1 GB file whole costs (2.3-3 GB).
REFUSAL_PEAK_KIB = 900 * 1024
WELDMON = [sys.executable, "-m", "weldmon.cli"]
# Root without the capabilities that let it read and search whatever the file modes say.
WITHOUT_FILE_OVERRIDES = ["--bounding-set", "-dac_override,-dac_read_search"]


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str
    peak_kib: int  # the subprocess's peak resident memory (its own and its children's)


# Linux carries a process's peak RSS across fork and exec: a command started straight from
# this test process reports at least pytest's own peak (over 1 GB late in a full run). So the
# command is started by a small launcher, and the launcher's children's peak is the command's.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:], check=False).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(str(peak))
sys.exit(code)
"""


def run(args: Sequence[str], tmp_path: Path, prefix: Sequence[str] = ()) -> Done:
    """``[*prefix, weldmon, *args]`` as a subprocess of a small launcher that reports its
    peak memory (see `_LAUNCHER`)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    peak = tmp_path / "peak_kib.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(peak), *prefix, *WELDMON, *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return Done(proc.returncode, out.read_text(), err.read_text(), int(peak.read_text()))


def assert_refused(done: Done, command: str, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.startswith(f"weldmon {command}:"), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    assert "System error" not in done.stderr and "no such file" not in done.stderr


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def huge_wav(path: Path, size: int = GIB) -> Path:
    """A valid 16 kHz mono 16-bit WAV of ``size`` bytes (9 hours of silence), sparse."""
    data = size - 44
    header = b"RIFF" + struct.pack("<I", size - 8) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    header += b"data" + struct.pack("<I", data)
    return sparse(path, size, header)


def unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


def no_file_modes_for_root() -> list[str]:
    """The setpriv prefix that makes file modes bind root too (skips when not root)."""
    if os.geteuid() != 0:
        return []  # an ordinary user is refused mode-000 files anyway
    return [require_tool("setpriv", "util-linux"), *WITHOUT_FILE_OVERRIDES]


# --- weldmon model info --------------------------------------------------------------------


def test_model_info_names_why_a_file_cannot_be_read(compat_artifact: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    assert_refused(run(["model", "info", str(folder)], tmp_path), "model info", "a folder")
    sock = unix_socket(tmp_path / "socket.pt")
    try:
        done = run(["model", "info", str(tmp_path / "socket.pt")], tmp_path)
    finally:
        sock.close()
    assert_refused(done, "model info", "not a regular file")
    # /proc/self/mem: stat() says an empty regular file; reading it fails (EIO), as a bad
    # disk would.
    done = run(["model", "info", "/proc/self/mem"], tmp_path)
    assert_refused(done, "model info", "cannot read", "Input/output error")
    locked = tmp_path / "locked.pt"
    locked.write_bytes(compat_artifact.read_bytes())
    locked.chmod(0)
    done = run(["model", "info", str(locked)], tmp_path, no_file_modes_for_root())
    assert_refused(done, "model info", "cannot read", "Permission denied")


def test_model_info_piped_into_head_stops_quietly(compat_artifact: Path) -> None:
    proc = subprocess.Popen(
        [*WELDMON, "model", "info", str(compat_artifact)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before a byte is written (`| head -0`)
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert proc.returncode == 1 and stderr == ""


def test_a_huge_model_is_refused_from_its_size(tmp_path: Path) -> None:
    for name in ("huge.pt", "huge.onnx"):
        model = sparse(tmp_path / name, GIB, b"PK\x03\x04")
        done = run(["model", "info", str(model)], tmp_path)
        assert_refused(done, "model info", "1024.0 MB", "more than")
        assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib
        audio = huge_wav(tmp_path / "a.wav", 4096)
        done = run(["predict", "--model", str(model), str(audio)], tmp_path)
        assert_refused(done, "predict", "1024.0 MB", "more than")
        assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib


# --- predict, convert --------------------------------------------------------------------


def test_predict_refuses_a_huge_recording_from_its_header(
    compat_artifact: Path, tmp_path: Path
) -> None:
    audio = huge_wav(tmp_path / "shift.wav")
    done = run(["predict", "--model", str(compat_artifact), str(audio)], tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]  # the model was fine; this file failed
    assert "Traceback" not in done.stderr
    assert "more than the" in done.stderr and "weldmon replay" in done.stderr, done.stderr
    assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib


def test_predict_says_permission_denied_for_an_unreadable_recording(
    compat_artifact: Path, weld_audio_dir: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "weld.flac"
    audio.write_bytes(next(weld_audio_dir.rglob("*.flac")).read_bytes())
    audio.chmod(0)
    prefix = no_file_modes_for_root()
    done = run(["predict", "--model", str(compat_artifact), str(audio)], tmp_path, prefix)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{audio}: cannot read (Permission denied)" in done.stderr, done.stderr
    assert "System error" not in done.stderr and "Traceback" not in done.stderr
    done = run(["replay", "--model", str(compat_artifact), str(audio)], tmp_path, prefix)
    assert done.returncode == 1, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert f"{audio}: cannot read (Permission denied)" in said, said[-2000:]
    assert "System error" not in said and "Traceback" not in said


def test_a_sha256_pin_that_is_not_a_sha256_is_named_so(
    compat_artifact: Path, tmp_path: Path
) -> None:
    audio = huge_wav(tmp_path / "a.wav", 4096)
    done = run(["predict", "--model", str(compat_artifact), "--sha256", "zz", str(audio)], tmp_path)
    assert_refused(done, "predict", "'zz' is not a sha256", "64 hexadecimal digits")
    assert "does not match" not in done.stderr


def test_convert_to_an_unwritable_place_is_refused_before_converting(
    compat_artifact: Path, tmp_path: Path
) -> None:
    done = run(["convert", "--model", str(compat_artifact), "--output", "/proc/x.onnx"], tmp_path)
    assert_refused(done, "convert", "--output", "cannot write /proc/x.onnx")


def test_scan_names_its_output_option_as_spelled_in_help(
    compat_artifact: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    audio = huge_wav(tmp_path / "a.wav", 4096)
    done = run(
        ["scan", "--model", str(compat_artifact), "--output", str(blocker), str(audio)], tmp_path
    )
    assert_refused(done, "scan", "--output:", "is a file")
    assert "--out:" not in done.stderr


# --- configs and secrets -----------------------------------------------------------------


def test_a_huge_config_is_refused_from_its_size(tmp_path: Path) -> None:
    config = sparse(tmp_path / "monitor.yaml", GIB, b"model:\n  path: m.onnx\n")
    done = run(["config", "check", str(config)], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "more than the 4.0 MB" in done.stdout + done.stderr
    assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib


def test_watch_refuses_a_huge_password_file_from_its_size(tmp_path: Path) -> None:
    secret = sparse(tmp_path / "password", GIB, b"s3cret\n")
    done = run(
        ["watch", "--broker", "127.0.0.1:1", "--username", "u", "--password-file", str(secret)],
        tmp_path,
    )
    assert_refused(done, "watch", "--password-file", "more than the 64 KB")
    assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib


def test_console_refuses_tls_files_that_are_not_pem(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    args = ["console", "--broker", "127.0.0.1:1", "--db", str(tmp_path / "h.sqlite3")]
    done = run([*args, "--tls-cert", str(cert), "--tls-key", str(key)], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "weldmon console: --tls-cert" in done.stderr and "not a PEM" in done.stderr
    assert not (tmp_path / "h.sqlite3").exists()  # refused before anything was opened
    done = run([*args, "--tls-cert", str(tmp_path), "--tls-key", str(key)], tmp_path)
    assert done.returncode == 2 and "a folder" in done.stderr, done.stderr[-2000:]


def test_console_refuses_a_huge_config_or_auth_file_from_its_size(tmp_path: Path) -> None:
    config = sparse(tmp_path / "monitor.yaml", GIB, b"mqtt:\n  host: localhost\n")
    users = sparse(tmp_path / "users", GIB, b"ana:s3cret\n")
    users.chmod(0o600)
    db = ["--db", str(tmp_path / "h.sqlite3")]
    done = run(["console", "--config", str(config), *db], tmp_path)
    assert_refused(done, "console", "--config", "more than the 4.0 MB")
    assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib
    done = run(["console", "--broker", "127.0.0.1:1", "--auth-file", str(users), *db], tmp_path)
    assert_refused(done, "console", "--auth-file", "more than the 64 KB")
    assert done.peak_kib < REFUSAL_PEAK_KIB, done.peak_kib
