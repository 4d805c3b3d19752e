"""The reader: catch-up from storage and real-time tailing, across segments.

Position = (segment, next entry).  Entries come from the in-process tail hub
when a writer of this log lives in the same process (woken at once), else from
storage.  At the tail of another process's segment the reader looks at storage
every ``reader.storagePollInterval`` (a file stat or one object GET — never
etcd) and reads segment metadata at most every ``reader.metaPollInterval``;
with ``tailPush.enabled`` a push (tailpush.py: inotify, or an etcd watch)
wakes it as soon as the writer appends, the poll staying as the fallback.
Damaged bytes raise :class:`CorruptionError`; they never read as end-of-log.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator

from .errors import CorruptionError, InvalidArgumentError, LogstoreError, WriterClosedError
from .ids import EARLIEST, LATEST, MessageId
from .proto import SegmentMetadata, SegmentState, decode_layout

if TYPE_CHECKING:
    from .log import LogHandle

_BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class Message:
    id: MessageId
    payload: bytes
    properties: dict[str, str]


class LogReader:
    def __init__(self, handle: "LogHandle", start: MessageId) -> None:
        self._h = handle
        self._start_at = start
        self._seg = 0
        self._entry = 0
        self._cursor: Any = None
        self._ready: deque[Message] = deque()
        self._segs: dict[int, SegmentMetadata] = {}
        self._meta_read_at = 0.0
        self._closed = False
        self._hub_seen = -1
        self._registered = False
        self._push: Any = None  # tailpush.TailPush once this reader waited on storage
        self._push_hint = -1  # the writer's newest segment that made us re-read metadata
        self._sub: Any = None  # tailsub.TailSubscription: service mode, entries streamed by the LogStores
        cfg = handle.config
        self._poll = cfg["woodpecker.client.reader.storagePollInterval"]
        self._use_push = cfg["woodpecker.client.tailPush.enabled"]
        self._push_poll = max(self._poll, cfg["woodpecker.client.tailPush.pollInterval"])
        self._meta_poll = cfg["woodpecker.client.reader.metaPollInterval"]

    async def _start(self) -> None:
        h = self._h
        h.hub.reader_opened()
        self._registered = True
        await self._refresh_meta()
        t = await h.truncated_id()
        start = self._start_at
        if start == LATEST:
            last = await h.last_id()
            if last is None:
                self._seg, self._entry = (max(self._segs) if self._segs else 0), 0
            else:
                self._seg, self._entry = last.segment_id, last.entry_id + 1
        elif start == EARLIEST:
            self._seg, self._entry = (min(self._segs) if self._segs else 0), 0
        else:
            self._seg, self._entry = start.segment_id, start.entry_id
        if t is not None and (self._seg, self._entry) <= (t.segment_id, t.entry_id):
            self._seg, self._entry = t.segment_id, t.entry_id + 1

    async def _refresh_meta(self) -> None:
        """Segments from etcd — and whether the log still exists: a reader of a
        deleted log gets LogNotFoundError instead of waiting forever."""
        await self._h.meta.require_log(self._h.name)
        self._segs = {v.value.seg_no: v.value for v in await self._h.meta.segments(self._h.name)}
        self._meta_read_at = time.monotonic()

    @property
    def position(self) -> MessageId:
        """The id the next entry will have (or the place the reader waits at)."""
        return MessageId(self._seg, self._entry)

    async def read_next(self, timeout: float | None = None) -> Message:
        """The next entry; raises the built-in ``TimeoutError`` if none arrives in time."""
        if self._closed:
            raise WriterClosedError("reader is closed")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout < 0):
            raise InvalidArgumentError(f"timeout must be None or a finite number of seconds ≥ 0, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            progressed = await self._fill()
            if self._ready:
                break
            if progressed:
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no entry after {self.position} within {timeout}s")
            await self._wait(remaining)
        return self._ready.popleft()

    async def _wait(self, remaining: float | None) -> None:
        hub = self._h.hub
        if hub.writers:
            wait = 1.0  # a writer of this log lives here: it wakes us the moment it acknowledges
        else:
            from .tailsub import ensure  # service mode: LogStores stream entries as the LAC moves
            self._sub = ensure(self._sub, self._h, self._seg, self._entry, self._segs.get(self._seg))
            pushed = self._use_push and self._pushed().live(self._seg)
            # a push or a stream wakes us: the poll is only the safety net now
            wait = self._push_poll if pushed or (self._sub is not None and self._sub.live) else self._poll
        await hub.wait(self._hub_seen, wait if remaining is None else min(wait, remaining))

    def _pushed(self) -> Any:
        """The log's TailPush (tailpush.py), armed for the segment we wait in."""
        if self._push is None:
            from .tailpush import TailPush
            if self._h.hub.push is None:
                self._h.hub.push = TailPush(self._h)
            self._push = self._h.hub.push
            self._push.attach()
        self._push.waiting(self._seg)
        return self._push

    async def _fill(self) -> bool:
        """Try to make progress: fill ``_ready`` or move to the next segment.
        Returns True when the position moved (so the caller loops again)."""
        h = self._h
        self._hub_seen = h.hub.version
        b = h.hub.find(self._seg, self._entry)
        if b is not None:
            for k in range(self._entry - b.first_entry_id, len(b.entries)):
                payload, props = b.entries[k]
                self._ready.append(Message(MessageId(self._seg, b.first_entry_id + k), payload, dict(props)))
            self._entry = b.last_entry_id + 1
            return True
        got = self._sub.take(self._seg, self._entry) if self._sub is not None else None
        if got:  # streamed by a LogStore (tailsub.py): entries ≤ the LAC, from our position on
            from .tailsub import cursor_at
            self._ready.extend([Message(MessageId(self._seg, eid), *decode_layout(raw)) for eid, raw in got])
            self._entry, self._cursor = got[-1][0] + 1, cursor_at(self._cursor, got[-1][0] + 1)
            return True
        if self._seg not in self._segs and any(s > self._seg for s in self._segs):
            # collected below the watermark, or never existed: go to the next one
            self._move_to(min(s for s in self._segs if s > self._seg), 0)
            return True
        meta = self._segs.get(self._seg)
        if meta is None and h.backend.kind == "service":
            await self._maybe_refresh(force=self._hinted())  # its LogStores are only known from metadata
            meta = self._segs.get(self._seg)
            if meta is None:
                return False
        sealed = meta.last_entry_id if meta is not None and meta.state != SegmentState.ACTIVE else None
        # a live stream brings what a scan would find: storage is looked at only at the poll's pace
        streamed = sealed is None and self._sub is not None and self._sub.streaming(self._seg, self._push_poll)
        try:
            res = self._sub.nothing(self._cursor) if streamed else await h.backend.scan(
                h.log_id, self._seg, self._cursor or self._new_cursor(), _BATCH_BYTES,
                quorum=meta.quorum if meta else None, sealed_last=sealed)
        except CorruptionError:
            if await self._collected_meanwhile():
                return True
            raise
        except LogstoreError:
            await self._h.meta.require_log(h.name)  # deleted meanwhile: say so, not "storage failed"
            raise
        self._cursor = res.cursor
        for blk in res.blocks:
            hdr = blk.header
            for k, raw in enumerate(blk.records):
                eid = hdr.first_entry_id + k
                if eid < self._entry:
                    continue
                payload, props = decode_layout(raw)
                self._ready.append(Message(MessageId(self._seg, eid), payload, props))
            self._entry = max(self._entry, hdr.last_entry_id + 1)
        if self._ready:
            return True
        if res.complete or h.hub.completed.get(self._seg, -2) == self._entry - 1:
            self._move_to(self._seg + 1, 0)
            await self._maybe_refresh(force=False)
            return True
        if self._hinted():
            await self._refresh_meta()
            return True  # look again, with the segment's new state
        await self._maybe_refresh(force=False)
        return False

    def _hinted(self) -> bool:
        """True once per segment a writer announced through the tail push that
        metadata has not shown us yet: service-mode readers learn of a new (or
        completed) segment only from metadata, so read it now rather than at
        the next ``metaPollInterval``."""
        hint = self._push.hint_segment if self._push is not None else -1
        if hint > self._push_hint and hint >= self._seg and hint not in self._segs:
            self._push_hint = hint
            return True
        return False

    async def _collected_meanwhile(self) -> bool:
        """Bytes of a completed segment went missing: garbage collection after a
        truncation that overtook this reader, or damage?  Re-read the metadata;
        if the segment is gone or below the watermark, move on past it."""
        await self._refresh_meta()
        t = await self._h.truncated_id()
        meta = self._segs.get(self._seg)
        if meta is not None and (t is None or not self._h.below_watermark(meta, t)):
            return False
        if t is not None and (self._seg, self._entry) <= (t.segment_id, t.entry_id):
            self._move_to(t.segment_id, t.entry_id + 1)
        else:
            later = [s for s in self._segs if s > self._seg]
            self._move_to(min(later) if later else self._seg + 1, 0)
        return True

    def _new_cursor(self) -> Any:
        kind = self._h.backend.kind
        if kind == "local":
            from .storage.local import LocalCursor
            return LocalCursor(next_entry=self._entry)
        if kind == "service":
            from .storage.service import ServiceCursor
            return ServiceCursor(next_entry=self._entry)
        from .storage.objects import ObjectCursor
        return ObjectCursor(next_entry=self._entry)

    def _move_to(self, seg: int, entry: int) -> None:
        self._seg, self._entry, self._cursor = seg, entry, None

    async def _maybe_refresh(self, force: bool) -> None:
        if force or time.monotonic() - self._meta_read_at >= self._meta_poll:
            await self._refresh_meta()

    async def close(self) -> None:
        """Close; the last reader of the log in this client stops its push (watch, inotify)."""
        self._closed = True
        if self._registered:
            self._registered = False
            self._h.hub.reader_closed()
        push, self._push = self._push, None
        if push is not None:
            await push.detach()
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.aclose()

    def __del__(self) -> None:
        if getattr(self, "_registered", False):
            self._h.hub.reader_closed()
        sub = getattr(self, "_sub", None)
        if sub is not None:
            sub.close()
        push = getattr(self, "_push", None)
        if push is not None:
            push.users -= 1
            if push.users <= 0:
                push.abandon()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        return await self.read_next()

    async def __aenter__(self) -> "LogReader":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

