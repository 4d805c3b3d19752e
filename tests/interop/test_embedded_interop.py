"""Embedded mode, picchio ⇄ the real Woodpecker v0.1.35 on one etcd keyspace and one storage
location (local file system, MinIO): what one side writes the other reads byte for byte, with
the same ids and properties, from Active, Completed and (MinIO) Sealed segments; live tails each
way; and writer hand-over each way, where nothing either side acknowledged may go missing."""
from __future__ import annotations

import asyncio
import time

import pytest

import logstore
from logstore import EARLIEST, MessageId
from wp import (SIZE_ARG, acks, append_all, check_picchio_read, check_wp_read, entries, payload, read_picchio, size_of,
                take_over_from_woodpecker, unique)

N = 24


async def segment_states(cfg, name: str) -> dict[int, str]:
    async with logstore.Client(cfg) as c:
        return {s.id: s.state for s in await (await c.open_log(name)).segments()}


def wp_write(w, name: str, tag: str, n: int, *extra: str, start: int = 0) -> list[dict]:
    return acks(w.run("write", "--log", name, "--create", "--start", str(start), "--count", str(n),
                      "--size", SIZE_ARG, "--tag", tag, "--inflight", "8", *extra))


# -- Woodpecker writes, picchio reads ---------------------------------------------------------

@pytest.mark.parametrize("kind,state", [("local", "Active"), ("local", "Completed"),
                                        ("minio", "Active"), ("minio", "Completed"), ("minio", "Sealed")])
async def test_woodpecker_writes_picchio_reads(make_config, wp, kind, state):
    """Active: Woodpecker's writer went away without closing (as if it crashed); Completed: it
    closed; Sealed: a later Woodpecker writer's auditor compacted the segment into m_0.blk."""
    cfg = make_config(kind)
    w = wp(cfg)
    name, tag = unique("wp2p"), unique("t")
    wp_acks = wp_write(w, name, tag, N, *(["--no-close"] if state == "Active" else []))
    assert len(wp_acks) == N
    if state == "Sealed":
        w.run("write", "--log", name, "--count", "0", "--auditor-seconds", "1", "--wait-sealed")
    states = await segment_states(cfg, name)
    assert states[wp_acks[-1]["seg"]] == state, states
    check_picchio_read(await read_picchio(cfg, name, N), wp_acks, tag)


# -- picchio writes, Woodpecker reads ---------------------------------------------------------

@pytest.mark.parametrize("kind,state", [("local", "Active"), ("local", "Completed"),
                                        ("minio", "Active"), ("minio", "Completed"), ("minio", "Sealed")])
async def test_picchio_writes_woodpecker_reads(make_config, wp, kind, state):
    """Active: picchio's writer is still open while Woodpecker reads; Completed (MinIO: with
    compaction off); Sealed: picchio compacted on close."""
    over = {"woodpecker__logstore__segmentCompactionPolicy__enabled": False} if state == "Completed" else {}
    cfg = make_config(kind, **over)
    name, tag = unique("p2wp"), unique("t")
    async with logstore.Client(cfg) as c:
        writer = await (await c.create_log(name)).open_writer()
        ids = await append_all(writer, tag, range(N))
        if state != "Active":
            await writer.close()
        assert (await segment_states(cfg, name))[ids[-1].segment_id] == state
        lines = await asyncio.to_thread(wp(cfg).run, "read", "--log", name, "--count", str(N))
        check_wp_read(lines, ids, tag)
        # Woodpecker's reader stops at the end: one more read finds nothing
        more = await asyncio.to_thread(wp(cfg).run, "read", "--log", name, "--from",
                                       f"{ids[-1].segment_id}:{ids[-1].entry_id + 1}", "--idle-ms", "1500")
        assert entries(more) == []
        if state == "Active":
            await writer.close()


# -- live tails -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_picchio_tails_woodpecker_writer(make_config, wp, kind):
    """A slow Woodpecker writer appends while picchio's reader tails the log: every entry
    arrives, in order, byte for byte, and the first ones arrive while Woodpecker still writes."""
    cfg = make_config(kind)
    w = wp(cfg)
    name, tag, n = unique("tailp"), unique("t"), 30
    async with logstore.Client(cfg) as c:
        await c.create_log(name)
        run = w.start("write", "--log", name, "--count", str(n), "--size", SIZE_ARG, "--tag", tag,
                      "--interval-ms", "60")
        try:
            r = await (await c.open_log(name)).open_reader(EARLIEST)
            got = []
            for _ in range(n):
                got.append(await r.read_next(timeout=30))
                if len(got) == 3:
                    first_three_at = time.monotonic()
            lines = await asyncio.to_thread(run.finish, 60)
        finally:
            run.kill()
    done_at = next(t for t, d in run.seen if d.get("op") == "done")
    assert first_three_at < done_at, "picchio's tail saw nothing until Woodpecker had finished"
    wp_acks = acks(lines)
    assert len(wp_acks) == n
    check_picchio_read(got, wp_acks, tag)


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_woodpecker_tails_picchio_writer(make_config, wp, kind):
    """picchio appends one entry at a time while Woodpecker's reader tails the log."""
    cfg = make_config(kind)
    name, tag, n = unique("tailw"), unique("t"), 30
    async with logstore.Client(cfg) as c:
        log = await c.create_log(name)
        run = wp(cfg).start("tail", "--log", name, "--count", str(n))
        try:
            await asyncio.to_thread(run.until, lambda d: d.get("op") == "reader-open", "reader-open")
            ids = []
            async with await log.open_writer() as writer:
                for i in range(n):
                    ids += await append_all(writer, tag, [i])
                    if i == 5:  # Woodpecker sees entries while picchio is still writing
                        await asyncio.to_thread(run.until, lambda d: d.get("op") == "entry", "a tailed entry", 30)
                    await asyncio.sleep(0.05)  # pacing of a slow producer, not a wait for a condition
            lines = await asyncio.to_thread(run.finish, 60)
        finally:
            run.kill()
    check_wp_read(lines, ids, tag)


# -- writer hand-over -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_woodpecker_writer_fences_picchio_writer(make_config, wp, kind):
    """picchio's writer holds the log; a Woodpecker writer opens it (fencing picchio's segment)
    and appends; picchio's next append fails with WriterFencedError; both sides then read every
    acknowledged entry — picchio's first — and nothing else."""
    cfg = make_config(kind)
    w = wp(cfg)
    name, tag, a, b = unique("hand1"), unique("t"), 10, 10
    async with logstore.Client(cfg) as c:
        writer = await (await c.create_log(name)).open_writer()
        p_ids = await append_all(writer, tag, range(a))
        wp_acks = await asyncio.to_thread(wp_write, w, name, tag, b, start=a)
        assert len(wp_acks) == b
        assert (wp_acks[0]["seg"], wp_acks[0]["entry"]) > (p_ids[-1].segment_id, p_ids[-1].entry_id)
        with pytest.raises(logstore.WriterFencedError):
            await writer.append(b"too late")
        await writer.close()
    all_ids = p_ids + [MessageId(x["seg"], x["entry"]) for x in wp_acks]
    got = await read_picchio(cfg, name, a + b)
    assert [m.id for m in got] == all_ids
    assert [m.payload for m in got] == [payload(tag, i, size_of(i)) for i in range(a + b)]
    check_wp_read(await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(a + b)), all_ids, tag)


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_picchio_writer_fences_woodpecker_writer(make_config, wp, kind):
    """A Woodpecker writer appends steadily; picchio opens a writer mid-stream (fencing it) and
    appends.  Woodpecker's writer fails from then on; every entry it acknowledged is in the log,
    before picchio's, and no entry it did not acknowledge is."""
    cfg = make_config(kind)
    name, tag, b = unique("hand2"), unique("t"), 10
    async with logstore.Client(cfg) as c:
        wp_acks, p_ids = await take_over_from_woodpecker(await c.create_log(name), wp(cfg), tag, b)
    got = await read_picchio(cfg, name, len(wp_acks) + b)
    check_picchio_read(got[:len(wp_acks)], wp_acks, tag)
    assert [m.id for m in got[len(wp_acks):]] == p_ids
    assert [m.payload for m in got[len(wp_acks):]] == [payload(tag, i, size_of(i)) for i in range(5000, 5000 + b)]
