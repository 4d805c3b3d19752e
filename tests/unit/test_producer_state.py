"""Idempotent producers' state logic (logstore/producer.py), no I/O: runs and
their ids, the per-segment snapshot's encoding inside SegmentMetadata (which a
plain protobuf reader — Woodpecker — skips), expiry, and the Sequencer's rules
(consecutive sequences, retries, gaps, a failure resetting to last + 1)."""
import asyncio

import pytest

from logstore import DuplicateSequenceError, InvalidArgumentError, MessageId, SequenceGapError
from logstore.producer import (MAX_PRODUCERS, MAX_RUNS, PID, SEQ, Producer, ProducerTable, SegmentProducers, Sequencer,
                               check_reserved, observe_entries, with_end)
from logstore.proto import SegmentMetadata, f_int, fields


def test_runs_map_every_sequence_of_a_segment_to_its_id():
    p = Producer("a")
    for k in range(5):
        p.observe(10 + k, MessageId(3, 7 + k), 1000)
    for k in range(3):  # rolled to segment 4
        p.observe(15 + k, MessageId(4, k), 2000)
    assert len(p.runs) == 2 and p.last_seq == 17 and p.last_ms == 2000
    assert p.id_of(12) == MessageId(3, 9) and p.id_of(16) == MessageId(4, 1)
    assert p.id_of(9) is None and p.id_of(18) is None


def test_runs_are_bounded_per_producer():
    p = Producer("a")
    for seg in range(MAX_RUNS + 3):
        p.observe(seg, MessageId(seg, 0), 0)
    assert len(p.runs) == MAX_RUNS and p.id_of(0) is None and p.id_of(MAX_RUNS + 2) == MessageId(MAX_RUNS + 2, 0)


def test_snapshot_round_trips_inside_segment_metadata_and_plain_decoders_skip_it():
    t = ProducerTable()
    observe_entries(t, 2, 0, [(b"x", {PID: "p1", SEQ: "0"}), (b"y", {}), (b"z", {PID: "p2", SEQ: "5"})], 77)
    snap = SegmentProducers("p1", t)
    raw = with_end(snap.encode(), "p1", t)
    m = SegmentMetadata(seg_no=2, create_time=1, producers=raw)
    back = SegmentMetadata.decode(m.encode())
    got = SegmentProducers.decode(back.producers)
    assert got is not None and got.writer == "p1" and got.end is not None
    assert got.start["p1"].id_of(0) == MessageId(2, 0) and got.end["p2"].last_seq == 5
    # a reader that knows only Woodpecker's fields 1..9 sees the same segment
    known = [(n, v) for n, _, v in fields(m.encode()) if n <= 9]
    assert known == [(n, v) for n, _, v in fields(SegmentMetadata(seg_no=2, create_time=1).encode())]
    assert SegmentProducers.decode(b"") is None  # Woodpecker's own segments: no producer entries
    assert SegmentProducers.decode(SegmentProducers("", ProducerTable()).encode()).end is None


def test_sequence_zero_and_minus_one_survive_proto3_zero_omission():
    t = ProducerTable({"p": Producer("p")})
    assert ProducerTable.decode(t.encode())["p"].last_seq == -1
    t["p"].observe(0, MessageId(0, 0), 5)
    assert ProducerTable.decode(t.encode())["p"].last_seq == 0


def test_expiry_forgets_idle_producers_but_never_the_writers_own():
    t = ProducerTable({p: Producer(p, 1, ms) for p, ms in (("old", 1_000), ("new", 9_000), ("me", 0))})
    t.prune(now=10_000, expiry_ms=5_000, keep="me")
    assert sorted(t) == ["me", "new"]
    big = ProducerTable({str(i): Producer(str(i), 0, i) for i in range(MAX_PRODUCERS + 5)})
    big.prune(now=MAX_PRODUCERS, expiry_ms=10**9)
    assert len(big) == MAX_PRODUCERS and "0" not in big and str(MAX_PRODUCERS + 4) in big


def test_reserved_properties_are_refused_on_plain_appends():
    check_reserved({"k": "v"})
    with pytest.raises(InvalidArgumentError, match="reserved"):
        check_reserved({PID: "forged"})


async def test_sequencer_rules():
    t = ProducerTable()
    s = Sequencer("p", t)
    assert s.admit(None) == 0 and s.admit(1) == 1  # consecutive from 0; None = the next one
    fut = asyncio.get_running_loop().create_future()
    s.pending[1] = fut
    assert s.admit(1) is fut  # a retry of an append in flight waits for the original
    with pytest.raises(SequenceGapError, match="skips 2..4"):
        s.admit(5)
    s.acked([0, 1], seg=0, first_entry=0)
    assert s.admit(0) == MessageId(0, 0) and s.admit(1) == MessageId(0, 1)  # duplicates: the original ids
    for bad in (-1, "3", True, 1.0):
        with pytest.raises(InvalidArgumentError):
            s.admit(bad)
    # an old sequence beyond the remembered runs: in the log, id forgotten
    t2 = ProducerTable({"q": Producer("q", 99, 0, [])})
    with pytest.raises(DuplicateSequenceError, match="already in the log"):
        Sequencer("q", t2).admit(3)
    assert Sequencer("q", t2).admit(100) == 100


async def test_a_failed_batch_resets_the_producer_to_last_acked_plus_one():
    s = Sequencer("p", ProducerTable())
    for q in range(4):
        s.admit(q)
    s.acked([0], 0, 0)
    futs = [asyncio.get_running_loop().create_future() for _ in range(3)]
    s.pending.update(zip([1, 2, 3], futs))
    err = RuntimeError("x")
    assert s.failed([1, 2], futs[:2], epoch=0, error=err) is True  # first failure: caller fails the rest
    assert s.epoch == 1 and s.error is err and s.next == 1
    assert s.failed([3], futs[2:], epoch=0, error=err) is False  # the rest of that epoch
    assert s.admit(1) == 1 and s.pending == {}
    with pytest.raises(SequenceGapError):
        s.admit(3)


def test_observe_rejects_a_stamp_without_a_sequence():
    from logstore import CorruptionError
    with pytest.raises(CorruptionError):
        observe_entries(ProducerTable(), 0, 0, [(b"", {PID: "p"})], 0)
    assert f_int(1, 0) == b""
