"""The error tree.

Everything a user can cause or fix derives from ``ConnectorError``: the CLI prints its message as
one line (no traceback) and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole one-line message."""


class ConfigError(ConnectorError):
    """The INI file, a section, a setting or a mapping is wrong."""


class SourceError(ConnectorError):
    """The source system could not be read (unreachable, bad credentials, bad data)."""


class ReportedError(SourceError):
    """A failure whose message goes to Oomnitza as it is: the texts its UI knows for a cloud-managed
    integration (managed-mode.md §8), instead of "The run failed: <message>"."""


class AuthError(ConnectorError):
    """A credential was rejected (Oomnitza or a source)."""


class SinkError(ConnectorError):
    """Oomnitza (or the local store) refused or could not take the records."""


class RecordError(Exception):
    """One record could not be processed; it is counted, the run goes on."""

    def __init__(self, message: str, bucket: str = "failed_convert") -> None:
        super().__init__(message)
        self.bucket = bucket


class DiskError(ConnectorError):
    """A file could not be written: the disk is full or read-only, or the folder not writable.
    Every later write would fail too, so a run stops writing (and says so in one line)."""


class RecordsRejected(SinkError):
    """The sink took the batch but refused ``rejected`` of its records (the embedded local store
    answers per record); the others were stored."""

    def __init__(self, message: str, rejected: int) -> None:
        super().__init__(message)
        self.rejected = rejected
