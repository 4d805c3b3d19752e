"""``LogHandle``: one named log — its writer, readers, truncation and garbage
collection.  Segment bookkeeping that needs both metadata and storage (fence
and complete, compact, delete) lives here so the writer, the reader and GC
share one implementation."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConcurrentUpdateError, InvalidArgumentError, LogNotFoundError
from .hub import TailHub
from .ids import EARLIEST, LATEST, MessageId
from .meta import Versioned
from .proto import SegmentMetadata, SegmentState

if TYPE_CHECKING:
    from datetime import datetime

    from .client import Client
    from .reader import LogReader
    from .writer import LogWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentInfo:
    id: int
    state: str  # Active | Completed | Sealed | Truncated
    first_entry_id: int | None
    last_entry_id: int | None
    size: int
    create_time: int  # unix ms
    completion_time: int = 0  # unix ms; 0 while Active
    first_time: int | None = None  # append time (unix ms) of its first / last entry: segments(times=True)
    last_time: int | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "state": self.state, "first_entry_id": self.first_entry_id,
                "last_entry_id": self.last_entry_id, "size": self.size, "create_time": self.create_time,
                "completion_time": self.completion_time, "first_time": self.first_time, "last_time": self.last_time}


@dataclass
class GcReport:
    """What ``collect_garbage`` deleted (or, on a dry run, would delete)."""

    dry_run: bool
    truncated_id: MessageId | None
    segments: list[int] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "truncated_id": str(self.truncated_id) if self.truncated_id else None,
                "segments": self.segments, "objects": self.objects, "bytes": self.bytes}


_STATE_NAMES = {SegmentState.ACTIVE: "Active", SegmentState.COMPLETED: "Completed",
                SegmentState.SEALED: "Sealed", SegmentState.TRUNCATED: "Truncated"}


def _now_ms() -> int:
    return int(time.time() * 1000)


class LogHandle:
    def __init__(self, client: "Client", name: str, log_id: int) -> None:
        self.client = client
        self.name = name
        self.log_id = log_id
        self.config = client.config
        self.meta = client.meta
        self.backend = client.backend
        self.hub: TailHub = client.hub_for(log_id)
        self._writers: set["LogWriter"] = set()

    def __repr__(self) -> str:
        return f"LogHandle({self.name!r}, log_id={self.log_id})"

    # -- writer / reader ------------------------------------------------------
    async def open_writer(self, producer_id: str | None = None) -> "LogWriter":
        """A writer that fences every older writer of this log (in any process).
        With ``producer_id`` it is idempotent: appends carry sequences, retries
        of stored ones return their original ids, and ``last_sequence`` says
        where to resume (logstore/producer.py)."""
        from .writer import LogWriter

        if producer_id is not None and (not isinstance(producer_id, str) or not producer_id):
            raise InvalidArgumentError(f"producer_id must be a non-empty string, got {producer_id!r}")
        w = LogWriter(self, producer_id)
        await w._start()
        self._writers.add(w)
        return w

    def writer_closed(self, w: "LogWriter") -> None:
        self._writers.discard(w)

    async def open_reader(self, start: MessageId = EARLIEST, *, at: "datetime | int | None" = None) -> "LogReader":
        """A reader from ``start``, or — with ``at`` (a timezone-aware datetime or
        unix epoch ms) — from the first entry appended at or after that time
        (binary search over segments and blocks; precision and cost: ``seek``)."""
        from .reader import LogReader

        if not isinstance(start, MessageId):
            raise InvalidArgumentError(f"start must be EARLIEST, LATEST or a MessageId, got {start!r}")
        if at is not None:
            from .seek import position_at, to_epoch_ms
            if start != EARLIEST:
                raise InvalidArgumentError("open_reader takes a start position or at=, not both")
            start = await position_at(self, to_epoch_ms(at))
        r = LogReader(self, start)
        await r._start()
        return r

    # -- state ------------------------------------------------------------------
    async def segments(self, times: bool = False) -> list[SegmentInfo]:
        """The segments in metadata; ``times`` adds each one's first/last append
        time (a few small storage reads per segment, see ``seek.time_range``)."""
        from .seek import time_range
        out = []
        for v in await self.meta.segments(self.name):
            m = v.value
            last = m.last_entry_id if m.state != SegmentState.ACTIVE else await self.backend.last_entry(
                self.log_id, m.seg_no, quorum=m.quorum)
            out.append(SegmentInfo(m.seg_no, _STATE_NAMES.get(m.state, str(m.state)), 0 if last >= 0 else None,
                                   last if last >= 0 else None, m.size, m.create_time, m.completion_time,
                                   *(await time_range(self, m) if times and last >= 0 else (None, None))))
        return out

    async def truncated_id(self) -> MessageId | None:
        lm = (await self.meta.require_log(self.name)).value
        if lm.truncated_segment_id < 0 or lm.truncated_entry_id < 0:
            return None
        return MessageId(lm.truncated_segment_id, lm.truncated_entry_id)

    async def last_id(self) -> MessageId | None:
        """The last durable entry of the log, or None when it holds none."""
        for v in reversed(await self.meta.segments(self.name)):
            m = v.value
            last = m.last_entry_id if m.state != SegmentState.ACTIVE else await self.backend.last_entry(
                self.log_id, m.seg_no, quorum=m.quorum)
            if last >= 0:
                return MessageId(m.seg_no, last)
        return None

    # -- truncation --------------------------------------------------------------
    async def truncate(self, message_id: MessageId) -> MessageId | None:
        """Move the truncation watermark to ``message_id`` (inclusive).  Moving it
        backwards (or to where it is: its segment may be collected already) is
        a no-op.  Returns the watermark now in force."""
        if not isinstance(message_id, MessageId) or message_id in (LATEST,):
            raise InvalidArgumentError(f"truncate wants a MessageId of an existing entry, got {message_id!r}")
        current = await self.truncated_id()
        if current is not None and (message_id.segment_id, message_id.entry_id) <= \
                (current.segment_id, current.entry_id):
            return current
        segs = {v.value.seg_no: v.value for v in await self.meta.segments(self.name)}
        seg = segs.get(message_id.segment_id)
        if seg is None:
            raise InvalidArgumentError(f"log {self.name!r} has no segment {message_id.segment_id} "
                                       f"(segments: {sorted(segs)})")
        last = seg.last_entry_id if seg.state != SegmentState.ACTIVE else await self.backend.last_entry(
            self.log_id, seg.seg_no, quorum=seg.quorum)
        if message_id.entry_id > last:
            raise InvalidArgumentError(f"log {self.name!r}: {message_id} is beyond the last entry of segment "
                                       f"{seg.seg_no} ({seg.seg_no}:{last})")
        for _ in range(20):
            cur = await self.meta.require_log(self.name)
            lm = cur.value
            if (lm.truncated_segment_id, lm.truncated_entry_id) >= (message_id.segment_id, message_id.entry_id):
                break
            lm.truncated_segment_id, lm.truncated_entry_id = message_id.segment_id, message_id.entry_id
            lm.modification_timestamp = int(time.time())
            try:
                await self.meta.update_log(self.name, lm, cur.mod_revision)
                break
            except ConcurrentUpdateError:
                continue
        else:
            raise ConcurrentUpdateError(f"log {self.name!r}: truncation kept losing to concurrent updates")
        await self._mark_truncated()
        return await self.truncated_id()

    async def _mark_truncated(self) -> None:
        t = await self.truncated_id()
        if t is None:
            return
        for v in await self.meta.segments(self.name):
            m = v.value
            if self.below_watermark(m, t) and m.state != SegmentState.TRUNCATED:
                m.state = SegmentState.TRUNCATED
                try:
                    await self.meta.update_segment(self.name, m, v.mod_revision)
                except ConcurrentUpdateError:
                    pass  # a concurrent GC or compaction moved it; the next run sees it

    @staticmethod
    def below_watermark(m: SegmentMetadata, t: MessageId) -> bool:
        """Entirely at or below the watermark (and never the active segment)."""
        if m.state == SegmentState.ACTIVE:
            return False
        if m.seg_no < t.segment_id:
            return True
        return m.seg_no == t.segment_id and m.last_entry_id <= t.entry_id

    async def collect_garbage(self, dry_run: bool = False) -> GcReport:
        """Delete every segment entirely at or below the truncation watermark:
        stored bytes first (in the backend's batches: one listing per log), then
        metadata (batched transactions), so an interrupted run is simply rerun.
        Works with or without a writer open; never touches data above the mark."""
        t = await self.truncated_id()
        report = GcReport(dry_run, t)
        if t is None:
            return report
        versions = await self.meta.segments(self.name)
        doomed = [v.value.seg_no for v in versions if self.below_watermark(v.value, t)]
        known = {v.value.seg_no for v in versions}
        quorums = {v.value.seg_no: v.value.quorum for v in versions}
        newest = max(known) if known else -1
        # stored segments whose metadata is already gone (an interrupted earlier run)
        leftovers = [s for s in await self.backend.segment_ids(self.log_id)
                     if s not in known and s < t.segment_id and s < newest]
        targets = sorted(set(doomed) | set(leftovers))
        if not targets:
            return report
        sizes = await self.backend.delete_segments(self.log_id, targets, quorums, dry_run=dry_run)
        if not dry_run:
            await self.meta.delete_segments(self.name, [s for s in targets if s in known])
        report.segments = targets
        report.objects = sum(n for n, _ in sizes.values())
        report.bytes = sum(b for _, b in sizes.values())
        return report

    # -- segment bookkeeping shared by writer and GC ------------------------------
    async def complete_segment(self, v: Versioned[SegmentMetadata]) -> None:
        """Fence an Active segment in storage, then record it Completed."""
        seg_id = v.value.seg_no
        rec = await self.backend.fence_and_recover(self.log_id, seg_id, quorum=v.value.quorum)
        for _ in range(20):
            cur = await self.meta.get_segment(self.name, seg_id)
            if cur is None or cur.value.state != SegmentState.ACTIVE:
                return
            m = cur.value
            m.state, m.last_entry_id, m.size, m.completion_time = (SegmentState.COMPLETED, rec.last_entry_id,
                                                                   rec.size, _now_ms())
            try:
                await self.meta.update_segment(self.name, m, cur.mod_revision)
                self.hub.segment_completed(seg_id, rec.last_entry_id)
                return
            except ConcurrentUpdateError:
                continue

    async def compact_segment(self, seg_id: int, attempts: int = 5) -> None:
        """Merge a completed segment into object storage and record it Sealed;
        retried with back-off, then left for the next writer or GC run."""
        delay = 0.5
        for attempt in range(1, attempts + 1):
            if await self._compact_once(seg_id, last_try=attempt == attempts):
                return
            await asyncio.sleep(delay)
            delay *= 2

    async def _compact_once(self, seg_id: int, last_try: bool) -> bool:
        try:
            seg = await self.meta.get_segment(self.name, seg_id)
            size = await self.backend.compact(self.log_id, seg_id,
                                              self.config["woodpecker.logstore.segmentCompactionPolicy.maxBytes"],
                                              quorum=seg.value.quorum if seg else None,
                                              last_entry=seg.value.last_entry_id if seg else None)
            if size is None:
                return True
            for _ in range(20):
                cur = await self.meta.get_segment(self.name, seg_id)
                if cur is None or cur.value.state != SegmentState.COMPLETED:
                    return True
                m = cur.value
                m.state, m.size, m.sealed_time = SegmentState.SEALED, size, _now_ms()
                try:
                    await self.meta.update_segment(self.name, m, cur.mod_revision)
                    return True
                except ConcurrentUpdateError:
                    continue
            return True
        except LogNotFoundError:
            return True
        except Exception as e:  # noqa: BLE001 - compaction is retried; it never fails a write
            log.warning("compaction of %s/%s failed%s: %r", self.name, seg_id,
                        " (left for the next writer)" if last_try else ", retrying", e)
            return False

