"""Seeking by time: the position of the first entry appended at or after a
given time (Kafka's ``offsetsForTimes``), found by binary search, not by
scanning the log.

Where the times come from.  Woodpecker's format carries no per-entry or
per-block time: block headers, index records and the footer hold entry ids and
sizes only, and segment metadata holds the segment's create and completion
times (unix ms).  So picchio's writer stamps every entry with its append time
(unix ms, the writer's wall clock when ``append`` was called, never going back
within one writer) in ``LogMessageLayout`` field 1001, written first in the
record (``proto.APPEND_TIME_FIELD``): the first ~20 bytes of a block's first
record give the block's start time, and Woodpecker skips the unknown field.
Entries without it (written by Woodpecker) fall back to segment metadata times:
the segment's create time orders segments, and inside such a segment the seek
lands on its first entry — never after an entry appended at or after the time.

Cost, in storage reads (S segments in the log, B blocks in one segment):

1. the segment list from etcd (one range read — the reader does it anyway);
2. a binary search over segments by the time of each one's first entry:
   ⌈log2 S⌉ small reads (a ~260-byte pread of ``data.log``, or a ranged GET of
   ``0.blk`` / ``m_0.blk``);
3. in the one segment that can hold the answer: its block list (the footer's
   index: one read; an active segment: objects are probed exponentially,
   ⌈log2 B⌉ ranged GETs; a local ``data.log`` walks its 37-byte block headers,
   one pread each) and a binary search over its blocks by their first entry's
   time: ⌈log2 B⌉ small reads;
4. one whole read of the block just before the boundary, to find the entry.

Service mode: segments already in object storage are searched as above; a
segment still on its LogStores has no block access, so its entries are
binary-searched one by one (⌈log2 entries⌉ GetBatchEntriesAdv calls).
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

from .codec import BLOCK_HEADER_RECORD_SIZE, HEADER_RECORD_SIZE, RECORD_HEADER_SIZE, BlockHeader, RecordType, \
    decode_record, split_header
from .errors import CorruptionError, InvalidArgumentError, StorageError
from .ids import MAX_INT64, MessageId
from .proto import SegmentMetadata, SegmentState, layout_time

if TYPE_CHECKING:
    from .log import LogHandle

_PROBE = 200  # bytes past a block header that hold the first record's header and its time field
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_T = TypeVar("_T")


def to_epoch_ms(at: object) -> int:
    """A timezone-aware ``datetime`` or unix epoch milliseconds (int) → epoch ms.
    A naive datetime is refused: whose wall clock would it be?"""
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidArgumentError(f"at= needs a timezone-aware datetime (e.g. tzinfo=timezone.utc), got {at!r}")
        return (at - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(at, int) and not isinstance(at, bool) and 0 <= at <= MAX_INT64:
        return at
    raise InvalidArgumentError(f"at= wants a timezone-aware datetime or unix epoch milliseconds (int ≥ 0), got {at!r}")


def parse_time(text: str) -> int:
    """CLI form of a time → epoch ms: digits are epoch milliseconds, anything else
    ISO 8601 with a zone (``2026-11-29T10:00:00Z``, ``…+01:00``)."""
    t = text.strip()
    if t.isdigit():
        return to_epoch_ms(int(t))
    try:
        return to_epoch_ms(datetime.fromisoformat(t))
    except ValueError:
        raise InvalidArgumentError(f"not a time: {text!r} (want ISO 8601 with a zone, e.g. 2026-11-29T10:00:00Z, "
                                   "or unix epoch milliseconds)") from None


def format_time(ms: int | None) -> str:
    """Epoch ms → ISO 8601 UTC with milliseconds ("" when unknown)."""
    if ms is None:
        return ""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _Probe:
    first_entry: int
    last_entry: int
    time: int | None  # append time of the block's first entry; None: written without one


def _parse_probe(buf: bytes, off: int) -> _Probe | None:
    """A block header at ``off`` and the time field of the record after it (the
    record itself is CRC-checked only when its block is read in full)."""
    rec = decode_record(buf, off)
    if rec is None or rec[0] != RecordType.BLOCK_HEADER:
        return None
    h = BlockHeader.decode_payload(rec[1])
    data = off + BLOCK_HEADER_RECORD_SIZE
    stamped = h.block_length and len(buf) > data + 4 and buf[data + 4] == RecordType.DATA
    return _Probe(h.first_entry_id, h.last_entry_id, layout_time(buf[data + RECORD_HEADER_SIZE:]) if stamped else None)


class _Blocks:
    """One segment's blocks as the search sees them: ``first(k)`` (block k's
    entry range and first time, None past the end) and ``times(k)`` (every
    entry's (id, time), reading the block).  ``count`` is None when unknown
    (an active object segment: probing finds the end)."""

    count: int | None = None

    def __init__(self, log_id: int, seg_id: int) -> None:
        self.log_id, self.seg_id = log_id, seg_id
        self._seen: dict[int, _Probe | None] = {}

    async def load(self) -> None:
        """Learn the block list where it is cheap (a footer, a header walk)."""

    async def first(self, k: int) -> _Probe | None:
        if k not in self._seen:
            try:
                self._seen[k] = None if self.count is not None and k >= self.count else await self._first(k)
            except CorruptionError as e:
                if e.segment is not None:
                    raise
                raise CorruptionError(str(e), log=str(self.log_id), segment=self.seg_id, block=k) from e
        return self._seen[k]

    async def _first(self, k: int) -> _Probe | None:
        raise NotImplementedError

    async def times(self, k: int) -> list[tuple[int, int | None]]:
        raise NotImplementedError


class _LocalBlocks(_Blocks):
    def __init__(self, path: str, log_id: int, seg_id: int) -> None:
        super().__init__(log_id, seg_id)
        self.path = path
        self.refs: list | None = None

    def _in_file(self, fn: Callable[[int], object]) -> object:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return fn(fd)
        finally:
            os.close(fd)

    async def load(self) -> None:
        from .storage.segfile import block_refs
        self.refs = await asyncio.to_thread(self._in_file, block_refs) or []  # type: ignore[assignment]
        self.count = len(self.refs)  # type: ignore[arg-type]

    async def _first(self, k: int) -> _Probe | None:
        if k == 0:  # block 0 sits right after the segment header: no index needed
            raw = await asyncio.to_thread(self._in_file, lambda fd: os.pread(
                fd, HEADER_RECORD_SIZE + BLOCK_HEADER_RECORD_SIZE + _PROBE, 0))
            return _parse_probe(raw, split_header(raw)[1]) if raw and len(raw) > HEADER_RECORD_SIZE else None
        assert self.refs is not None
        off = self.refs[k].offset
        raw = await asyncio.to_thread(self._in_file, lambda fd: os.pread(fd, BLOCK_HEADER_RECORD_SIZE + _PROBE, off))
        return _parse_probe(raw, 0) if raw else None  # type: ignore[arg-type]

    async def times(self, k: int) -> list[tuple[int, int | None]]:
        from .storage.segfile import read_block
        assert self.refs is not None
        r = self.refs[k]
        blk = await asyncio.to_thread(self._in_file, lambda fd: read_block(fd, r.offset, r.size, self.log_id,
                                                                           self.seg_id, r.number))
        if blk is None:
            raise _Moved()  # collected meanwhile
        return [(blk.header.first_entry_id + i, layout_time(raw)) for i, raw in enumerate(blk.records)]


class _ObjectBlocks(_Blocks):
    def __init__(self, objects, log_id: int, seg_id: int, compacted: bool) -> None:
        super().__init__(log_id, seg_id)
        self.b, self.compacted = objects, compacted
        self.loaded = False

    async def load(self) -> None:
        self.loaded = True
        found = await self.b.read_footer(self.log_id, self.seg_id)
        if found is not None:
            footer, index = found
            self.count, self.compacted = len(index), footer.compacted

    def _name(self, k: int) -> str:
        return f"m_{k}.blk" if self.compacted else f"{k}.blk"

    async def _first(self, k: int) -> _Probe | None:
        from .storage.objects import _is_fence
        from .storage.s3 import NotFound
        head = HEADER_RECORD_SIZE if k == 0 else 0
        try:
            raw, meta = await self.b.s3.get(self.b.key(self.log_id, self.seg_id, self._name(k)),
                                            (0, head + BLOCK_HEADER_RECORD_SIZE + _PROBE - 1))
        except NotFound:
            if self.loaded:
                return None  # past the end (were blocks compacted meanwhile, times() says so)
            await self.load()  # compacted meanwhile (N.blk → m_N.blk)?
            return None if self.count is not None and k >= self.count else await self._first(k)
        if _is_fence(meta):
            return None
        return _parse_probe(raw, split_header(raw)[1] if k == 0 else 0)

    async def times(self, k: int) -> list[tuple[int, int | None]]:
        from .storage.s3 import NotFound
        try:
            blk = await self.b._get_block(self.log_id, self.seg_id, self._name(k), k)
        except NotFound:
            raise _Moved() from None  # compacted or collected since it was probed
        return [(blk.header.first_entry_id + i, layout_time(raw)) for i, raw in enumerate(blk.records)]


class _EntryBlocks(_Blocks):
    """A service-mode segment still on its LogStores: one "block" per entry."""

    def __init__(self, backend, log_id: int, m: SegmentMetadata) -> None:
        super().__init__(log_id, m.seg_no)
        self.b, self.m = backend, m

    async def load(self) -> None:
        self.count = await self.b.last_entry(self.log_id, self.m.seg_no, quorum=self.m.quorum) + 1

    async def _first(self, k: int) -> _Probe | None:
        from .storage.service import ServiceCursor
        sealed = self.m.last_entry_id if self.m.state != SegmentState.ACTIVE else None
        res = await self.b.scan(self.log_id, self.m.seg_no, ServiceCursor(next_entry=k, checked_footer=True), 1,
                                quorum=self.m.quorum, sealed_last=sealed)
        for blk in res.blocks:
            if blk.header.first_entry_id <= k <= blk.header.last_entry_id:
                return _Probe(k, k, layout_time(blk.records[k - blk.header.first_entry_id]))
        return None

    async def times(self, k: int) -> list[tuple[int, int | None]]:
        p = await self.first(k)
        return [(k, p.time)] if p else []


def _blocks(h: "LogHandle", m: SegmentMetadata) -> _Blocks:
    b = h.backend
    if b.kind == "local":
        return _LocalBlocks(str(b._paths(h.log_id, m.seg_no).data), h.log_id, m.seg_no)  # type: ignore[attr-defined]
    if b.kind == "service":
        if m.state != SegmentState.SEALED:
            return _EntryBlocks(b, h.log_id, m)
        b = b.objects  # type: ignore[attr-defined]
    return _ObjectBlocks(b, h.log_id, m.seg_no, compacted=m.state == SegmentState.SEALED)


async def _boundary(blocks: _Blocks, past: Callable[[_Probe | None], bool]) -> int:
    """The smallest k with ``past(first(k))``, for a predicate that is false up
    to some block and true from there on (a missing block counts as true).
    ⌈log2 B⌉ probes, plus as many again when the block count is unknown."""
    lo, hi = 0, blocks.count
    if hi is None:
        if past(await blocks.first(0)):
            return 0
        lo, hi = 1, 1
        while not past(await blocks.first(hi)):
            lo, hi = hi + 1, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if past(await blocks.first(mid)):
            hi = mid
        else:
            lo = mid + 1
    return lo


async def _in_segment(blocks: _Blocks, at: int) -> tuple[int, bool]:
    """(entry id, True) of the first entry of this segment appended at or after
    ``at``; (the id after its last entry, False) when it holds none."""
    await blocks.load()
    k = await _boundary(blocks, lambda p: p is None or p.time is None or p.time >= at)
    nxt = 0
    if k > 0:  # block k−1 starts before ``at``; its tail may not
        for eid, t in await blocks.times(k - 1):
            if t is None or t >= at:
                return eid, True
            nxt = eid + 1
    p = await blocks.first(k)
    return (p.first_entry, True) if p is not None else (nxt, False)


class _Moved(Exception):
    """Blocks changed under the search (compacted or collected): start over."""


async def position_at(h: "LogHandle", at: int) -> MessageId:
    """Where a reader starts to read the first entry appended at or after
    ``at`` (epoch ms): that entry's id; before the first entry → the first
    retained entry; after the last → just past it, so the reader waits for the
    next append (LATEST semantics, without losing an append made meanwhile)."""
    return await _settled(h, lambda: _position_at(h, at))


async def _settled(h: "LogHandle", search: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``search`` again when compaction or GC moved blocks under it (rare)."""
    for _ in range(3):
        try:
            return await search()
        except _Moved:
            continue
    raise StorageError(f"log {h.name!r}: seeking by time kept losing to compaction or garbage collection")


async def _position_at(h: "LogHandle", at: int) -> MessageId:
    versions = await h.meta.segments(h.name)
    t = await h.truncated_id()
    segs = sorted((v.value for v in versions
                   if (t is None or not h.below_watermark(v.value, t))
                   and not (v.value.state != SegmentState.ACTIVE and v.value.last_entry_id < 0)),
                  key=lambda m: m.seg_no)
    if not segs:  # nothing retained: whatever comes next
        return MessageId(max([v.value.seg_no + 1 for v in versions] + [t.segment_id if t else 0]), 0)
    seen: dict[int, _Blocks] = {}

    async def starts_at_or_after(j: int) -> bool:
        if j not in seen:
            seen[j] = _blocks(h, segs[j])
        p = await seen[j].first(0)
        return p is None or (p.time if p.time is not None else segs[j].create_time) >= at

    lo, hi = 0, len(segs)
    while lo < hi:
        mid = (lo + hi) // 2
        if await starts_at_or_after(mid):
            hi = mid
        else:
            lo = mid + 1
    if lo == 0:
        return MessageId(segs[0].seg_no, 0)
    s = segs[lo - 1]
    after = MessageId(segs[lo].seg_no, 0) if lo < len(segs) else None
    p = await seen[lo - 1].first(0)
    if p is not None and p.time is None:  # written without times: only the segment's own times are known
        if s.state != SegmentState.ACTIVE and 0 < s.completion_time < at:
            return after or MessageId(s.seg_no, s.last_entry_id + 1)
        return MessageId(s.seg_no, 0)
    eid, found = await _in_segment(seen[lo - 1], at)
    return MessageId(s.seg_no, eid) if found or after is None else after


async def time_range(h: "LogHandle", m: SegmentMetadata) -> tuple[int | None, int | None]:
    """(first, last) append time of a segment's entries, None where unknown (no
    entries, or written without times): a small read, the block list and the
    last block (for an active object segment, ⌈log2 B⌉ probes find it)."""
    return await _settled(h, lambda: _time_range(h, m))


async def _time_range(h: "LogHandle", m: SegmentMetadata) -> tuple[int | None, int | None]:
    blocks = _blocks(h, m)
    first = await blocks.first(0)
    if first is None or first.time is None:
        return None, None
    await blocks.load()
    k = await _boundary(blocks, lambda p: p is None)
    times = await blocks.times(k - 1) if k > 0 else []
    return first.time, max((t for _, t in times if t is not None), default=first.time)
