"""Run a command under the system-call refusals of a systemd unit, without systemd.

The units end their filter with ``SystemCallFilter=~@privileged @resources`` and
``SystemCallErrorNumber=EPERM``: every call of those groups fails with EPERM instead of
killing the process. strace's fault injection does the same to a command it starts
(``-e inject=CALLS:error=EPERM``, with ``--seccomp-bpf`` so only those calls stop the
tracee) and logs each refused call, so a test can show which ones were made and that the
command still works. The groups are expanded by ``systemd-analyze syscall-filter``, so the
refusals are exactly systemd's for this version.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ANALYZE_TIMEOUT_S = 30.0


def require_tool(name: str, package: str) -> str:
    """The tool's path, or skip (fail under CI=true) when it is not installed."""
    tool = shutil.which(name)
    if tool is not None:
        return tool
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} not found (Debian package {package}); CI=true: required")
    pytest.skip(f"{name} not found (Debian package {package})")


def denied_groups(unit_service: dict[str, list[str]]) -> list[str]:
    """The groups a unit's ``SystemCallFilter=~...`` lines deny, e.g. [@privileged, @resources]."""
    groups: list[str] = []
    for value in unit_service.get("SystemCallFilter", []):
        if value.startswith("~"):
            groups += value[1:].split()
    return groups


def expand(groups: Sequence[str]) -> list[str]:
    """Every system call in `groups`, nested groups included (systemd-analyze's view)."""
    tool = require_tool("systemd-analyze", "systemd")
    calls: set[str] = set()
    seen: set[str] = set()
    todo = list(groups)
    while todo:
        group = todo.pop()
        if group in seen:
            continue
        seen.add(group)
        out = subprocess.run(
            [tool, "syscall-filter", group],
            capture_output=True,
            text=True,
            check=True,
            timeout=ANALYZE_TIMEOUT_S,
        ).stdout
        for line in out.splitlines()[1:]:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            if item.startswith("@"):
                todo.append(item)
            else:
                calls.add(item)
    return sorted(calls)


def refusing(calls: Sequence[str], trace_log: Path) -> list[str]:
    """The command prefix that runs what follows it under strace: each of `calls` fails with
    EPERM and is logged to `trace_log`."""
    strace = require_tool("strace", "strace")
    # "?" : a name this architecture lacks (pciconfig_iobase on x86-64) is no error
    names = ",".join(f"?{call}" for call in calls)
    return [
        strace,
        "-f",
        "--seccomp-bpf",
        "-qq",
        "-e",
        f"trace={names}",
        "-e",
        f"inject={names}:error=EPERM",
        "-o",
        str(trace_log),
        "--",
    ]


def refused(trace_log: Path) -> collections.Counter[str]:
    """How often each call was refused (strace logs ``NAME(...) = -1 EPERM ... (INJECTED)``)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in trace_log.read_text(errors="replace").splitlines():
        if "(INJECTED)" not in line or "= -1 EPERM" not in line:
            continue
        # "NAME(args) = -1 ..." or, for a call another thread interrupted in the log,
        # "<... NAME resumed>) = -1 ..."
        match = re.search(r"<\.\.\. ([a-z_0-9]+) resumed>", line) or re.search(
            r"^\d+\s+([a-z_0-9]+)\(", line
        )
        if match:
            counts[match[1]] += 1
    return counts
