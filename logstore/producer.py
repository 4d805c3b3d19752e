"""Idempotent producers: exactly-once appends across writer restarts.

A writer opened with ``producer_id`` stamps every entry with two reserved
properties, ``picchio.pid`` (the producer id) and ``picchio.seq`` (its
sequence number, decimal).  They are ordinary ``LogMessageLayout`` properties,
so Woodpecker's readers (and picchio's) see them like any other property.

Sequences are consecutive per producer: the first append of a producer the
log does not know carries 0, every later one ``last + 1`` (as in Kafka).  An
append whose sequence is already in the log returns the original ``MessageId``
(or, for one older than the ids remembered, raises
:class:`DuplicateSequenceError`); one beyond the next expected raises
:class:`SequenceGapError`.  Because ids grow in call order and a failed block
fails everything queued after it, the log never holds a producer's sequences
out of order or with a hole.

Where the state lives (bounded: per producer, not per entry).  Each segment's
metadata carries, in field 101 of ``SegmentMetadata`` (a field Woodpecker does
not know: protobuf skips it when decoding and Go keeps it when re-encoding):
the producer table as of the segment's **start** (written when the segment is
created), the producer id of the writer that created it, and the table as of
its **end** (written when that writer completes it).  A producer's entry is
``(last sequence, last time, the last few runs of (sequence → MessageId))``;
a run is a stretch of consecutive sequences at consecutive entry ids of one
segment, so any id in it is computed, not stored.

Recovery cost.  Opening a writer takes the newest segment carrying field 101:
its end table if it has one (a clean close or a roll: nothing is read), its
start table if a plain writer created it, else its start table plus a scan of
that one segment for its producer's entries (the writer crashed or was
fenced before completing it).  Never more than one segment is read.

Expiry.  A producer whose last acknowledged append is older than
``woodpecker.client.producerExpiry`` (for one recovered from a crashed
segment: older than that segment's completion) is dropped from the table the
next time a writer opens or a segment is created or completed; after that the
log treats it as new (``last_sequence`` −1, next sequence 0), so a retry of an
entry appended before the expiry is no longer recognised.  At most
``MAX_PRODUCERS`` producers are kept per log; beyond that the longest-idle
ones are forgotten first.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import (CorruptionError, DuplicateSequenceError, InvalidArgumentError, SequenceGapError, StorageError,
                     WriterClosedError)
from .ids import MessageId
from .proto import SegmentState, _signed, decode_layout, f_bytes, f_int, f_str, fields

if TYPE_CHECKING:
    from .log import LogHandle
    from .meta import Versioned
    from .proto import SegmentMetadata

log = logging.getLogger(__name__)

PID, SEQ = "picchio.pid", "picchio.seq"
RESERVED_PREFIX = "picchio."
MAX_RUNS = 4  # runs (≈ segments) whose ids a producer's retries can get back
MAX_PRODUCERS = 1000  # bounds each segment's metadata (≈ 150 bytes per producer per table)
_SCAN_BYTES = 4 << 20


def now_ms() -> int:
    return int(time.time() * 1000)


def check_reserved(props: dict[str, str]) -> None:
    """Plain appends may not forge producer stamps: recovery trusts them."""
    bad = [k for k in props if k.startswith(RESERVED_PREFIX)]
    if bad:
        raise InvalidArgumentError(f"property names starting with {RESERVED_PREFIX!r} are reserved "
                                   f"(got {', '.join(sorted(bad))}); use open_writer(producer_id=...) and sequence=")


@dataclass
class Run:
    """Sequences ``first_seq..last_seq`` stored at entries ``first_entry..`` of segment ``seg``."""
    seg: int
    first_seq: int
    first_entry: int
    last_seq: int

    def id_of(self, seq: int) -> MessageId | None:
        if self.first_seq <= seq <= self.last_seq:
            return MessageId(self.seg, self.first_entry + seq - self.first_seq)
        return None

    def encode(self) -> bytes:
        return f_int(1, self.seg) + f_int(2, self.first_seq) + f_int(3, self.first_entry) + f_int(4, self.last_seq)

    @classmethod
    def decode(cls, b: bytes) -> "Run":
        v = {n: _signed(x) for n, _, x in fields(b)}  # type: ignore[arg-type]
        return cls(v.get(1, 0), v.get(2, 0), v.get(3, 0), v.get(4, 0))


@dataclass
class Producer:
    id: str
    last_seq: int = -1
    last_ms: int = 0
    runs: list[Run] = field(default_factory=list)  # oldest first, at most MAX_RUNS

    def id_of(self, seq: int) -> MessageId | None:
        for r in reversed(self.runs):
            mid = r.id_of(seq)
            if mid is not None:
                return mid
        return None

    def observe(self, seq: int, mid: MessageId, when_ms: int) -> None:
        """One entry of this producer, in log order."""
        r = self.runs[-1] if self.runs else None
        if r is not None and r.seg == mid.segment_id and seq == r.last_seq + 1 \
                and mid.entry_id == r.first_entry + seq - r.first_seq:
            r.last_seq = seq
        else:
            self.runs.append(Run(mid.segment_id, seq, mid.entry_id, seq))
            del self.runs[:-MAX_RUNS]
        self.last_seq, self.last_ms = seq, max(self.last_ms, when_ms)

    def encode(self) -> bytes:
        return (f_str(1, self.id) + f_int(2, self.last_seq + 1) + f_int(3, self.last_ms)
                + b"".join(f_bytes(4, r.encode()) for r in self.runs))

    @classmethod
    def decode(cls, b: bytes) -> "Producer":
        p = cls("")
        for n, _, v in fields(b):
            if n == 1:
                p.id = v.decode()  # type: ignore[union-attr]
            elif n == 2:
                p.last_seq = _signed(v) - 1  # type: ignore[arg-type]  (stored +1: 0 is omitted by proto3)
            elif n == 3:
                p.last_ms = _signed(v)  # type: ignore[arg-type]
            elif n == 4:
                p.runs.append(Run.decode(v))  # type: ignore[arg-type]
        return p


class ProducerTable(dict[str, Producer]):
    """Producer id → state.  Encoded as repeated ``Producer`` messages."""

    def prune(self, now: int, expiry_ms: int, keep: str | None = None) -> None:
        for pid in [p for p, st in self.items() if p != keep and st.last_ms < now - expiry_ms]:
            del self[pid]
        if len(self) > MAX_PRODUCERS:
            idle = sorted((st.last_ms, p) for p, st in self.items() if p != keep)
            for _, pid in idle[:len(self) - MAX_PRODUCERS]:
                log.warning("more than %d producers in one log: forgetting %r (the longest idle)", MAX_PRODUCERS, pid)
                del self[pid]

    def copy(self) -> "ProducerTable":  # type: ignore[override]
        return ProducerTable((k, Producer(v.id, v.last_seq, v.last_ms, [Run(**vars(r)) for r in v.runs]))
                             for k, v in self.items())

    def encode(self) -> bytes:
        return b"".join(f_bytes(1, self[k].encode()) for k in sorted(self))

    @classmethod
    def decode(cls, b: bytes) -> "ProducerTable":
        t = cls()
        for n, _, v in fields(b):
            if n == 1:
                p = Producer.decode(v)  # type: ignore[arg-type]
                t[p.id] = p
        return t


@dataclass
class SegmentProducers:
    """``SegmentMetadata`` field 101: tables at the segment's start and end, and
    the producer id of the writer that created it ("" = a plain writer, whose
    segment holds no producer entries, so its end table is its start table)."""
    writer: str
    start: ProducerTable
    end: ProducerTable | None = None

    def encode(self) -> bytes:
        return (f_int(1, 1) + f_str(2, self.writer) + f_bytes(3, self.start.encode())
                + (f_int(4, 1) + f_bytes(5, self.end.encode()) if self.end is not None else b""))

    @classmethod
    def decode(cls, b: bytes) -> "SegmentProducers | None":
        if not b:
            return None  # a segment written by Woodpecker or an older picchio: holds no producer entries
        v = {n: x for n, _, x in fields(b)}
        if v.get(1) != 1:
            raise CorruptionError(f"segment producer state has unknown version {v.get(1)!r}")
        return cls(v.get(2, b"").decode(), ProducerTable.decode(v.get(3, b"")),  # type: ignore[union-attr,arg-type]
                   ProducerTable.decode(v.get(5, b"")) if v.get(4) else None)  # type: ignore[arg-type]


def with_end(raw: bytes, writer: str, table: ProducerTable) -> bytes:
    """Field 101 of a segment being completed by its own writer: its start
    table as created, plus ``table`` as the end table."""
    snap = SegmentProducers.decode(raw) or SegmentProducers(writer, ProducerTable())
    snap.end = table
    return snap.encode()


def observe_entries(table: ProducerTable, seg: int, first_entry: int, entries, when_ms: int) -> None:
    """Fold stamped entries (``(payload, properties)``, in id order) into ``table``."""
    for k, (_, props) in enumerate(entries):
        pid = props.get(PID)
        if pid is None:
            continue
        try:
            seq = int(props[SEQ])
        except (KeyError, ValueError):
            raise CorruptionError(f"entry {seg}:{first_entry + k} has {PID}={pid!r} but no valid {SEQ}") from None
        table.setdefault(pid, Producer(pid)).observe(seq, MessageId(seg, first_entry + k), when_ms)


async def recover_table(h: "LogHandle", versions: list["Versioned[SegmentMetadata]"]) -> ProducerTable:
    """The producer table at the end of the log (every segment already
    completed), reading at most one segment: see the module docstring."""
    expiry_ms = int(h.config["woodpecker.client.producerExpiry"] * 1000)
    for v in reversed(versions):
        snap = SegmentProducers.decode(v.value.producers)
        if snap is None:
            continue
        table = snap.end if snap.end is not None else snap.start
        # an Active segment here belongs to a writer that raced ours: our create of
        # that segment id fails and the caller starts over, so its start is enough
        if snap.end is None and snap.writer and v.value.state != SegmentState.ACTIVE:
            await _scan_into(h, v.value, table)
        table.prune(now_ms(), expiry_ms)
        return table
    return ProducerTable()


async def _scan_into(h: "LogHandle", m: "SegmentMetadata", table: ProducerTable) -> None:
    """Fold a completed segment's stamped entries into ``table`` — all of them,
    up to the last entry its metadata records, or a typed error: a short count
    would let a re-sent append be stored twice."""
    when = m.completion_time or now_ms()
    cursor, seen, stalls = None, -1, 0
    while seen < m.last_entry_id:
        res = await h.backend.scan(h.log_id, m.seg_no, cursor, _SCAN_BYTES, quorum=m.quorum,
                                   sealed_last=m.last_entry_id)
        cursor = res.cursor
        for blk in res.blocks:
            raws = [bytes(r) for r in blk.records]
            stamped = [decode_layout(r) if PID.encode() in r else (b"", {}) for r in raws]
            observe_entries(table, m.seg_no, blk.header.first_entry_id, stamped, when)
            seen = max(seen, blk.header.last_entry_id)
        if res.blocks:
            stalls = 0
        elif res.complete:
            raise CorruptionError(f"producer recovery: segment ends at entry {seen}, its metadata says "
                                  f"{m.last_entry_id}", log=h.name, segment=m.seg_no)
        else:
            stalls += 1
            if stalls > 20:
                raise StorageError(f"log {h.name!r}: segment {m.seg_no} stopped at entry {seen} of "
                                   f"{m.last_entry_id} while recovering producer state")
            await asyncio.sleep(0.05 * stalls)


class Sequencer:
    """The writer side of one producer: which sequence comes next, which are in
    flight (a retry of one waits for the original), and what is acknowledged.
    ``epoch`` changes when a stamped block fails: every block queued after it
    fails too, so the log never gets a hole, and the next append must carry
    ``last_sequence + 1`` again."""

    def __init__(self, pid: str, table: ProducerTable) -> None:
        self.pid = pid
        self.table = table
        self.state = table.setdefault(pid, Producer(pid))
        self.next = self.state.last_seq + 1
        self.pending: dict[int, asyncio.Future] = {}
        self.epoch = 0
        self.error: BaseException = WriterClosedError("an earlier append of this producer failed")

    def admit(self, seq: int | None) -> int | MessageId | asyncio.Future:
        """The sequence to stamp, or the answer of a retry (an id, or the
        original's future)."""
        if seq is None:
            seq = self.next
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InvalidArgumentError(f"sequence must be an int ≥ 0, got {seq!r}")
        if seq == self.next:
            self.next += 1
            return seq
        if seq > self.next:
            raise SequenceGapError(f"producer {self.pid!r}: sequence {seq} skips {self.next}..{seq - 1} "
                                   f"(the log holds up to {self.state.last_seq}); send {self.next} next")
        fut = self.pending.get(seq)
        if fut is not None:
            return fut
        mid = self.state.id_of(seq)
        if mid is not None:
            return mid
        raise DuplicateSequenceError(f"producer {self.pid!r}: sequence {seq} is already in the log (it holds up to "
                                     f"{self.state.last_seq}), too far back for its id to be remembered")

    def acked(self, seqs: list[int], seg: int, first_entry: int) -> None:
        when = now_ms()
        for k, s in enumerate(seqs):
            self.state.observe(s, MessageId(seg, first_entry + k), when)
            self.pending.pop(s, None)

    def failed(self, seqs: list[int], futures: list[asyncio.Future], epoch: int, error: BaseException) -> bool:
        """A stamped batch failed with ``error``.  True the first time in this
        epoch: the caller then fails every batch still queued (with ``error``)."""
        for s, fut in zip(seqs, futures):
            if self.pending.get(s) is fut:  # (after a reset the sequence may be pending again, anew)
                del self.pending[s]
        if epoch != self.epoch:
            return False
        self.epoch += 1
        self.error = error
        self.next = self.state.last_seq + 1
        return True
