"""The weldmon error family. Foreign exceptions are converted at module edges with
``raise ... from`` so callers catch one family and every message names what was wrong."""


class WeldmonError(Exception):
    """Base of every error weldmon raises on purpose."""


class ArtifactError(WeldmonError):
    """A file is not a usable deploy artifact (wrong file, truncated, missing attribute,
    sha256 mismatch)."""


class AudioError(WeldmonError):
    """An audio file or buffer cannot be judged (missing, unreadable, empty, too short, NaN)."""


class ReportError(WeldmonError):
    """A report or output cannot be written where it was asked for (checked before the work)."""
