"""Idempotent-producer scenarios shared by every mode (local, S3, service):
each takes a Config on real components and checks the promise — a retried
(producer, sequence) is never written twice and returns its original id, a gap
is refused, and ``last_sequence`` is learnt from the log itself across close,
rollover, a crashed or fenced predecessor and plain writers in between."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

import logstore
from logstore.producer import PID, SEQ, SegmentProducers

import crashcheck


async def read_all(log, idle: float = 1.0) -> list[logstore.Message]:
    return await crashcheck.read_all(log, idle)


def stamps(msgs) -> list[tuple[str, int]]:
    return [(m.properties[PID], int(m.properties[SEQ])) for m in msgs if PID in m.properties]


async def retries_return_original_ids(cfg: logstore.Config) -> None:
    """Within a writer, after a clean close and across segments: duplicates
    come back with their first id and are stored once; gaps are refused."""
    async with logstore.Client(cfg) as c:
        log = await c.create_log("idem")
        w = await log.open_writer(producer_id="p1")
        assert w.last_sequence == -1
        ids = await asyncio.gather(*(w.append(b"e%d" % s, {"k": str(s)}, sequence=s) for s in range(30)))
        again = await asyncio.gather(*(w.append(b"e%d" % s, sequence=s) for s in (0, 7, 29)))
        assert again == [ids[0], ids[7], ids[29]]
        inflight = [w.append(b"e30", sequence=30), w.append(b"e30", sequence=30)]  # a retry while in flight
        a, b = await asyncio.gather(*inflight)
        assert a == b
        with pytest.raises(logstore.SequenceGapError, match="skips 31..32"):
            await w.append(b"e33", sequence=33)
        assert await w.append(b"e31") > a  # no sequence given: the next one (31)
        assert w.last_sequence == 31
        await w.close()
        w2 = await log.open_writer(producer_id="p1")
        assert w2.last_sequence == 31  # from the end snapshot of the closed segment
        assert await w2.append(b"e31", sequence=31) != await w2.append(b"e32", sequence=32)
        assert await w2.append(b"e7", sequence=7) == ids[7]  # ids of older runs are remembered too
        await w2.close()
        got = await read_all(log)
        assert stamps(got) == [("p1", s) for s in range(33)]
        assert [m.payload for m in got] == [b"e%d" % s for s in range(33)]
        assert got[3].properties["k"] == "3" and [m.id for m in got[:30]] == ids


async def crashed_or_fenced_predecessor(cfg: logstore.Config) -> None:
    """A new writer with the same producer id fences the old one and learns
    every sequence the old one got stored — from the unfinished segment."""
    async with logstore.Client(cfg) as c1, logstore.Client(cfg) as c2:
        log1 = await c1.create_log("fence")
        old = await log1.open_writer(producer_id="app")
        acked = await asyncio.gather(*(old.append(b"x%d" % s, sequence=s) for s in range(25)))
        log2 = await c2.open_log("fence")
        new = await log2.open_writer(producer_id="app")  # the old writer never closed: its segment is recovered
        assert new.last_sequence == 24
        metas = await log2.meta.segments("fence")
        snap = SegmentProducers.decode(metas[-2].value.producers)
        assert snap is not None and snap.writer == "app" and snap.end is None  # learnt by scanning it
        with pytest.raises(logstore.WriterFencedError):
            await old.append(b"x25", sequence=25)
        assert await new.append(b"x3", sequence=3) == acked[3]
        nxt = await asyncio.gather(*(new.append(b"x%d" % s, sequence=s) for s in range(20, 30)))
        assert nxt[:5] == acked[20:]
        await new.close()
        await old.close()
        got = await read_all(log2)
        assert stamps(got) == [("app", s) for s in range(30)]


async def state_crosses_plain_writers_and_expiry(cfg: logstore.Config) -> None:
    """A plain writer after a crashed producer carries the producer's state
    forward (no scan needed later); producers idle past producerExpiry are
    forgotten; plain appends cannot forge the reserved properties."""
    async with logstore.Client(cfg) as c:
        log = await c.create_log("mixed")
        p = await log.open_writer(producer_id="p")
        await asyncio.gather(*(p.append(b"p%d" % s, sequence=s) for s in range(5)))
        plain = await log.open_writer()  # fences p, scans its segment once
        with pytest.raises(logstore.InvalidArgumentError, match="reserved"):
            await plain.append(b"forged", {PID: "p", SEQ: "5"})
        with pytest.raises(logstore.InvalidArgumentError, match="producer_id"):
            await plain.append(b"x", sequence=5)
        with pytest.raises(logstore.InvalidArgumentError, match="producer_id"):
            plain.last_sequence
        await plain.append(b"plain")
        await plain.close()
        with contextlib.suppress(logstore.WriterFencedError):  # fenced: its close cannot complete the segment
            await p.close()
        q = await log.open_writer(producer_id="p")
        assert q.last_sequence == 4
        await q.append(b"p5", sequence=5)
        await q.close()
        assert stamps(await read_all(log)) == [("p", s) for s in range(6)]
    short = cfg.with_values({"woodpecker.client.producerExpiry": "1s"})
    async with logstore.Client(short) as c:
        log = await c.open_log("mixed")
        await asyncio.sleep(1.2)
        w = await log.open_writer(producer_id="other")  # the table it carries forward drops "p"
        await w.append(b"o0", sequence=0)
        await w.close()
        w = await log.open_writer(producer_id="p")
        assert w.last_sequence == -1  # forgotten: a new producer again, starting at 0
        with pytest.raises(logstore.SequenceGapError):
            await w.append(b"p6", sequence=6)
        await w.close()


async def rollover_keeps_ids(cfg: logstore.Config) -> None:
    """Small segments: retries of sequences in earlier segments still get their
    ids; reopening reads no segment (every one carries its end snapshot)."""
    async with logstore.Client(cfg) as c:
        log = await c.create_log("roll")
        w = await log.open_writer(producer_id="r")
        ids = []
        for s in range(60):
            ids.append(await w.append(b"%d" % s + b"." * 400, sequence=s))
        assert len({m.segment_id for m in ids}) >= 3
        recent = [s for s in range(60) if ids[s].segment_id >= ids[-1].segment_id - 1]
        assert [await w.append(b"dup", sequence=s) for s in recent] == [ids[s] for s in recent]
        await w.close()
        w = await log.open_writer(producer_id="r")
        assert w.last_sequence == 59
        assert await w.append(b"dup", sequence=59) == ids[59]
        await w.close()
        got = await read_all(log)
        assert stamps(got) == [("r", s) for s in range(60)] and [m.id for m in got] == ids
