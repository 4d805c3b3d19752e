"""Tail subscriptions (``SubscribeEntries``): a LogStore streams a segment's
entries to a reader as the segment's LAC moves.

Why: a reader in another process otherwise learns of an entry by polling (or
an etcd bump, tailpush.py) and then asks for it with GetBatchEntriesAdv — two
more hops after the LAC reached this LogStore.  A subscriber gets the entries
in a frame sent the moment the LAC moves here.

What is sent is what GetBatchEntriesAdv would return: entries ≤ the
segment's ``visible()`` LAC (the writer's pushed LAC capped at what is durable
here; the footer's once completed), read back from the staged file (block
CRCs checked), contiguous from the requested entry, in order, each once per
stream.  The first frame goes out at once (empty when nothing is new) so the
client knows the stream is live.  A stream ends with a Status frame:
END_OF_FILE once a completed segment's last entry was sent, NOT_FOUND when
the segment is not (or no longer) staged here (compacted, cleaned, deleted),
an error Status when a read failed (CorruptionError included).  The reader
then goes on with its ordinary read path; it never decides that a segment
ended from a stream — metadata stays the authority.

Cost: an idle subscriber is a coroutine awaiting one future shared by every
subscriber of its segment — no task, no timer.  The RPCs that may change
what a segment shows (UpdateLastAddConfirmed, an append made durable here,
Complete/Fence/Compact/Clean, deletions) call :meth:`Subscriptions.changed`,
which resolves that future only when the segment's visible LAC, its footer or
its presence changed.  One read serves every subscriber waiting at the same
place.  The client's deadline bounds a stream (gRPC cancels the handler).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from ..errors import LogstoreError
from ..rpc import AddEntryState, Code, LogEntry, Status, SubscribeEntriesResponse

if TYPE_CHECKING:
    from .service import LogStoreService
    from .staged import StagedSegment

_Key = tuple[str, str, int, int]
_FRAME_ENTRIES = 2000  # entries per frame at most (as a GetBatchEntriesAdv of our reader)
_INLINE_BYTES = 256 << 10  # smaller reads run on the event loop (page cache): no thread hop
# RPCs after which subscribers of the request's segment may see something new
_SEGMENT_RPCS = frozenset({"UpdateLastAddConfirmed", "CompleteSegment", "FenceSegment", "CompactSegment",
                           "NotifySegmentCompacted", "CleanSegment"})
_PREFIX_RPCS = {"MarkLogDeleted": 3, "MarkInstanceDeleted": 2}  # they drop every segment under a prefix


def _frame(status: Status, entries: list | None = None, lac: int = -1) -> SubscribeEntriesResponse:
    return SubscribeEntriesResponse(status, entries or [], lac,
                                    AddEntryState.SYNCED if status.code == Code.OK else AddEntryState.FAILED)


class Subscriptions:
    """Every subscriber of one LogStore, by segment."""

    def __init__(self, svc: "LogStoreService") -> None:
        self.svc = svc
        self._waiting: dict[_Key, asyncio.Future] = {}
        self._seen: dict[_Key, tuple] = {}  # the segment's state when its waiters went to sleep
        self._last: dict[_Key, tuple[int, int, list]] = {}  # (from, upto, rows) of the newest read, shared
        self._subscribers: dict[_Key, int] = {}
        self.open = 0
        self.closing = False

    # -- wake-ups ------------------------------------------------------------------------------
    def _state(self, k: _Key) -> tuple | None:
        s = self.svc.segments.get(k)
        return None if s is None else (s.visible(), s.footer is not None, s.compacted, id(s))

    def changed(self, k: _Key) -> None:
        """Something may have changed in segment ``k``: wake its subscribers if
        what they can see did (O(1) when nobody subscribes to it)."""
        if k in self._waiting and self._state(k) != self._seen.get(k):
            self._wake(k)

    def _wake(self, k: _Key) -> None:
        fut = self._waiting.pop(k)
        self._seen.pop(k, None)
        self._last.pop(k, None)
        if not fut.done():
            fut.set_result(None)
        self.svc.metrics.inc("picchio_logstore_subscription_wakeups_total")

    def shutdown(self) -> None:
        """The server stops: every stream ends with a retriable Status now
        (its readers go on from another replica or their poll)."""
        self.closing = True
        for k in list(self._waiting):
            self._wake(k)

    def after(self, name: str, req: Any) -> None:
        if name in _SEGMENT_RPCS:
            self.changed((req.bucket_name, req.root_path, req.log_id, req.segment_id))
        elif name in _PREFIX_RPCS:
            prefix = (req.bucket_name, req.root_path, req.log_id)[: _PREFIX_RPCS[name]]
            for k in [k for k in self._waiting if k[: len(prefix)] == prefix]:
                self._wake(k)

    def wrap(self, name: str, fn: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """``fn`` (an RPC's method), notifying subscribers once it returned."""
        if name not in _SEGMENT_RPCS and name not in _PREFIX_RPCS:
            return fn

        async def call(req: Any) -> Any:
            try:
                return await fn(req)
            finally:
                self.after(name, req)
        call.__name__ = fn.__name__
        return call

    def _sleep(self, k: _Key, state: tuple) -> asyncio.Future:
        fut = self._waiting.get(k)
        if fut is None:
            fut = self._waiting[k] = asyncio.get_running_loop().create_future()
            self._seen[k] = state
        return fut

    # -- the stream ------------------------------------------------------------------------------
    async def _read(self, k: _Key, s: "StagedSegment", nxt: int, upto: int, per: int) -> list:
        last = self._last.get(k)
        if last is not None and last[0] == nxt and last[1] == upto and len(last[2]) <= per:
            return last[2]
        size = 0
        for b in reversed(s.blocks):
            if b.last_entry_id < nxt:
                break
            size += b.size
        rows = s.read(nxt, per) if size <= _INLINE_BYTES else await asyncio.to_thread(s.read, nxt, per)
        self._last[k] = (nxt, upto, rows)
        return rows

    async def serve(self, req: Any) -> AsyncIterator[SubscribeEntriesResponse]:
        svc = self.svc
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        nxt = req.from_entry_id
        per = min(req.max_entries or _FRAME_ENTRIES, _FRAME_ENTRIES)
        self.open += 1
        self._subscribers[k] = self._subscribers.get(k, 0) + 1
        svc.metrics.set("picchio_logstore_subscriptions", self.open)
        try:
            if not svc.known(k):
                yield _frame(Status("segment not on this node", Code.NOT_FOUND))
                return
            s = svc.segment(k)
            sent = False
            while True:
                if self.closing:
                    yield _frame(Status("the LogStore is shutting down", Code.INTERNAL, retriable=True))
                    return
                if svc.segments.get(k) is not s or s.compacted:
                    yield _frame(Status("segment no longer staged here: read it elsewhere", Code.NOT_FOUND))
                    return
                upto = s.visible()
                if nxt <= upto:
                    rows = await self._read(k, s, nxt, upto, per)
                    if rows and rows[0][0] == nxt:
                        yield _frame(Status("ok", Code.OK), [LogEntry(req.segment_id, eid, v) for eid, v in rows],
                                     upto)
                        svc.metrics.inc("picchio_logstore_subscription_frames_total")
                        nxt, sent = rows[-1][0] + 1, True
                        continue
                    yield _frame(Status(f"entry {nxt} is not readable here", Code.NOT_FOUND))
                    return
                if s.footer is not None:  # completed here, everything up to its LAC sent
                    yield _frame(Status("end of file", Code.END_OF_FILE), lac=s.lac)
                    return
                if not sent:  # the stream is live: say so at once
                    yield _frame(Status("ok", Code.OK), lac=upto)
                    sent = True
                    continue
                await self._sleep(k, self._state(k))  # nothing awaited since ``upto`` was read
        except (LogstoreError, OSError, ValueError) as e:  # CorruptionError included: the reader reads elsewhere
            from .service import _err
            yield _frame(_err(e))
        finally:
            self.open -= 1
            self._subscribers[k] -= 1
            if not self._subscribers[k]:  # the segment's last subscriber: forget it
                del self._subscribers[k]
                self._last.pop(k, None)
                self._seen.pop(k, None)
                fut = self._waiting.pop(k, None)
                if fut is not None and not fut.done():
                    fut.cancel()
            svc.metrics.set("picchio_logstore_subscriptions", self.open)
