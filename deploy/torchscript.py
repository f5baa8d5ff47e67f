"""TorchScript entry points with torch 2.13's deprecation warnings silenced, on purpose.

torch 2.13 marks `torch.jit.script/load/save` deprecated in favour of `torch.export`. The deploy
contract *is* a TorchScript module: the original pipeline's artifacts (../shared/compat) can only
be loaded this way, and `torch.export` has no equivalent of a scripted module with exported
methods and attributes. So weldmon keeps TorchScript and silences exactly these warnings here,
in one place, instead of letting them turn into errors under `filterwarnings = error`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import torch

_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        yield


def script(obj: Any) -> Any:
    """`torch.jit.script` without the deprecation warning."""
    with _quiet():
        return torch.jit.script(obj)


def save(module: Any, path: str, extra_files: dict[str, str] | None = None) -> None:
    """`torch.jit.save` without the deprecation warning."""
    with _quiet():
        torch.jit.save(module, path, _extra_files=extra_files or {})


def load(path: str | BinaryIO, extra_files: dict[str, str] | None = None) -> Any:
    """`torch.jit.load` (of a path or a file object) on the CPU without the deprecation
    warning; fills `extra_files`."""
    with _quiet():
        return torch.jit.load(path, map_location="cpu", _extra_files=extra_files)
