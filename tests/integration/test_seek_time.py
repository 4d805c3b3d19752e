"""Seek by time — ``open_reader(at=...)``, ``log read --from-time``, the time
ranges of ``log stat`` — on real etcd with local disk and MinIO.

Time is controlled honestly: the writer's clock hook (``LogWriter.clock``)
gives each append the time the test chose, segments are rolled explicitly (one
writer session per segment) and blocks are made by group commit (appends
gathered together share a block; the test checks the layout it relies on in
storage).  The chosen times sit an hour ahead of the wall clock, so the writer's
floor (the times segment metadata records) never moves them.  Every answer is
checked against a brute-force oracle: the first entry, in log order, whose time
is at or after T."""
import asyncio
import json
import time
from datetime import datetime, timezone

import pytest

import logstore
from logstore import MessageId
from logstore.proto import layout_time
from logstore.seek import format_time, position_at

BASE = int(time.time() * 1000) + 3_600_000

# (segment → blocks → entry times, offsets from BASE).  Segment 0 ends with two
# blocks whose boundary entries share a millisecond; 1 and 2 leave gaps between
# segments; 2 stays open (active) for the tail test.
LAYOUT = [
    [[0, 10], [20, 30, 30], [30, 40], [50]],
    [[1000], [1010, 1020], [1020]],
    [[2000, 2010]],
]


async def _write_segment(log, blocks, keep_open=False):
    """One writer session = one segment; each inner list is one block."""
    w = await log.open_writer()
    times = iter(BASE + t for blk in blocks for t in blk)
    w.clock = lambda: next(times)
    ids = []
    for blk in blocks:
        ids += await asyncio.gather(*(w.append(f"t{t}".encode()) for t in blk))
    if not keep_open:
        await w.close()
    return w, ids


async def _stored_layout(h, seg):
    """Blocks as stored: [[time, ...], ...] (read straight from the backend)."""
    m = (await h.meta.get_segment(h.name, seg)).value
    sealed = m.last_entry_id if m.state != logstore.proto.SegmentState.ACTIVE else None
    res = await h.backend.scan(h.log_id, seg, None, 1 << 30, sealed_last=sealed)
    out = [[layout_time(r) - BASE for r in b.records] for b in res.blocks]
    while not res.complete and sealed is not None:
        res = await h.backend.scan(h.log_id, seg, res.cursor, 1 << 30, sealed_last=sealed)
        out += [[layout_time(r) - BASE for r in b.records] for b in res.blocks]
    return out


def _oracle(entries, t):
    """The first (id, time) in log order with time ≥ t, else None."""
    return next((mid for mid, tt in entries if tt >= t), None)


async def _build(c, name):
    log = await c.create_log(name)
    entries, writer = [], None
    for s, blocks in enumerate(LAYOUT):
        writer, ids = await _write_segment(log, blocks, keep_open=s == len(LAYOUT) - 1)
        entries += zip(ids, [BASE + t for blk in blocks for t in blk])
    return log, writer, entries


async def test_seek_by_time_every_edge(make_config, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.logstore.segmentCompactionPolicy.enabled": False})
    async with logstore.Client(cfg) as c:
        log, writer, entries = await _build(c, "seek")
        for s, blocks in enumerate(LAYOUT):
            assert await _stored_layout(log, s) == blocks, "the block layout the edges rely on"

        async def first_at(t):
            r = await log.open_reader(at=t)
            try:
                return (await r.read_next(timeout=2)).id
            finally:
                await r.close()

        # before the first entry → the first entry
        assert await first_at(BASE - 10_000) == MessageId(0, 0)
        assert await first_at(datetime(2001, 1, 1, tzinfo=timezone.utc)) == MessageId(0, 0)
        # exactly at an entry; just after it
        assert await first_at(BASE + 10) == MessageId(0, 1)
        assert await first_at(BASE + 11) == MessageId(0, 2)
        # exactly at a block boundary: block 1 starts at +20 …
        assert await first_at(BASE + 20) == MessageId(0, 2)
        # … and where blocks 1 and 2 share +30, the tail of block 1 comes first
        assert await first_at(BASE + 30) == MessageId(0, 3)
        assert await first_at(BASE + 31) == MessageId(0, 6)
        # between segments → the next segment's first entry
        assert await first_at(BASE + 51) == MessageId(1, 0)
        assert await first_at(BASE + 1500) == MessageId(2, 0)
        # a datetime is the same instant as its epoch ms
        assert await first_at(datetime.fromtimestamp((BASE + 1010) / 1000, timezone.utc)) == MessageId(1, 1)
        # the oracle, at every time, one before and one after, across the whole log
        for _, t in entries:
            for probe in (t - 1, t, t + 1):
                assert await position_at(log, probe) == (_oracle(entries, probe) or MessageId(2, 2)), probe

        # after the last entry → LATEST semantics: nothing now, then the next append
        r = await log.open_reader(at=BASE + 5000)
        assert r.position == MessageId(2, 2)
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.3)
        writer.clock = lambda: BASE + 6000
        nxt = await writer.append(b"later")
        m = await r.read_next(timeout=5)
        assert (m.id, m.payload) == (nxt, b"later")
        await r.close()
        await writer.close()


async def test_seek_after_last_of_a_completed_log_waits_for_the_next_segment(make_config, backend_kind):
    async with logstore.Client(make_config(backend_kind)) as c:
        log = await c.create_log("done")
        await _write_segment(log, [[0, 10]])
        r = await log.open_reader(at=BASE + 11)
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.3)
        _, ids = await _write_segment(log, [[20]])
        assert (await r.read_next(timeout=5)).id == ids[0] == MessageId(1, 0)
        await r.close()


async def test_seek_on_a_truncated_log(make_config, backend_kind):
    async with logstore.Client(make_config(backend_kind)) as c:  # (MinIO: compacted segments, m_k.blk)
        log, writer, entries = await _build(c, "trunc")
        await log.truncate(MessageId(1, 0))
        await log.collect_garbage()  # segment 0's bytes are gone
        for t in (BASE - 1, BASE + 30, BASE + 1000):  # at or before the truncation point
            r = await log.open_reader(at=t)
            assert (await r.read_next(timeout=2)).id == MessageId(1, 1), t
            await r.close()
        assert await position_at(log, BASE + 1020) == MessageId(1, 2)
        await writer.close()


async def test_seek_reads_are_logarithmic(make_config, backend_kind, monkeypatch):
    """32 segments of 1 block, then one of 64 blocks: a seek reads a handful of
    small pieces, not the log (a scan would read ≥ 96 blocks)."""
    cfg = make_config(backend_kind, **{"woodpecker.logstore.segmentCompactionPolicy.enabled": False})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("big")
        for s in range(32):
            await _write_segment(log, [[s * 100]])
        await _write_segment(log, [[10_000 + k] for k in range(64)])
        reads = []
        if backend_kind == "local":
            from logstore.seek import _LocalBlocks
            real = _LocalBlocks._in_file
            monkeypatch.setattr(_LocalBlocks, "_in_file", lambda self, fn: reads.append(1) or real(self, fn))
        else:
            real_get = log.backend.s3.get
            monkeypatch.setattr(log.backend.s3, "get", lambda *a, **k: reads.append(1) or real_get(*a, **k))
        # segments: ⌈log2 33⌉ = 6 first-entry probes; then segment 15's block list
        # (footer index) and its one block, read whole
        assert await position_at(log, BASE + 1550) == MessageId(16, 0)
        assert len(reads) <= 6 + 2, len(reads)
        reads.clear()
        # + in the 64-block segment: ⌈log2 65⌉ = 7 block probes and one block read
        assert await position_at(log, BASE + 10_037) == MessageId(32, 37)
        assert len(reads) <= 6 + 1 + 7 + 1, len(reads)


def test_time_arguments_are_checked():
    from logstore.seek import parse_time, to_epoch_ms
    assert parse_time("2026-11-29T10:00:00Z") == parse_time("2026-11-29T11:00:00+01:00") == 1795946400000
    assert parse_time("1795946400000") == 1795946400000
    assert to_epoch_ms(datetime(2026, 11, 29, 10, tzinfo=timezone.utc)) == 1795946400000
    for bad in ("yesterday", "2026-11-29T10:00:00", "-5", ""):
        with pytest.raises(logstore.InvalidArgumentError):
            parse_time(bad)
    for bad in (datetime(2026, 11, 29), -1, 1.5, True, "2026-11-29"):
        with pytest.raises(logstore.InvalidArgumentError):
            to_epoch_ms(bad)


async def test_open_reader_refuses_start_and_at_together(make_config):
    async with logstore.Client(make_config("local")) as c:
        log = await c.create_log("both")
        with pytest.raises(logstore.InvalidArgumentError):
            await log.open_reader(MessageId(0, 3), at=BASE)
        with pytest.raises(logstore.InvalidArgumentError):
            await log.open_reader(at=datetime(2026, 11, 29))
        r = await log.open_reader(at=BASE)  # an empty log: waits for the first append
        assert r.position == MessageId(0, 0)
        await r.close()


async def test_stat_time_ranges(make_config, backend_kind):
    async with logstore.Client(make_config(backend_kind)) as c:  # (MinIO: compacted segments, m_k.blk)
        log, writer, _ = await _build(c, "stat")
        got = [(s.id, s.first_time, s.last_time) for s in await log.segments(times=True)]
        assert got == [(0, BASE, BASE + 50), (1, BASE + 1000, BASE + 1020), (2, BASE + 2000, BASE + 2010)]
        assert all(s.first_time is None for s in await log.segments())  # only on request
        await writer.close()


def test_cli_from_time_and_stat_times(make_config, tmp_path, backend_kind):
    """The real wall clock this time: two appends (two CLI writers, two
    segments) around a recorded instant; ``--from-time`` in both forms reads
    from the second; ``stat`` shows each segment's range around that instant."""
    from test_cli import _cfg_file, _picchio

    path = _cfg_file(tmp_path, make_config(backend_kind))
    _picchio(path, "log", "create", "t")
    _picchio(path, "log", "append", "t", input="a\nb\n")
    time.sleep(0.05)
    mid = int(time.time() * 1000)
    time.sleep(0.05)
    _picchio(path, "log", "append", "t", input="c\nd\n")
    for arg in (format_time(mid), str(mid)):
        out = _picchio(path, "--json", "log", "read", "t", "--from-time", arg, "--timeout", "0.5").stdout
        assert [json.loads(x)["payload"] for x in out.splitlines()] == ["c", "d"], arg
    for bad in (["--from-time", "yesterday"], ["--from-time", "2026-11-29T10:00:00"],
                ["--from", "0:1", "--from-time", str(mid)]):
        r = _picchio(path, "log", "read", "t", *bad, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1], bad
    assert "not a time" in _picchio(path, "log", "read", "t", "--from-time", "yesterday", check=False).stderr
    segs = json.loads(_picchio(path, "--json", "log", "stat", "t").stdout)["segments"]
    assert segs[0]["first_time"] <= segs[0]["last_time"] < mid < segs[1]["first_time"] <= segs[1]["last_time"]
    assert format_time(segs[1]["first_time"]) in _picchio(path, "log", "stat", "t").stdout


async def test_seek_over_a_segment_woodpecker_wrote(make_config):
    """Entries without times (laid out byte for byte as Woodpecker writes them):
    the segment's metadata times bound it, and a seek lands on its first entry
    unless the segment was completed before the time asked for."""
    from pathlib import Path

    from test_woodpecker_layout import ENTRIES, block, footer_v6, header, index

    from logstore.proto import SegmentMetadata, SegmentState

    cfg = make_config("local")
    async with logstore.Client(cfg) as c:
        log = await c.create_log("wp")
        assert await c.meta.create_segment("wp", SegmentMetadata(seg_no=0, create_time=BASE, state=SegmentState.COMPLETED,
                                                                 completion_time=BASE + 100, last_entry_id=4))
        b0 = block(0, 0, ENTRIES[0] + ENTRIES[1])
        idx = index(0, 25, len(b0), 0, 4)
        d = Path(cfg["woodpecker.storage.rootPath"]) / cfg["minio.rootPath"] / str(log.log_id) / "0"
        d.mkdir(parents=True)
        (d / "data.log").write_bytes(header(0) + b0 + idx + footer_v6(1, 1, 25 + len(b0) + len(idx), 25 + len(b0),
                                                                      len(idx), 4))
        await _write_segment(log, [[200, 210]])
        assert await position_at(log, BASE - 5) == MessageId(0, 0)
        assert await position_at(log, BASE + 50) == MessageId(0, 0)  # precision: the whole segment
        assert await position_at(log, BASE + 150) == MessageId(1, 0)  # completed before that time
        assert await position_at(log, BASE + 205) == MessageId(1, 1)
        assert [(s.first_time, s.last_time) for s in await log.segments(times=True)] == [
            (None, None), (BASE + 200, BASE + 210)]
