"""The interface every storage backend implements, and the small values that
cross it.  The segment layer above speaks only these words: write a block,
finalize, fence-and-recover, scan blocks from a cursor, delete."""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from ..codec import BlockHeader, DecodedBlock, IndexRecord
from ..proto import QuorumInfo


@dataclass(frozen=True)
class BlockRef:
    """Where a durable block sits: its number, entry-id range and stored size.
    ``offset`` is the byte offset of its header in ``data.log`` (local) and is
    unused for objects."""

    number: int
    first_entry_id: int
    last_entry_id: int
    size: int
    offset: int = 0


@dataclass
class Recovered:
    """What fence-and-recover found: the durable blocks, whether the segment
    already had a footer, and its last entry id (−1 when empty)."""

    blocks: list[BlockRef]
    last_entry_id: int
    size: int
    had_footer: bool


@dataclass
class ScanResult:
    """A batch of blocks read from ``cursor`` on, the cursor after them, and
    whether the segment is known to hold nothing beyond them."""

    blocks: list[DecodedBlock]
    cursor: Any
    complete: bool
    lac: int = -1
    extra: dict = field(default_factory=dict)


class SegmentWriter(ABC):
    """The write side of one segment, owned by exactly one LogWriter."""

    #: called with a LAC once entries up to it are readable by other processes, for a
    #: backend where that comes later than the ack (service: after the LAC push);
    #: None: readable at the ack.  Set by the writer (tail notifications, tailpush.py).
    on_visible: Callable[[int], None] | None = None

    @abstractmethod
    async def write_block(self, header: BlockHeader, pieces: list, entries: list | None = None,
                          times: list | None = None) -> BlockRef:
        """Durably store one block (its header, then the data ``pieces`` framed by
        :class:`BlockBuilder`).  Returns only when the block is durable; raises
        WriterFencedError if the segment was fenced.  ``entries`` are the
        (payload, properties) pairs and ``times`` their append times, for
        backends that ship entries, not blocks."""

    def start_block(self, header: BlockHeader, pieces: list) -> asyncio.Future | None:
        """Start storing one block without a coroutine of its own, for a backend
        that can: a future of what :meth:`write_block` returns (its errors as
        :meth:`block_error` maps them), or None (the writer calls write_block).
        The writer's direct path (writer.py) uses it to send a block from the
        append itself."""
        return None

    def block_error(self, header: BlockHeader, error: BaseException) -> BaseException:
        """A failure of :meth:`start_block`'s future as write_block would have raised it."""
        return error

    def acked(self, lac: int) -> None:
        """The writer acknowledged everything up to ``lac`` (service mode pushes it
        to the LogStores so readers may see it)."""

    @abstractmethod
    async def finalize(self, blocks: list[BlockRef], lac: int) -> int:
        """Write index + footer; returns the segment's stored size."""

    @abstractmethod
    async def close(self) -> None:
        """Release locks and handles (no data is written)."""

    @property
    @abstractmethod
    def parallel(self) -> int:
        """How many write_block calls may be in flight at once."""


class Backend(ABC):
    """One storage backend for all logs of a client."""

    kind: str

    async def start(self) -> None:
        """Check reachability (and create the bucket if configured)."""

    async def close(self) -> None:
        pass

    async def choose_quorum(self) -> QuorumInfo:
        """The replicas a new segment will live on (embedded: the fixed local quorum)."""
        return QuorumInfo()

    @abstractmethod
    async def create_segment(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> SegmentWriter:
        """A writer for a new, empty segment (Active in metadata already)."""

    @abstractmethod
    async def fence_and_recover(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> Recovered:
        """Stop any other writer of this segment, find its durable blocks and
        make sure it has a footer.  Idempotent; safe to run concurrently."""

    @abstractmethod
    async def scan(self, log_id: int, seg_id: int, cursor: Any, max_bytes: int,
                   quorum: QuorumInfo | None = None, sealed_last: int | None = None) -> ScanResult:
        """Blocks from ``cursor`` (None = start) up to about ``max_bytes``."""

    @abstractmethod
    async def last_entry(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> int:
        """The last durable entry id of a segment (−1 if none), without fencing."""

    @abstractmethod
    async def compact(self, log_id: int, seg_id: int, target_bytes: int,
                      quorum: QuorumInfo | None = None, last_entry: int | None = None) -> int | None:
        """Merge a finalized segment into larger objects; returns the new size or
        None when the backend does not compact."""

    @abstractmethod
    async def delete_segment(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> tuple[int, int]:
        """Delete every stored byte of a segment → (objects or files, bytes)."""

    async def delete_segments(self, log_id: int, seg_ids: list[int],
                              quorums: dict[int, QuorumInfo] | None = None,
                              dry_run: bool = False) -> dict[int, tuple[int, int]]:
        """Delete (or, dry, only measure) many segments of one log → (objects or
        files, bytes) per segment.  Backends whose store has batch deletes
        override this; the default goes one segment at a time."""
        out = {}
        for s in seg_ids:
            if dry_run:
                out[s] = await self.segment_size(log_id, s)
            else:
                out[s] = await self.delete_segment(log_id, s, quorum=(quorums or {}).get(s))
        return out

    async def segment_size(self, log_id: int, seg_id: int) -> tuple[int, int]:
        """(objects or files, bytes) a segment holds in storage."""
        raise NotImplementedError(f"{type(self).__name__} measures segments in delete_segments")

    @abstractmethod
    async def delete_log(self, log_id: int) -> tuple[int, int]:
        """Delete every stored byte of a log → (objects or files, bytes)."""

    @abstractmethod
    async def segment_ids(self, log_id: int) -> list[int]:
        """Segment ids that have any stored bytes (for GC of leftovers)."""


def index_records(blocks: list[BlockRef], *, local: bool) -> list[IndexRecord]:
    """Index records as Woodpecker writes them: byte offsets locally, the block
    number as StartOffset for objects."""
    return [IndexRecord(b.number, b.offset if local else b.number, b.size, b.first_entry_id, b.last_entry_id)
            for b in blocks]
