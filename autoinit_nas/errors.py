"""The project's one exceptions module.

Two families: errors that end the work (``AutoInitError`` and its subclasses other than
``CandidateFailedError``), and ``CandidateFailedError``, which a search records against one
candidate before going on.
"""

from __future__ import annotations

__all__ = [
    "AutoInitError",
    "UnsupportedLayerError",
    "SignalError",
    "InvalidGenomeError",
    "CandidateFailedError",
    "FatalSearchError",
]


class AutoInitError(Exception):
    """Base class of every error raised by autoinit-nas."""


class UnsupportedLayerError(AutoInitError, TypeError):
    """A layer has no estimator and the unknown-layer policy is ``"raise"``."""


class SignalError(AutoInitError, ValueError):
    """The signal cannot be propagated: NaN or negative variance, zero second moment, etc."""


class InvalidGenomeError(AutoInitError, ValueError):
    """A genome is malformed (unknown op, cycle, dangling edge, wrong types)."""


class CandidateFailedError(AutoInitError):
    """One candidate failed (NaN loss, out of memory, exception); record it and go on."""

    def __init__(self, reason: str, *, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class FatalSearchError(AutoInitError):
    """The search cannot go on (bad task file, unusable run directory, ...)."""
