"""Typed exceptions.  Every failure a caller can act on has its own class under
:class:`LogstoreError`, and the message says what to do about it."""
from __future__ import annotations


class LogstoreError(Exception):
    """Base of every error raised by logstore."""


class ConfigError(LogstoreError, ValueError):
    """A configuration key is unknown, mistyped or out of range (the message names the key)."""


class InvalidArgumentError(LogstoreError, ValueError):
    """A call got a value it cannot accept: wrong type, empty entry, bad name."""


class LogExistsError(LogstoreError):
    """create_log() of a name that already exists."""


class LogNotFoundError(LogstoreError):
    """The named log does not exist (or was deleted)."""


class WriterFencedError(LogstoreError):
    """Another writer opened this log; this writer can no longer append.
    Nothing this writer had not acknowledged will appear in the log."""


class WriterClosedError(LogstoreError):
    """append() after close(), or the writer failed earlier and stopped."""


class CorruptionError(LogstoreError):
    """Stored bytes fail their CRC or cannot be decoded.  Raised instead of
    treating damaged data as the end of the log."""

    def __init__(self, message: str, *, log: str | None = None, segment: int | None = None,
                 block: int | str | None = None) -> None:
        where = ", ".join(f"{k}={v}" for k, v in (("log", log), ("segment", segment), ("block", block)) if v is not None)
        super().__init__(f"{message} ({where})" if where else message)
        self.log, self.segment, self.block = log, segment, block


class StorageError(LogstoreError):
    """The storage backend (disk, S3) failed after bounded retries."""


class StorageFullError(StorageError):
    """Service mode: the LogStores are above their disk limits and push back.
    Retriable once they have flushed and dropped compacted segments."""


class MetadataError(LogstoreError):
    """etcd failed after bounded retries, or metadata is inconsistent."""


class ConcurrentUpdateError(MetadataError):
    """A compare-and-swap lost to a concurrent update; re-read and retry."""


class QuorumUnavailableError(LogstoreError):
    """Service mode: too few LogStores answered within the deadline."""


class PermissionDeniedError(LogstoreError):
    """Service mode: a LogStore refused the call for this client certificate's
    role (``<role>:<name>`` CN, see ``logstore.authz``).  Not retried: another
    try or another LogStore gives the same answer; use a certificate with a role
    that may make the call."""


class SequenceError(LogstoreError):
    """An idempotent producer's sequence number does not fit what the log holds
    (``open_writer(producer_id=...)``, ``append(..., sequence=n)``)."""


class SequenceGapError(SequenceError):
    """The sequence skips ahead: the ones before it were never appended.  Send
    ``writer.last_sequence + 1`` (and everything after it) again, in order."""


class DuplicateSequenceError(SequenceError):
    """The sequence is already in the log, but so far back that its MessageId is
    no longer remembered: it was appended once and must not be sent again."""
