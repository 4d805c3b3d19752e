"""The public API against a real etcd and a real S3 server, on both backends."""
import asyncio
import os
import time

import pytest

import logstore
from logstore import EARLIEST, LATEST, MessageId


async def test_create_open_list_exists_delete(make_config, backend_kind):
    async with logstore.Client(make_config(backend_kind)) as c:
        log = await c.create_log("orders")
        assert log.log_id == 1
        assert (await c.create_log("orders-2")).log_id == 2
        with pytest.raises(logstore.LogExistsError):
            await c.create_log("orders")
        assert await c.log_exists("orders") and not await c.log_exists("nope")
        assert await c.list_logs() == ["orders", "orders-2"]
        assert await c.list_logs("orders-") == ["orders-2"]
        with pytest.raises(logstore.LogNotFoundError):
            await c.open_log("nope")
        h = await c.open_log("orders")
        assert h.log_id == 1
        async with await h.open_writer() as w:
            await w.append(b"x")
        await c.delete_log("orders")
        assert not await c.log_exists("orders")
        with pytest.raises(logstore.LogNotFoundError):
            await c.delete_log("orders")


async def test_concurrent_appends_are_ordered_across_segments(make_config, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxSize": 20_000,
                                       "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 2000})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("ordered")
        payloads = [os.urandom(1 + (i * 37) % 900) for i in range(400)]
        done_order: list[int] = []
        async with await log.open_writer() as w:
            async def one(i):
                mid = await w.append(payloads[i], {"i": str(i)})
                done_order.append(i)
                return mid

            ids = []
            for chunk in range(0, 400, 100):
                ids += await asyncio.gather(*(one(i) for i in range(chunk, chunk + 100)))
        assert ids == sorted(ids) and len(set(ids)) == 400, "ids strictly increase in call order"
        assert done_order == list(range(400)), "completions resolve in call order"
        assert len({m.segment_id for m in ids}) >= 3, "the log rolled over several segments"
        reader = await log.open_reader(EARLIEST)
        got = [await reader.read_next(timeout=5) for _ in range(400)]
        assert [m.id for m in got] == ids
        assert [m.payload for m in got] == payloads, "byte-exact catch-up read"
        assert [m.properties for m in got] == [{"i": str(i)} for i in range(400)]
        with pytest.raises(TimeoutError):
            await reader.read_next(timeout=0.2)
        segs = await log.segments()
        assert all(s.state in ("Completed", "Sealed") for s in segs)
        assert sum(s.last_entry_id + 1 for s in segs if s.last_entry_id is not None) == 400


async def test_reader_from_middle_and_latest(make_config, backend_kind):
    async with logstore.Client(make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 2})) as c:
        log = await c.create_log("mid")
        w = await log.open_writer()
        ids = [await w.append(b"%d" % i) for i in range(10)]
        r = await log.open_reader(ids[4])
        assert (await r.read_next(timeout=2)).payload == b"4"
        latest = await log.open_reader(LATEST)
        with pytest.raises(TimeoutError):
            await latest.read_next(timeout=0.1)
        nxt = await w.append(b"new")
        m = await latest.read_next(timeout=2)
        assert m.id == nxt and m.payload == b"new"
        assert await log.last_id() == nxt
        await w.close()


async def test_tail_read_in_process(make_config, backend_kind):
    """A reader in the writer's process is woken by the acknowledgement itself
    (the in-process tail hub), not by its 1 s fallback wait: once ``append``
    returns, the parked read completes within a few event-loop turns, with no
    timer in between.  Mutation caught: ``TailHub._bump`` not resolving the
    waiters' future (the read then needs the 1 s timer)."""
    async with logstore.Client(make_config(backend_kind)) as c:
        log = await c.create_log("tail")
        async with await log.open_writer() as w:
            reader = await log.open_reader(EARLIEST)
            pending = asyncio.create_task(reader.read_next(timeout=30))
            deadline = time.monotonic() + 10
            while log.hub._changed is None:  # the reader is parked on the hub
                assert time.monotonic() < deadline, "the reader never parked at the tail"
                await asyncio.sleep(0.001)
            mid = await w.append(b"hello")
            turns = 0
            while not pending.done() and turns < 200:
                await asyncio.sleep(0)  # loop turns only: no timer can fire in them
                turns += 1
            assert pending.done(), "the ack did not wake the parked reader (it would wait for its poll)"
            m = pending.result()
            assert m.id == mid and m.payload == b"hello"
            # a stream: the reader follows every entry in order
            ids = [await w.append(b"%d" % i) for i in range(50)]
            got = [await reader.read_next(timeout=5) for _ in range(50)]
            assert [g.id for g in got] == ids


async def test_fencing_two_writers(make_config, backend_kind):
    """A writer opened by a *second client* (another process's view: its own
    etcd session and backend) fences the first; the first's later appends fail
    and never appear.  Mutation caught: ``LocalSegmentWriter._check_fence``
    not raising (local) — the old writer's "late" then lands."""
    cfg = make_config(backend_kind)
    async with logstore.Client(cfg) as c1, logstore.Client(cfg) as c2:
        log = await c1.create_log("fenced")
        w1 = await log.open_writer()
        acked = [await w1.append(b"a%d" % i) for i in range(5)]
        other = await c2.open_log("fenced")
        w2 = await other.open_writer()
        with pytest.raises(logstore.WriterFencedError):
            await w1.append(b"late")
        with pytest.raises(logstore.WriterFencedError):
            await w1.append(b"later")
        assert w1.fenced
        m2 = await w2.append(b"b0")
        assert m2.segment_id > acked[-1].segment_id
        await w2.close()
        await w1.close()  # closing a fenced writer is quiet and writes nothing
        for client in (c1, c2):
            r = await (await client.open_log("fenced")).open_reader(EARLIEST)
            got = [(await r.read_next(timeout=3)).payload for _ in range(6)]
            assert got == [b"a0", b"a1", b"a2", b"a3", b"a4", b"b0"]
            with pytest.raises(TimeoutError):
                await r.read_next(timeout=0.2)


async def test_truncate_and_gc(make_config, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 2})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("gc")
        w = await log.open_writer()
        ids = [await w.append(b"e%d" % i) for i in range(12)]  # 6 segments of 2 blocks
        assert await log.truncated_id() is None
        assert (await log.collect_garbage()).segments == []
        await log.truncate(ids[5])
        assert await log.truncated_id() == ids[5]
        await log.truncate(ids[2])  # backwards: no-op
        assert await log.truncated_id() == ids[5]
        dry = await log.collect_garbage(dry_run=True)
        assert dry.segments == [0, 1, 2] and dry.bytes > 0 and dry.objects > 0
        assert [s.id for s in await log.segments()][:3] == [0, 1, 2], "dry run deletes nothing"
        rep = await log.collect_garbage()
        assert rep.segments == [0, 1, 2] and rep.bytes == dry.bytes and rep.objects == dry.objects
        assert [s.id for s in await log.segments()] == [3, 4, 5]
        assert (await log.collect_garbage()).segments == [], "a rerun finds nothing"
        r = await log.open_reader(EARLIEST)
        assert (await r.read_next(timeout=2)).id == ids[6]
        rest = [await w.append(b"f%d" % i) for i in range(2)]
        got = [(await r.read_next(timeout=2)).id for _ in range(7)]
        assert got == ids[7:] + rest
        with pytest.raises(logstore.InvalidArgumentError):
            await log.truncate(MessageId(99, 0))
        await w.close()


async def test_gc_without_writer_from_another_client(make_config, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("nowriter")
        async with await log.open_writer() as w:
            ids = [await w.append(b"x" * 100) for _ in range(4)]
    async with logstore.Client(cfg) as c2:  # no writer open anywhere
        log = await c2.open_log("nowriter")
        await log.truncate(ids[2])
        rep = await log.collect_garbage()
        assert rep.segments == [0, 1, 2]
        r = await log.open_reader(EARLIEST)
        assert (await r.read_next(timeout=2)).id == ids[3]


async def test_delete_log_leaves_nothing(make_config, backend_kind, tmp_path):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 2})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("doomed")
        keep = await c.create_log("kept")
        async with await log.open_writer() as w, await keep.open_writer() as wk:
            for i in range(6):
                await w.append(b"d%d" % i)
            await wk.append(b"k")
        n, b = await c.delete_log("doomed")
        assert n > 0 and b > 0
        prefix = f"{cfg.meta_prefix}/logs/doomed".encode()
        assert len(await c.meta.client.get_prefix(prefix)) == 0
        if backend_kind == "local":
            root = tmp_path / "wal" / cfg["minio.rootPath"]
            assert not (root / str(log.log_id)).exists() and (root / str(keep.log_id)).exists()
        else:
            s3 = c.backend.s3
            assert await s3.list(f"{cfg['minio.rootPath']}/{log.log_id}/") == []
            assert await s3.list(f"{cfg['minio.rootPath']}/{keep.log_id}/") != []
        r = await keep.open_reader(EARLIEST)
        assert (await r.read_next(timeout=2)).payload == b"k"


@pytest.mark.parametrize("payload,props", [(b"", None), (b"", {}), ("text", None), (123, None),
                                           (b"x", {"k": 1}), (b"x", ["k"])])
async def test_bad_appends_raise_typed_errors(make_config, payload, props):
    async with logstore.Client(make_config("local")) as c:
        log = await c.create_log("bad")
        async with await log.open_writer() as w:
            with pytest.raises(logstore.InvalidArgumentError):
                await w.append(payload, props)
            assert (await w.append(b"", {"only": "props"})).entry_id == 0, "the writer is still usable"


@pytest.mark.parametrize("name", ["", "a/b", "-x", "x" * 300, None, "sp ace"])
async def test_bad_names(make_config, name):
    async with logstore.Client(make_config("local")) as c:
        with pytest.raises(logstore.InvalidArgumentError):
            await c.create_log(name)


async def test_closed_writer_and_unreachable_etcd(make_config):
    async with logstore.Client(make_config("local")) as c:
        log = await c.create_log("closed")
        w = await log.open_writer()
        await w.close()
        with pytest.raises(logstore.WriterClosedError):
            await w.append(b"x")
    bad = make_config("local", **{"etcd.endpoints": ["127.0.0.1:1"], "etcd.requestTimeout": "500ms"})
    with pytest.raises(logstore.MetadataError):
        async with logstore.Client(bad):
            pass
