"""picchio's write-ahead log — Woodpecker-compatible, embedded mode.

Format.  A log is a sequence of segments; a segment is a sequence of blocks; a
block is a BlockHeaderRecord followed by DataRecords (one per entry, each a
``LogMessageLayout`` protobuf of payload + properties), all framed as
``crc32 | type | length | payload``.  A completed segment ends with an index of
its blocks and a footer holding the last-add-confirmed entry (LAC).  On a file
system a segment is ``{rootPath}/{minio.rootPath}/{logId}/{segId}/data.log``; in
object storage each block is ``{rootPath}/{logId}/{segId}/{n}.blk`` and the
footer ``footer.blk``.  Metadata (logs, segments, the truncation watermark) is
protobuf in etcd under ``{etcd.rootPath}/woodpecker``.

Lifecycle of a segment.  Active (one writer appends blocks) → Completed (footer
written, by rollover, writer close or a new writer fencing it) → Sealed (object
storage: compacted into ``m_k.blk``) → Truncated (at or below the watermark) →
deleted by ``collect_garbage``.

Durability promise.  ``append`` returns only when its block is durable: written
and fdatasync'd (local), or PUT with ``If-None-Match: *`` (object storage).
Acknowledged entries are never lost, duplicated or reordered; a fenced writer's
unacknowledged entries never appear.

    async with logstore.Client(logstore.Config.from_yaml("woodpecker.yaml")) as client:
        log = await client.create_log("orders")
        async with await log.open_writer() as w:
            ids = await asyncio.gather(*(w.append(b"entry %d" % i) for i in range(100)))
        reader = await log.open_reader(logstore.EARLIEST)
        msg = await reader.read_next(timeout=1.0)
        await log.truncate(ids[49])
        report = await log.collect_garbage()
"""
from .client import Client
from .config import Config
from .errors import (ConcurrentUpdateError, ConfigError, CorruptionError, InvalidArgumentError, LogExistsError,
                     LogNotFoundError, LogstoreError, MetadataError, PermissionDeniedError, QuorumUnavailableError, StorageError, StorageFullError,
                     WriterClosedError, WriterFencedError, SequenceError, SequenceGapError, DuplicateSequenceError)
from .ids import EARLIEST, LATEST, MessageId
from .log import GcReport, LogHandle, SegmentInfo
from .reader import LogReader, Message
from .writer import LogWriter

__all__ = [
    "Client", "Config", "MessageId", "EARLIEST", "LATEST", "LogHandle", "LogWriter", "LogReader", "Message",
    "SegmentInfo", "GcReport",
    "LogstoreError", "ConfigError", "InvalidArgumentError", "LogExistsError", "LogNotFoundError", "WriterFencedError",
    "WriterClosedError", "CorruptionError", "StorageError", "StorageFullError", "MetadataError", "ConcurrentUpdateError",
    "QuorumUnavailableError", "PermissionDeniedError", "SequenceError", "SequenceGapError", "DuplicateSequenceError",
]
