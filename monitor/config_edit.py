"""Rewriting one top-level section of the monitor's YAML config on disk, the rest untouched.

Promotion and rollback (`monitor/promote.py`) make the config on disk follow the model in
service, so a restart runs what was running. PyYAML drops comments when it writes a document,
so only the span of the one section is replaced (from its key to the end of the line of its
last value, found from PyYAML's node marks); every other line, comments included, stays as
the operator wrote it. Files are replaced atomically: written beside the target, flushed,
fsynced, then renamed over it, so a crash leaves the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from deploy.errors import WeldmonError

NEW_SUFFIX = ".weldmon-new"  # the file written beside the target before the rename


class ConfigWriteError(WeldmonError):
    """The config (or a state file) cannot be rewritten; nothing was changed."""


def _value_end(node: yaml.Node) -> int:
    """Where a value's own text ends: its last scalar in block style (so comment lines after
    a block section stay outside it), its closing bracket in flow style."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _value_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _value_end(node.value[-1])
    return node.end_mark.index


def with_section(text: str, key: str, value: Any) -> str:
    """`text` (a YAML mapping) with top-level `key` set to `value`: its old span (key, value
    and the rest of the value's last line, e.g. a trailing comment) replaced in place, or
    the section appended when absent."""
    block = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return block
    if not isinstance(root, yaml.MappingNode):
        raise ConfigWriteError("the config is not a mapping of sections")
    for key_node, value_node in root.value:
        if key_node.value == key:
            start = key_node.start_mark.index - key_node.start_mark.column
            end = text.find("\n", _value_end(value_node))
            end = len(text) if end < 0 else end + 1
            return text[:start] + block + text[end:]
    return text.rstrip("\n") + "\n\n" + block


def stage(path: Path, text: str) -> Path:
    """Write `text` beside `path` (same mode), flushed to disk, and return where: `commit`
    renames it over `path`. ConfigWriteError says why it cannot (a read-only folder)."""
    new = path.with_name(path.name + NEW_SUFFIX)
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        with new.open("w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        new.chmod(mode)
    except OSError as exc:
        discard(new)
        raise ConfigWriteError(
            f"{path}: cannot be rewritten ({exc.strerror or exc}); nothing was changed"
        ) from exc
    return new


def commit(new: Path, path: Path) -> None:
    """Rename a `stage`d file over `path`, the rename itself flushed to disk."""
    try:
        new.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename survives a power loss
        finally:
            os.close(directory)
    except OSError as exc:
        discard(new)
        raise ConfigWriteError(
            f"{path}: cannot be replaced ({exc.strerror or exc}); nothing was changed"
        ) from exc


def discard(new: Path) -> None:
    """Remove a `stage`d file that will not be committed."""
    with contextlib.suppress(OSError):
        new.unlink(missing_ok=True)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: the old file or the new one survives a crash, never a
    mix. ConfigWriteError says why it cannot; nothing changed then."""
    commit(stage(path, text), path)
