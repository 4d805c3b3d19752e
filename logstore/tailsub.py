"""Service mode: a reader at the tail of an active segment subscribes to the
LogStores of its write quorum (``SubscribeEntries``, server/subscribe.py),
which stream the entries as the segment's LAC moves.

Why: polling (or an etcd bump, tailpush.py) followed by a GetBatchEntriesAdv
costs a reader in another process several ms per entry; a stream delivers the
entries in the frame the LAC move itself triggers.

One :class:`TailSubscription` per reader and segment: one stream per replica
of the write quorum (the first replica to deliver an entry wins; a dead or
lagging one costs nothing), merged into one contiguous buffer starting at
the entry the reader waited for.  Only entries ≤ the LAC the writer pushed
are ever sent (the server's ``visible()``, as for GetBatchEntriesAdv), each
frame must come from the instance the segment's metadata records, and an
entry that does not extend the buffer contiguously ends that stream (nothing
out of order, twice or past a gap is kept).  The reader takes entries only at
its own position; everything else — a stream that breaks, a LogStore that
dies or comes back empty (another instance: refused), a segment that rolls,
is fenced or completed, a LogStore without the RPC — leaves it on its
ordinary read path (its poll), which decides where segments end.  Each stream
has a deadline (``tailSubscribe.streamTimeout``, then it is opened again from
where it stopped); its first frame must come within ``quorum.requestTimeout``.
Idle, a subscription is a few tasks waiting on their streams: no timer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc

from .proto import QuorumInfo, SegmentMetadata, SegmentState
from .rpc import Code, SubscribeEntriesRequest
from .storage.base import ScanResult

if TYPE_CHECKING:
    from .log import LogHandle

log = logging.getLogger(__name__)

_RETRY = 1.0  # seconds after a subscription was made before an ended one is made again (the reader polls)
_MAX_ENTRIES = 20000  # a reader that does not keep up: the subscription ends, it reads storage in batches
_MAX_BYTES = 16 << 20
_SCAN_AT_LEAST = 0.1  # seconds: while streamed, the reader still looks at storage this often when woken


class TailSubscription:
    def __init__(self, handle: "LogHandle", seg: int, entry: int, quorum: QuorumInfo) -> None:
        self._h = handle
        self.seg = seg
        self.next = entry  # the entry that extends the buffer
        self.buf: deque[tuple[int, bytes]] = deque()
        self.nbytes = 0
        self.live = 0  # streams that sent their first frame and did not end
        self.ended = False  # every stream ended (the reader polls)
        self.eof = False  # a replica sent the end of the completed segment
        self.created = time.monotonic()
        self.delivered = 0  # entries that arrived through a stream and extended the buffer
        self._scanned = 0.0  # when the reader last looked at storage (streaming())
        cfg = handle.config
        self._timeout = cfg["woodpecker.client.quorum.requestTimeout"]
        self._stream_timeout = cfg["woodpecker.client.tailSubscribe.streamTimeout"]
        self._tasks = [asyncio.create_task(self._stream(n, quorum.instance_of(n)),
                                           name=f"picchio-tailsub-{handle.name}-{seg}-{n}")
                       for n in quorum.nodes[: quorum.wq or len(quorum.nodes)]]
        self._running = len(self._tasks)
        if not self._tasks:
            self.ended = True

    # -- the reader's side ------------------------------------------------------------------------
    def take(self, seg: int, entry: int) -> list[tuple[int, bytes]]:
        """The entries from ``entry`` on that arrived (contiguous, ≤ the LAC)."""
        if seg != self.seg:
            return []
        while self.buf and self.buf[0][0] < entry:  # the reader read them from storage meanwhile
            self.nbytes -= len(self.buf.popleft()[1])
        if not self.buf or self.buf[0][0] != entry:
            return []
        out = list(self.buf)
        self.buf.clear()
        self.nbytes = 0
        return out

    def streaming(self, seg: int, poll: float) -> bool:
        """True when a scan of ``seg`` now would find nothing a stream does not
        bring anyway: a stream is live and the reader took everything that
        arrived.  False at least once per ``poll`` (the fallback's pace), and
        per ``_SCAN_AT_LEAST`` s: a stream that is live but stalled (its LogStore
        dropped from the segment by the writer) delays an entry by that much."""
        now = time.monotonic()
        if (seg != self.seg or not self.live or self.buf or self.eof
                or now - self._scanned >= min(poll, _SCAN_AT_LEAST)):
            self._scanned = now
            return False
        return True

    @staticmethod
    def nothing(cursor: Any) -> ScanResult:
        return ScanResult([], cursor, False)

    def close(self) -> None:
        self.ended = True
        for t in self._tasks:
            with contextlib.suppress(RuntimeError):  # its loop is closed already (a reader collected unclosed)
                t.cancel()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 1.0)

    # -- the streams --------------------------------------------------------------------------------
    def _accept(self, resp: Any, expect: str) -> bool:
        """One frame; False ends the stream."""
        if expect and resp.instance != expect:
            log.debug("tail subscription %s/%d: answered by instance %r, not %r", self._h.name, self.seg,
                      resp.instance, expect)
            return False
        st = resp.status
        if st is not None and st.code != Code.OK:
            if st.code == Code.END_OF_FILE:
                self.eof = True
            return False
        added = False
        for e in resp.entries:
            if e.entryId < self.next:
                continue  # another replica delivered it first
            if e.entryId != self.next or e.segId != self.seg:
                log.debug("tail subscription %s/%d: entry %d:%d does not follow %d: stream dropped", self._h.name,
                          self.seg, e.segId, e.entryId, self.next)
                return False
            self.buf.append((e.entryId, e.values))
            self.nbytes += len(e.values)
            self.next += 1
            self.delivered += 1
            added = True
        if added:
            self._h.hub.poke()
        if len(self.buf) > _MAX_ENTRIES or self.nbytes > _MAX_BYTES:
            self.close()  # the reader lags: it catches up from storage, and subscribes again at the tail
        return True

    async def _stream(self, endpoint: str, expect: str) -> None:
        b = self._h.backend
        node = b.node(endpoint)  # type: ignore[attr-defined]
        try:
            while not self.ended:
                req = SubscribeEntriesRequest(b.bucket, b.root, self._h.log_id, self.seg,  # type: ignore[attr-defined]
                                              from_entry_id=self.next, expected_instance=expect).encode()
                call = node.open_stream("SubscribeEntries", req, self._stream_timeout)
                counted = False
                try:
                    first = await asyncio.wait_for(call.read(), self._timeout)
                    if first is grpc.aio.EOF or not self._accept(first, expect):
                        return
                    counted = True
                    self.live += 1
                    while True:
                        resp = await call.read()
                        if resp is grpc.aio.EOF or not self._accept(resp, expect):
                            return
                except grpc.aio.AioRpcError as e:
                    if counted and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue  # the stream lived its deadline out: open it again where it stopped
                    log.debug("tail subscription %s/%d on %s ended: %s", self._h.name, self.seg, endpoint, e.code())
                    return
                except asyncio.TimeoutError:
                    log.debug("tail subscription %s/%d: %s sent nothing within %gs", self._h.name, self.seg,
                              endpoint, self._timeout)
                    return
                finally:
                    if counted:
                        self.live -= 1
                    call.cancel()
        finally:
            self._running -= 1
            if not self._running:
                self.ended = True
                self._h.hub.poke()  # the reader looks at storage now, and polls from here on


def ensure(sub: TailSubscription | None, handle: "LogHandle", seg: int, entry: int,
           meta: SegmentMetadata | None) -> TailSubscription | None:
    """The subscription a reader about to wait at (``seg``, ``entry``) should
    have: None when it has nothing to subscribe to (another mode, a writer of
    the log in this process, a segment not known active), the current one while
    it serves that segment, a new one otherwise."""
    cfg = handle.config
    if (not cfg["woodpecker.client.tailSubscribe.enabled"] or handle.backend.kind != "service" or handle.hub.writers
            or meta is None or meta.state != SegmentState.ACTIVE or meta.quorum is None or not meta.quorum.nodes):
        if sub is not None:
            sub.close()
        return None
    if sub is not None and sub.seg == seg:
        if not sub.ended or sub.eof or time.monotonic() - sub.created < _RETRY:
            return sub  # serving, or ended lately (or the segment completed): the reader polls meanwhile
    if sub is not None:
        sub.close()
    return TailSubscription(handle, seg, entry, meta.quorum)


def cursor_at(cursor: Any, entry: int) -> Any:
    """The reader's storage cursor moved to ``entry`` (its entries came from a stream)."""
    if cursor is not None and getattr(cursor, "objects", True) is None:
        cursor.next_entry = entry
        return cursor
    return None
