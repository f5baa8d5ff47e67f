"""weldmon: real-time acoustic weld-defect monitor (version and the `weldmon` command)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("weldmon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
