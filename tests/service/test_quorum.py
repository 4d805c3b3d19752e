"""Service mode against three real LogStore processes."""
import asyncio
import os
import shutil

import pytest

import logstore
from logstore import EARLIEST


async def until(cond, what: str, timeout: float = 30.0) -> None:
    """Poll ``cond`` with a deadline (never an open-ended wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def test_quorum_append_and_read_byte_exact(service_cluster):
    sc = service_cluster()
    payloads = [os.urandom(1 + i * 13 % 5000) for i in range(300)]
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("q")
        w = await log.open_writer()
        ids = []
        for i in range(0, 300, 50):
            ids += await asyncio.gather(*(w.append(p, {"i": str(i + k)}) for k, p in enumerate(payloads[i:i + 50])))
        assert ids == sorted(ids) and ids[0] == logstore.MessageId(0, 0)
        segs = await c.meta.segments("q")
        q = segs[0].value.quorum
        assert q.es == 3 and q.wq == 3 and q.aq == 2 and sorted(q.nodes) == sorted(s.endpoint for s in sc.logstores)
        async with logstore.Client(sc.config) as other:  # reads from the LogStores, not from memory
            r = await (await other.open_log("q")).open_reader(EARLIEST)
            got = [await r.read_next(timeout=5) for _ in range(300)]
        assert [m.payload for m in got] == payloads and [m.id for m in got] == ids
        await w.close()
        segs = await log.segments()
        assert segs[0].state == "Sealed", "completion compacts the segment into object storage"
        keys = [o.key.rsplit("/", 1)[1] for o in await c.backend.objects.s3.list(c.backend.objects.key(log.log_id, 0, ""))]
        assert "footer.blk" in keys and "m_0.blk" in keys


async def test_sealed_segment_readable_after_logstores_wiped(service_cluster):
    sc = service_cluster()
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("wipe")
        async with await log.open_writer() as w:
            ids = [await w.append(b"v%d" % i) for i in range(20)]
    for s in sc.logstores:
        s.stop()
        shutil.rmtree(s.data_dir)
    async with logstore.Client(sc.config) as c:
        r = await (await c.open_log("wipe")).open_reader(EARLIEST)
        got = [await r.read_next(timeout=5) for _ in range(20)]
    assert [m.id for m in got] == ids and [m.payload for m in got] == [b"v%d" % i for i in range(20)]


async def test_one_logstore_killed_during_appends_no_error(service_cluster):
    sc = service_cluster()
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("kill1")
        w = await log.open_writer()
        acked = []

        async def stream():
            for i in range(400):
                acked.append((await w.append(b"e%d" % i), i))

        task = asyncio.create_task(stream())
        await until(lambda: len(acked) >= 100 or task.done(), "100 acks")
        sc.logstores[0].kill()
        await asyncio.wait_for(task, 60)  # no writer error while two LogStores remain
        assert [i for _, i in acked] == list(range(400))
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(400)]
        assert [m.payload for m in got] == [b"e%d" % i for i in range(400)]
        assert [m.id for m in got] == [m for m, _ in acked]
        await w.close()


async def test_two_killed_fast_quorum_error_then_resume(service_cluster):
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": "3s"})
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("kill2")
        w = await log.open_writer()
        before = [await w.append(b"a%d" % i) for i in range(10)]
        sc.logstores[0].kill()
        sc.logstores[1].kill()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(logstore.QuorumUnavailableError):
            await w.append(b"lost")
        assert loop.time() - t0 < 3.5, "no quorum fails within the request timeout, not a hang"
        with pytest.raises(logstore.QuorumUnavailableError):
            await w.append(b"lost-too")
        sc.logstores[0].start()
        deadline = loop.time() + 30
        while True:  # writing resumes once a quorum is back
            try:
                after = await w.append(b"b0")
                break
            except logstore.QuorumUnavailableError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert after.segment_id > before[-1].segment_id
        await w.close()
        r = await log.open_reader(EARLIEST)
        got = [(await r.read_next(timeout=10)).payload for _ in range(11)]
        assert got[:10] == [b"a%d" % i for i in range(10)] and got[10] == b"b0"


async def test_ensemble_loses_quorum_writer_moves_on_without_error(service_cluster):
    """Four LogStores, an ensemble of three: kill two of the ensemble mid-stream.
    The writer seals the segment at what it acknowledged and continues on a new
    ensemble; no append fails, nothing acknowledged is lost or duplicated."""
    sc = service_cluster(n=4)
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("move")
        w = await log.open_writer()
        acked = []

        async def stream():
            for i in range(300):
                acked.append((await w.append(b"m%d" % i), i))

        task = asyncio.create_task(stream())
        await until(lambda: len(acked) >= 80 or task.done(), "80 acks")
        q = (await c.meta.segments("move"))[-1].value.quorum
        victims = [s for s in sc.logstores if s.endpoint in q.nodes][:2]
        for s in victims:
            s.kill()
        await asyncio.wait_for(task, 90)
        assert [i for _, i in acked] == list(range(300))
        ids = [m for m, _ in acked]
        assert ids == sorted(ids) and ids[-1].segment_id > ids[0].segment_id
        await w.close()
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(300)]
        assert [m.payload for m in got] == [b"m%d" % i for i in range(300)]
        assert [m.id for m in got] == ids
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.5)
