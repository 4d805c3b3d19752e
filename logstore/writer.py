"""The writer: one per log at a time, fencing every older one.

``append`` frames the entry into the open block at once (CRC included) and
returns a future.  A flush task ships blocks: immediately when the backend is
idle (group commit — whatever queued during the previous flush goes into the
next block), else when a block is full or has waited ``maxInterval``.  When
the flush task is parked with nothing in hand and the backend can take a block
now (a local disk with the group commit), the block leaves at the end of the
appends' own turn instead (``_send_direct``): same blocks, four event-loop
steps fewer per block — what one-entry blocks of many logs cost most.  Object
storage uploads several blocks in parallel; an ack task resolves them strictly
in block order, so ids grow in call order and completions resolve in that order.
A failed or fenced block fails itself and everything after it: nothing not
acknowledged can appear later in the log.
"""
from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .codec import BlockBuilder, BlockHeader
from .errors import (ConcurrentUpdateError, InvalidArgumentError, LogNotFoundError, LogstoreError,
                     QuorumUnavailableError, StorageError, StorageFullError, WriterClosedError, WriterFencedError)
from .hub import PublishedBlock
from .ids import MessageId
from .producer import ProducerTable, SegmentProducers, Sequencer, check_reserved, recover_table, with_end
from .producer import PID as _PID, SEQ as _SEQ
from .proto import QuorumInfo, SegmentMetadata, SegmentState
from .storage import BlockRef, SegmentWriter
from .tailpush import TailNotifier

if TYPE_CHECKING:
    from .log import LogHandle

log = logging.getLogger(__name__)


_BATCH_SEQ = itertools.count()
_ROLL_OFF = object()  # from _next_batch: no batch, seal the idle segment (see _check_leaving)


def _seq(b: "_Batch") -> int:
    return b.seq


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Batch:
    builder: BlockBuilder = field(default_factory=BlockBuilder)
    futures: list[asyncio.Future] = field(default_factory=list)
    entries: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0  # times re-sent to a new segment after its ensemble lost quorum
    seq: int = field(default_factory=lambda: next(_BATCH_SEQ))  # call order: re-sends keep it
    seqs: list[int] = field(default_factory=list)  # producer sequences of the entries (idempotent writers)
    epoch: int = 0  # the producer's epoch when the batch was filled (producer.Sequencer)

    def expired(self, now: float, budget: float, attempt_time: float) -> bool:
        """True when one more attempt could not finish within the append deadline
        (with a tenth of an attempt to spare for the bookkeeping around it)."""
        return now + 1.1 * attempt_time > self.started + budget


@dataclass
class _Segment:
    id: int
    store: SegmentWriter
    rev: int
    quorum: QuorumInfo | None = None
    broken: bool = False  # a block failed (no quorum, storage down): seal it and move on
    finalized: bool = False  # footer written (completion may still lack its metadata update)
    completed: bool = False  # recorded Completed in metadata
    final_size: int = 0
    created: float = field(default_factory=time.monotonic)
    blocks: list[BlockRef] = field(default_factory=list)
    next_block: int = 0
    next_entry: int = 0
    size: int = 0

    @property
    def lac(self) -> int:
        return self.blocks[-1].last_entry_id if self.blocks else -1


def check_entry(payload: object, properties: object) -> tuple[bytes, dict[str, str]]:
    """Validate an append's arguments → (immutable payload, properties)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"payload must be bytes, got {type(payload).__name__}")
    if properties is not None:
        if not isinstance(properties, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in properties.items()):
            raise InvalidArgumentError("properties must be a dict[str, str]")
    data = bytes(payload)
    if not data and not properties:
        raise InvalidArgumentError("an entry needs a non-empty payload or properties")
    return data, dict(properties or {})


class LogWriter:
    """Appends to one log.  Create it with ``await log.open_writer()``."""

    def __init__(self, handle: "LogHandle", producer_id: str | None = None) -> None:
        self._h = handle
        self._producer_id = producer_id
        self._producers = ProducerTable()  # every producer's state (producer.py), carried from segment to segment
        self._producer: Sequencer | None = None
        self._expiry_ms = int(handle.config["woodpecker.client.producerExpiry"] * 1000)
        cfg = handle.config
        sync = "woodpecker.logstore.segmentSyncPolicy."
        roll = "woodpecker.client.segmentRollingPolicy."
        self._local = handle.backend.kind == "local"
        self._block_limit = cfg[sync + ("maxBytes" if self._local else "maxFlushSize")]
        kind = handle.backend.kind
        self._max_wait = cfg[sync + {"local": "maxIntervalForLocalStorage", "service": "maxIntervalForService"}.get(
            kind, "maxInterval")]
        self._max_bytes = cfg[sync + "maxBytes"]
        self._max_entries = cfg[sync + "maxEntries"]
        self._retries = cfg[sync + "maxFlushRetries"]
        self._retry_interval = cfg[sync + "retryInterval"]
        self._roll_size = cfg[roll + "maxSize"]
        self._roll_age = cfg[roll + "maxInterval"]
        self._roll_blocks = cfg[roll + "maxBlocks"]
        # the append deadline: one storage call takes at most ``attempt_time``; an
        # append is acknowledged or fails with a typed error within ``budget`` of
        # entering its block (local disks have no configured deadline: bounded retries)
        self._attempt_time = {"minio": cfg["minio.requestTimeoutMs"],
                              "service": cfg["woodpecker.client.quorum.requestTimeout"]}.get(kind)
        self._budget = 3 * self._attempt_time if self._attempt_time else None
        self._meta_poll = cfg["woodpecker.client.reader.metaPollInterval"]
        # service mode must compact: it is how segments reach object storage
        self._compact = kind == "service" or (kind == "minio" and cfg["woodpecker.logstore.segmentCompactionPolicy.enabled"])
        # readers in other processes: bump the log's tail key in etcd (local readers use inotify)
        self._notifier: TailNotifier | None = None
        if kind in ("minio", "service") and cfg["woodpecker.client.tailPush.enabled"] \
                and cfg["woodpecker.client.tailPush.etcdNotify"]:
            self._notifier = TailNotifier(handle.meta, handle.log_id, cfg["woodpecker.client.tailPush.minInterval"],
                                          cfg["etcd.requestTimeout"])

        self._seg: _Segment | None = None
        self._open: _Batch | None = None
        self._sealed: deque[_Batch] = deque()
        self._retry: deque[_Batch] = deque()  # unacknowledged batches of a broken segment, in order
        self._inflight: deque[tuple[_Segment, BlockHeader, _Batch, asyncio.Task]] = deque()
        self._buffered_bytes = 0
        self._buffered_entries = 0
        self._error: BaseException | None = None
        self._closing = False
        self._closed = False
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._space = asyncio.Event()
        self._flusher: asyncio.Task | None = None
        self._acker: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        # service mode: the active segment's ensemble names a LogStore being decommissioned
        # (decommission.py) — an idle writer seals it and moves on, rather than keep it there
        self._roll_off = False
        self._creating: tuple[int, QuorumInfo | None, int] | None = None  # made in metadata, storage step pending
        self._parked = False  # the flush loop waits with nothing in hand (_send_direct)
        self._direct_due = False  # a _direct_turn is scheduled
        self.direct_blocks = 0  # blocks sent by append itself (tests, bench)
        self._ack_wake = asyncio.Event()
        # append times (unix ms) stamped into every entry for seeking by time:
        # the wall clock, never going back within a writer (tests may swap it)
        self.clock = _now_ms
        self._last_time = 0

    # -- opening -----------------------------------------------------------
    async def _start(self) -> None:
        h = self._h
        for _ in range(50):
            versions = await h.meta.segments(h.name)
            for v in versions:
                if v.value.state == SegmentState.ACTIVE:
                    await h.complete_segment(v)
            recovered = any(v.value.state == SegmentState.ACTIVE for v in versions)
            self._producers = await recover_table(h, await h.meta.segments(h.name) if recovered else versions)
            if self._producer_id is not None:
                self._producer = Sequencer(self._producer_id, self._producers)
            lm = await h.meta.require_log(h.name)
            next_id = max([v.value.seg_no + 1 for v in versions] + [lm.value.truncated_segment_id + 1, 0])
            seg = await self._new_segment(next_id)
            if seg is not None:
                self._seg = seg
                break
        else:
            raise ConcurrentUpdateError(f"log {h.name!r}: could not take over the log (segments kept changing)")
        # append times start no earlier than any time the log's metadata records
        self._last_time = max([0] + [max(v.value.create_time, v.value.completion_time) for v in versions])
        if self._compact:
            # re-read: the segments recovered just above are Completed now and
            # must reach object storage too (not wait for yet another writer)
            for v in await h.meta.segments(h.name):
                if v.value.state == SegmentState.COMPLETED and v.value.seg_no != self._seg.id:
                    self._spawn(h.compact_segment(v.value.seg_no))
        h.hub.writers += 1
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"picchio-flush-{h.name}")
        self._acker = asyncio.create_task(self._ack_loop(), name=f"picchio-ack-{h.name}")
        writer_watch(h.client).add(self)

    @property
    def _watched(self) -> bool:
        return not (self._closing or self._closed or self._error is not None)

    def _deleted(self) -> None:
        """The log is gone (WriterWatch): stop.  Local and service segments are
        also fenced by the deletion, so their next block fails at once."""
        self._fail(LogNotFoundError(f"log {self._h.name!r} was deleted; this writer can no longer append"))

    @property
    def _may_leave(self) -> bool:
        seg = self._seg
        return not (self._h.backend.kind != "service" or seg is None or seg.quorum is None or self._roll_off
                    or seg.completed)

    def _check_leaving(self, marked: set[str]) -> None:
        """Ask the flush loop to seal the active segment when its ensemble
        names a LogStore being decommissioned (``marked``: read once per poll
        by WriterWatch for all writers).  A writer that appends finds out
        sooner (that LogStore refuses the block, the segment is degraded and
        rolls); this is for one that is idle, which would otherwise keep the
        LogStore's copy outside object storage indefinitely."""
        if not self._may_leave:
            return
        seg = self._seg
        assert seg is not None and seg.quorum is not None
        leaving = marked.intersection(seg.quorum.nodes)
        if leaving:
            log.info("log %r: segment %d is on %s, being decommissioned: sealing it", self._h.name, seg.id,
                     ", ".join(sorted(leaving)))
            self._roll_off = True
            self._wake.set()

    async def _fenced_or_deleted(self, e: WriterFencedError) -> LogstoreError:
        try:
            if await self._h.meta.get_log(self._h.name) is None:
                return LogNotFoundError(f"log {self._h.name!r} was deleted; this writer can no longer append")
        except LogstoreError:
            pass
        return e

    async def _new_segment(self, seg_id: int) -> _Segment | None:
        """Create segment ``seg_id`` in metadata (create-only) and storage; None if
        another writer created it first.  Resumable: when the storage step fails
        (a full disk, no quorum) after the metadata entry was made, the next call
        finishes that same entry — not mistake it for another writer's."""
        h = self._h
        made = self._creating if self._creating is not None and self._creating[0] == seg_id else None
        if made is None:
            quorum = await h.backend.choose_quorum()
            start = SegmentProducers(self._producer_id or "", self._pruned_producers()).encode()
            born = _now_ms()
            if not await h.meta.create_segment(h.name, SegmentMetadata(seg_no=seg_id, create_time=born,
                                                                       quorum=quorum, producers=start)):
                return None
            made = self._creating = (seg_id, quorum, born)
        created = await h.meta.get_segment(h.name, seg_id)
        if created is None or created.value.state != SegmentState.ACTIVE or created.value.create_time != made[2]:
            self._creating = None  # deleted, or completed by a writer that took over meanwhile
            return None
        quorum = made[1]
        store = await h.backend.create_segment(h.log_id, seg_id, quorum=quorum)
        self._creating = None
        if self._notifier is not None and h.backend.kind == "service":
            # entries are readable on the LogStores only once the LAC reached them
            notify = self._notifier.notify
            store.on_visible = lambda lac: notify(seg_id, lac)
        return _Segment(seg_id, store, created.mod_revision, quorum)

    def _pruned_producers(self) -> ProducerTable:
        """The producer table without producers idle past ``producerExpiry``
        (never this writer's own)."""
        self._producers.prune(_now_ms(), self._expiry_ms, keep=self._producer_id)
        return self._producers

    @property
    def last_sequence(self) -> int:
        """Idempotent writers: the highest sequence of this producer acknowledged
        in the log (−1: none, or forgotten after ``producerExpiry``).  Right
        after ``open_writer`` it is what the log itself holds — including what
        a crashed or fenced predecessor got stored — so resume at ``+ 1``."""
        if self._producer is None:
            raise InvalidArgumentError("last_sequence needs a writer opened with producer_id")
        return self._producer.state.last_seq

    def _spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    # -- appending -----------------------------------------------------------
    async def append(self, payload: bytes, properties: dict[str, str] | None = None,
                     sequence: int | None = None) -> MessageId:
        """Append one entry; returns its id once it is durable.  A writer opened
        with ``producer_id`` stamps it with ``sequence`` (default: the next one);
        a sequence already in the log returns the original id instead of writing
        again, a gap raises SequenceGapError (see producer.py)."""
        data, props = check_entry(payload, properties)
        check_reserved(props)
        if sequence is not None and self._producer is None:
            raise InvalidArgumentError("sequence= needs a writer opened with open_writer(producer_id=...)")
        self._check_open()
        while self._buffered_bytes >= self._max_bytes or self._buffered_entries >= self._max_entries:
            self._space.clear()
            await self._space.wait()
            self._check_open()
        seq = None
        if self._producer is not None:  # admitted here, with no await until it is queued: call order = sequence order
            got = self._producer.admit(sequence)
            if isinstance(got, MessageId):
                return got
            if isinstance(got, asyncio.Future):
                return await asyncio.shield(got)  # a retry of an append still in flight: the same outcome
            seq = got
            props[_PID], props[_SEQ] = self._producer.pid, str(seq)
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
        self._last_time = max(self._last_time, self.clock())
        size = batch.builder.add(data, props or None, self._last_time)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        batch.futures.append(fut)
        batch.entries.append((data, props))
        if seq is not None:
            batch.seqs.append(seq)
            batch.epoch = self._producer.epoch  # type: ignore[union-attr]
            self._producer.pending[seq] = fut  # type: ignore[union-attr]
            # a caller that gives up (timeout, cancel) must not cancel the outcome its retry will wait for
            fut.add_done_callback(_retrieved)
            fut = asyncio.shield(fut)
        self._buffered_bytes += size
        self._buffered_entries += 1
        if batch.builder.payload_bytes >= self._block_limit:
            self._sealed.append(batch)
            self._open = None
        if not self._parked:
            self._wake.set()
        elif not self._direct_due:  # the appends of this turn join the block first, as with the flush loop
            self._direct_due = True
            asyncio.get_running_loop().call_soon(self._direct_turn)
        return await fut

    def _check_open(self) -> None:
        if self._error is not None:
            if isinstance(self._error, LogstoreError):
                raise type(self._error)(str(self._error))
            raise WriterClosedError(f"writer failed earlier: {self._error!r}")
        if self._closing or self._closed:
            raise WriterClosedError("writer is closed")

    # -- flushing --------------------------------------------------------------
    def _direct_turn(self) -> None:
        """At the end of the turn in which appends found the flush loop parked:
        send their block from here (:meth:`_send_direct`), or wake the loop."""
        self._direct_due = False
        if not self._send_direct():
            self._wake.set()

    def _send_direct(self) -> bool:
        """Send the open block without the flush loop when it would do nothing
        else with it: it is parked with nothing in hand, the segment takes
        another block now (a local disk: one at a time), no roll is due, nothing
        waits for a re-send.  Waking the flush loop and an upload task instead
        costs four event-loop steps per block, which is most of an append when
        every block holds one entry (many logs, a few appends in flight each).
        False: the flush loop's path (it decides everything else: rolls, broken
        segments, retries, producers' epochs, closing)."""
        seg, batch = self._seg, self._open
        if (seg is None or batch is None or not self._parked or self._error is not None or self._closing
                or self._roll_off or self._sealed or self._retry or self._producer is not None or seg.broken
                or seg.finalized
                or len(self._inflight) >= seg.store.parallel or self._roll_due(seg)):
            return False
        header = batch.builder.header(seg.next_block, seg.next_entry)
        try:
            stored = seg.store.start_block(header, batch.builder.pieces)
        except LogstoreError:
            return False  # (storage closed) the flush loop's path raises it as a typed error
        if stored is None:
            return False
        self._open = None
        seg.next_block += 1
        seg.next_entry += batch.builder.count
        seg.size += batch.builder.length
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        stored.add_done_callback(lambda f: self._direct_stored(f, done, seg, header, batch))
        self._inflight.append((seg, header, batch, done))
        self.direct_blocks += 1
        self._ack_wake.set()
        return True

    def _direct_stored(self, stored: asyncio.Future, done: asyncio.Future, seg: _Segment, header: BlockHeader,
                       batch: _Batch) -> None:
        """A directly sent block's first attempt ended: its outcome, or the
        upload path's retries (as if its first attempt had failed there)."""
        if stored.cancelled():
            done.set_exception(StorageError(f"block {seg.id}/{header.block_number}: the write was cancelled"))
            return
        e = stored.exception()
        if e is None:
            done.set_result(stored.result())
            return
        e = seg.store.block_error(header, e)
        if not isinstance(e, (StorageError, OSError)):
            done.set_exception(e)  # fenced, deleted: no retry
            return
        t = asyncio.create_task(self._upload(seg, header, batch, failed=e))
        self._background.add(t)
        t.add_done_callback(self._background.discard)
        t.add_done_callback(lambda t: _settle_from(t, done))

    def _take_ready(self) -> _Batch | None:
        if self._retry:
            return self._retry.popleft()
        if self._sealed:
            return self._sealed.popleft()
        b = self._open
        if b is None or self._direct_due:  # (the open block is _direct_turn's, scheduled this turn)
            return None
        idle = not self._inflight
        if idle or self._closing or time.monotonic() - b.started >= self._max_wait:
            self._open = None
            return b
        return None

    async def _next_batch(self) -> _Batch | None:
        while True:
            if self._error is not None:
                return None
            b = self._take_ready()
            if b is not None:
                return b
            if self._closing and self._open is None and not self._sealed and not self._retry:
                return None
            if self._roll_off and self._open is None and not self._inflight:
                return _ROLL_OFF  # idle: nothing is buffered or in flight
            self._wake.clear()
            timeout = None
            if self._open is not None and not self._direct_due:
                timeout = max(0.0, self._max_wait - (time.monotonic() - self._open.started))
            # holding nothing: append may send a block itself (_direct_turn wakes us when it does not)
            self._parked = self._open is None or self._direct_due
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._parked = False

    async def _flush_loop(self) -> None:
        seg = self._seg
        assert seg is not None
        batch: _Batch | None = None
        try:
            while True:
                batch = None
                # wait for a free upload slot first: entries keep queuing meanwhile (group commit)
                while len(self._inflight) >= seg.store.parallel and self._error is None:
                    self._acked.clear()
                    self._parked = True  # holding nothing: once a slot is free, append may send a block itself
                    try:
                        await self._acked.wait()
                    finally:
                        self._parked = False
                batch = await self._next_batch()
                if batch is None:
                    break
                if batch is _ROLL_OFF:
                    batch = None
                    seg = await self._seal_idle(seg)
                    continue
                if seg.broken:
                    self._put_back(batch)
                    batch = None
                    try:
                        seg = await self._replace_broken(seg)
                    except (WriterFencedError, LogNotFoundError):
                        raise
                    except LogstoreError as e:  # no quorum, storage or etcd down
                        await self._fail_for_now(e)
                    continue
                try:
                    seg = await self._maybe_roll(seg)
                except (WriterFencedError, LogNotFoundError):
                    raise
                except LogstoreError as e:
                    # the roll stopped half-way (etcd hung, no quorum for a new ensemble):
                    # the broken path finishes it on the next append
                    seg.broken = True
                    self._put_back(batch)
                    batch = None
                    await self._fail_for_now(e)
                    continue
                if seg.broken:  # a block in flight failed while the roll drained: re-send in call order
                    self._put_back(batch)
                    batch = None
                    continue
                if self._producer is not None and batch.seqs and batch.epoch != self._producer.epoch:
                    self._fail_batch(batch, self._producer.error)  # held across a failure of an earlier one
                    batch = None
                    continue
                header = batch.builder.header(seg.next_block, seg.next_entry)
                seg.next_block += 1
                seg.next_entry += batch.builder.count
                seg.size += batch.builder.length
                task = asyncio.create_task(self._upload(seg, header, batch))
                self._inflight.append((seg, header, batch, task))
                batch = None
                self._ack_wake.set()
        except WriterFencedError as e:
            self._fail(await self._fenced_or_deleted(e), batch)
        except BaseException as e:  # noqa: BLE001 - any failure stops the writer, failing what is pending
            self._fail(e, batch)
        finally:
            self._ack_wake.set()

    async def _seal_idle(self, seg: _Segment) -> _Segment:
        """Seal ``seg`` (idle, its ensemble names a leaving LogStore) and open
        the next segment on an ensemble without it.  A failure half-way leaves
        ``seg`` broken: the next append finishes the roll (the broken path)."""
        self._roll_off = False
        if seg.broken or seg.completed:
            return seg
        try:
            await self._complete(seg)
            return await self._next_segment(seg)
        except (WriterFencedError, LogNotFoundError):
            raise
        except LogstoreError as e:
            log.warning("log %r: sealing segment %d off a leaving LogStore failed (%r); the next append retries",
                        self._h.name, seg.id, e)
            seg.broken = True
            return seg

    async def _fail_for_now(self, error: LogstoreError) -> None:
        """The appends waiting now fail with ``error`` (typed); the writer stays
        usable, and the next append tries again — no busy loop while storage,
        etcd or the quorum is down."""
        self._fail_pending(error)
        while not (self._open or self._sealed or self._retry or self._closing or self._error):
            self._wake.clear()
            await self._wake.wait()

    def _roll_due(self, seg: _Segment) -> bool:
        """True when ``seg`` must be sealed before its next block: big, old, or
        (service mode) a replica was dropped — seal then rather than go on with
        fewer copies.  An empty segment never rolls."""
        return seg.next_block > 0 and (seg.size >= self._roll_size or seg.next_block >= self._roll_blocks
                                       or time.monotonic() - seg.created >= self._roll_age
                                       or getattr(seg.store, "degraded", False))

    async def _maybe_roll(self, seg: _Segment) -> _Segment:
        if not self._roll_due(seg):
            return seg
        if getattr(seg.store, "degraded", False):
            log.warning("log %r: segment %d lost a replica; sealing it at %d and moving to a fresh ensemble",
                        self._h.name, seg.id, seg.lac)
        await self._drain()
        if seg.broken:
            return seg  # the broken path seals it and re-sends what failed, in order
        await self._complete(seg)
        return await self._next_segment(seg)

    async def _next_segment(self, seg: _Segment) -> _Segment:
        new = await self._new_segment(seg.id + 1)
        if new is None:
            raise WriterFencedError(f"log {self._h.name!r}: segment {seg.id + 1} was created by another writer")
        self._seg = new
        return new

    async def _replace_broken(self, seg: _Segment) -> _Segment:
        """A block of ``seg`` could not reach its quorum.  Once the blocks in flight
        have settled (their batches wait in ``_retry``, in order), seal ``seg`` at
        the last entry this writer acknowledged — so nothing unacknowledged in it
        can ever be read — and continue on a new segment with a fresh ensemble,
        where the waiting batches are sent again.  The writer surfaces no error
        while some quorum of LogStores is available."""
        while self._inflight:
            self._acked.clear()
            await self._acked.wait()
        await self._complete(seg)
        new = await self._next_segment(seg)
        log.warning("log %r: segment %d lost its quorum; sealed at %d, continuing on segment %d with %s",
                    self._h.name, seg.id, seg.lac, new.id, new.quorum.nodes if new.quorum else "?")
        return new

    def _requeue(self, batch: _Batch, error: BaseException, own_failure: bool) -> None:
        """Send ``batch`` again on the next segment — unless its own write already
        spent its retries on a storage error, or another attempt could not finish
        within its append deadline: then it fails now with ``error``."""
        batch.attempts += 1
        late = (self._budget is not None and batch.expired(time.monotonic(), self._budget, self._attempt_time)
                or batch.attempts > 3 or self._producer is not None and batch.epoch != self._producer.epoch)
        if late or own_failure and not isinstance(error, QuorumUnavailableError):
            self._fail_batch(batch, error)
        else:
            bisect.insort(self._retry, batch, key=_seq)

    def _put_back(self, batch: _Batch) -> None:
        """Return a taken batch to its queue so call order holds: every batch
        waiting for a re-send is older than every batch never sent."""
        if batch.attempts:
            bisect.insort(self._retry, batch, key=_seq)
        else:
            self._sealed.appendleft(batch)

    def _fail_pending(self, error: BaseException) -> None:
        """Fail every batch not yet sent (the writer itself stays usable)."""
        pending = list(self._retry) + list(self._sealed) + ([self._open] if self._open else [])
        self._retry.clear()
        self._sealed.clear()
        self._open = None
        for b in pending:
            self._fail_batch(b, error)

    async def _upload(self, seg: _Segment, header: BlockHeader, batch: _Batch,
                      failed: BaseException | None = None) -> BlockRef:
        """Store one block, retrying storage errors (``failed``: how the first
        attempt, sent directly, ended)."""
        delay = self._retry_interval
        for attempt in range(1, self._retries + 1):
            try:
                if failed is not None:
                    e, failed = failed, None
                    raise e
                return await seg.store.write_block(header, batch.builder.pieces, batch.entries,
                                                   times=batch.builder.times)
            except (StorageError, OSError) as e:
                if self._local and (isinstance(e, StorageFullError) or getattr(e, "errno", 0) == 28):
                    raise  # a full local disk does not empty itself in seconds: say so at once
                late = self._budget is not None and batch.expired(time.monotonic() + delay, self._budget,
                                                                  self._attempt_time)
                if attempt == self._retries or late:
                    kind = type(e) if isinstance(e, StorageError) else StorageError
                    raise kind(f"block {seg.id}/{header.block_number} failed after {attempt} attempts "
                               f"({time.monotonic() - batch.started:.1f}s): {e}") from e
                log.warning("block %s/%s write failed (attempt %d/%d): %s", seg.id, header.block_number,
                            attempt, self._retries, e)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _ack_loop(self) -> None:
        while True:
            if not self._inflight:
                if self._flusher is not None and self._flusher.done():
                    return
                self._ack_wake.clear()
                await self._ack_wake.wait()
                continue
            seg, header, batch, task = self._inflight[0]
            try:
                ref = await task
            except (QuorumUnavailableError, StorageError) as e:
                # the block may or may not be stored: seal the segment at the last
                # acknowledged entry (so it can never be read) and go on in a new one
                self._inflight.popleft()
                seg.broken = True
                self._requeue(batch, e, own_failure=True)
                self._acked.set()
                self._wake.set()
                continue
            except WriterFencedError as e:
                self._inflight.popleft()
                self._fail(await self._fenced_or_deleted(e), batch)
                continue
            except BaseException as e:  # noqa: BLE001
                self._inflight.popleft()
                self._fail(e, batch)
                continue
            self._inflight.popleft()
            if self._error is not None:
                self._fail_batch(batch, self._error)
                continue
            if seg.broken:  # an earlier block of this segment failed: never ack out of order
                self._requeue(batch, StorageError(f"segment {seg.id}: an earlier block failed and the append "
                                                  "deadline passed before it could be re-sent"), own_failure=False)
                self._acked.set()
                continue
            seg.blocks.append(ref)
            seg.store.acked(ref.last_entry_id)
            if self._producer is not None:
                self._producer.acked(batch.seqs, seg.id, header.first_entry_id)
            for k, fut in enumerate(batch.futures):
                if not fut.done():
                    fut.set_result(MessageId(seg.id, header.first_entry_id + k))
            self._release(batch)
            self._h.hub.publish(PublishedBlock(seg.id, header.first_entry_id, tuple(batch.entries),
                                               batch.builder.payload_bytes))
            if self._notifier is not None and seg.store.on_visible is None:
                self._notifier.notify(seg.id, ref.last_entry_id)
            self._acked.set()

    def _release(self, batch: _Batch) -> None:
        self._buffered_bytes -= batch.builder.length
        self._buffered_entries -= batch.builder.count
        self._space.set()

    def _fail_batch(self, batch: _Batch, error: BaseException) -> None:
        for fut in batch.futures:
            if not fut.done():
                fut.set_exception(_copy_error(error))
        self._release(batch)
        if self._producer is not None and batch.seqs and self._producer.failed(batch.seqs, batch.futures, batch.epoch,
                                                                              error):
            # later sequences must not land after a hole: fail every batch not yet
            # sent now; those in flight fail when they come back for a re-send
            self._fail_pending(error)

    def _fail(self, error: BaseException, batch: _Batch | None = None) -> None:
        """Stop the writer: this batch and every later one fail with ``error``."""
        if self._error is None:
            self._error = error if isinstance(error, Exception) else WriterClosedError("writer was cancelled")
            if isinstance(error, Exception):
                log.warning("writer of log %r stopped: %r", self._h.name, error)
        if batch is not None:
            self._fail_batch(batch, self._error)
        self._fail_pending(self._error)
        self._wake.set()
        self._acked.set()
        self._space.set()
        self._ack_wake.set()

    async def _drain(self) -> None:
        while self._inflight and self._error is None:
            self._acked.clear()
            await self._acked.wait()
        if self._error is not None:
            raise _copy_error(self._error)

    async def _complete(self, seg: _Segment) -> None:
        """Footer, then metadata Completed (CAS: losing it means we were fenced).
        Resumable: after a failure (disk full, etcd or quorum down) calling it
        again finishes the steps not yet done — never a false 'fenced'."""
        h = self._h
        if seg.completed:
            return
        if not seg.finalized:
            seg.final_size = await seg.store.finalize(seg.blocks, seg.lac)
            seg.finalized = True
            await seg.store.close()
        meta = SegmentMetadata(seg_no=seg.id, create_time=0, state=SegmentState.COMPLETED,
                               completion_time=_now_ms(), last_entry_id=seg.lac, size=seg.final_size)
        current = await h.meta.get_segment(h.name, seg.id)
        if current is None:
            await h.meta.require_log(h.name)  # LogNotFoundError when the log was deleted
        if current is not None and current.mod_revision != seg.rev and current.value.state == SegmentState.COMPLETED \
                and current.value.last_entry_id == seg.lac:
            seg.completed = True  # our own update landed though its reply was lost (or a fencer agreed)
        elif current is None or current.mod_revision != seg.rev or current.value.state != SegmentState.ACTIVE:
            raise WriterFencedError(f"log {h.name!r}: segment {seg.id} was completed by another writer")
        else:
            meta.create_time, meta.quorum = current.value.create_time, current.value.quorum
            # nothing is in flight: the table is exactly the producers' state at the segment's end
            meta.producers = with_end(current.value.producers, self._producer_id or "", self._pruned_producers())
            try:
                await h.meta.update_segment(h.name, meta, seg.rev)
            except ConcurrentUpdateError:
                raise WriterFencedError(f"log {h.name!r}: segment {seg.id} was completed by another writer") from None
            seg.completed = True
        h.hub.segment_completed(seg.id, seg.lac)
        if self._notifier is not None:  # readers at its end move on to the next segment now
            self._notifier.notify(seg.id, seg.lac)
        if self._compact:
            self._spawn(h.compact_segment(seg.id))

    # -- closing -----------------------------------------------------------------
    async def close(self) -> None:
        """Flush what is buffered, complete the segment, wait for compaction."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        writer_watch(self._h.client).discard(self)
        try:
            if self._flusher is not None:
                await self._flusher
            if self._acker is not None:
                await self._acker
            if self._error is None and self._seg is not None and not self._seg.broken:
                await self._complete(self._seg)
            elif self._seg is not None and not self._seg.finalized:
                await self._seg.store.close()
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            if self._notifier is not None:
                await self._notifier.close()
        except OSError as e:  # (backends raise typed errors; this is the last guard)
            raise StorageError(f"log {self._h.name!r}: closing the writer failed: {e}") from e
        finally:
            self._closed = True
            self._h.hub.writers -= 1
            self._h.writer_closed(self)

    @property
    def fenced(self) -> bool:
        return isinstance(self._error, WriterFencedError)

    async def __aenter__(self) -> "LogWriter":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WriterWatch:
    """The open writers of one client, polled together: every
    ``reader.metaPollInterval`` one etcd transaction per 64 writers asks which
    logs are gone (a log deleted by another client stops its writer with
    LogNotFoundError within about that interval), and — service mode — one read
    of the decommission marks serves every writer.  One task per client, not one
    timer and one or two etcd requests a second per open writer: Milvus keeps
    hundreds of logs open, most of them idle."""

    def __init__(self, meta, interval: float) -> None:
        self._meta, self._interval = meta, interval
        self._writers: set[LogWriter] = set()
        self._known: dict[str, tuple[int, int]] = {}  # name → (mod revision, log id): decoded once
        self._task: asyncio.Task | None = None
        self.polls = 0  # rounds that checked at least one writer (tests)

    def add(self, w: LogWriter) -> None:
        self._writers.add(w)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="picchio-writer-watch")

    def discard(self, w: LogWriter) -> None:
        self._writers.discard(w)

    async def stop(self) -> None:
        t, self._task = self._task, None
        if t is not None and not t.done():
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)

    async def _run(self) -> None:
        while self._writers:
            await asyncio.sleep(self._interval)
            try:
                await self._poll()
            except Exception as e:  # noqa: BLE001 - the watch outlives one bad round
                log.warning("writer watch: poll failed: %r", e)

    async def _poll(self) -> None:
        ws = [w for w in self._writers if w._watched]
        self._writers.intersection_update(ws)  # failed writers not yet closed: nothing left to watch
        if not ws:
            return
        self.polls += 1
        try:
            names = {w._h.name for w in ws}
            for gone in self._known.keys() - names:
                del self._known[gone]
            ids = await self._meta.log_ids(sorted(names), self._known)
        except LogstoreError:
            ids = None  # etcd unreachable says nothing about deletion; appends report their own errors
        if ids is not None:
            for w in ws:
                if w._watched and ids.get(w._h.name) != w._h.log_id:  # gone, or deleted and made anew
                    self._writers.discard(w)
                    w._deleted()
        leaving = [w for w in ws if w._watched and w._may_leave]
        if leaving:
            from .decommission import marked
            try:
                marks = set(await marked(self._meta))
            except LogstoreError:
                return  # etcd unreachable: the next poll tries again
            for w in leaving:
                w._check_leaving(marks)


def writer_watch(client) -> WriterWatch:
    """The client's WriterWatch (made on first use)."""
    w = getattr(client, "_writer_watch", None)
    if w is None:
        w = client._writer_watch = WriterWatch(client.meta, client.config["woodpecker.client.reader.metaPollInterval"])
    return w


def _settle_from(task: asyncio.Future, fut: asyncio.Future) -> None:
    if fut.done():
        return
    if task.cancelled():
        fut.set_exception(WriterClosedError("writer was cancelled"))
    elif task.exception() is not None:
        fut.set_exception(task.exception())
    else:
        fut.set_result(task.result())


def _retrieved(fut: asyncio.Future) -> None:
    """Mark a shielded outcome seen, so one no caller waits for any more is not logged as lost."""
    if not fut.cancelled():
        fut.exception()


def _copy_error(e: BaseException) -> BaseException:
    if isinstance(e, LogstoreError):
        return type(e)(str(e)) if not hasattr(e, "log") else e
    return StorageError(f"writer failed: {e!r}")
