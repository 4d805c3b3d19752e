"""Service mode against three real LogStore processes."""
import asyncio
import os
import shutil
import signal

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
    """SIGKILL one of the three replicas while appends are in flight: no append
    fails, and the stream really ran on both sides of the kill."""
    sc = service_cluster()
    victim = sc.logstores[0]
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("kill1")
        w = await log.open_writer()
        assert victim.endpoint in (await c.meta.segments("kill1"))[0].value.quorum.nodes
        loop = asyncio.get_running_loop()
        acked = []  # (id, i, ack time)
        inflight = 0

        async def stream():
            nonlocal inflight
            for i in range(400):
                inflight += 1
                mid = await w.append(b"e%d" % i)
                inflight -= 1
                acked.append((mid, i, loop.time()))

        task = asyncio.create_task(stream())
        await until(lambda: len(acked) >= 100 or task.done(), "100 acks")
        assert not task.done() and inflight == 1, "the kill lands while an append is in flight"
        acked_at_kill = len(acked)
        victim.kill()  # returns once the process is gone
        t_kill = loop.time()
        await asyncio.wait_for(task, 60)  # no writer error while two LogStores remain
        assert [i for _, i, _ in acked] == list(range(400))
        after = [i for _, i, t in acked if t > t_kill]
        assert len(after) >= 400 - acked_at_kill - 1, "acknowledgements kept coming after the replica died"
        assert not victim.alive()
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(400)]
        assert [m.payload for m in got] == [b"e%d" % i for i in range(400)]
        assert [m.id for m in got] == [m for m, _, _ in acked]
        await w.close()


async def test_two_killed_fast_quorum_error_then_resume(service_cluster):
    timeout = 2.0
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": f"{timeout}s"})
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("kill2")
        w = await log.open_writer()
        before = [await w.append(b"a%d" % i) for i in range(10)]
        sc.logstores[0].kill()
        sc.logstores[1].kill()
        loop = asyncio.get_running_loop()
        for lost in (b"lost", b"lost-too"):
            t0 = loop.time()
            with pytest.raises(logstore.QuorumUnavailableError):
                await asyncio.wait_for(w.append(lost), 10 * timeout)  # wait_for only turns a hang into a failure
            # the documented deadline: a typed error within 3 × quorum.requestTimeout, never a hang
            assert loop.time() - t0 <= 3 * timeout, f"{lost!r} failed after {loop.time() - t0:.2f}s"
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
        with pytest.raises(TimeoutError):  # the appends that failed never show up
            await r.read_next(timeout=0.5)


async def test_two_hung_quorum_error_within_deadline_then_resume(service_cluster):
    """Two of three LogStores hang (SIGSTOP: connections stay open, nothing
    answers) — the slow path, where only the deadline can end the wait.  An
    append fails with QuorumUnavailableError within 3 × quorum.requestTimeout;
    once they answer again the writer goes on, and the failed entry never
    appears."""
    timeout = 1.0
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": f"{timeout}s"})
    hung = sc.logstores[:2]
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("hung2")
        w = await log.open_writer()
        before = [await w.append(b"a%d" % i) for i in range(5)]
        loop = asyncio.get_running_loop()
        for s in hung:
            os.killpg(s.proc.pid, signal.SIGSTOP)
        try:
            t0 = loop.time()
            with pytest.raises(logstore.QuorumUnavailableError):
                await asyncio.wait_for(w.append(b"lost"), 20 * timeout)  # wait_for only turns a hang into a failure
            elapsed = loop.time() - t0
        finally:
            for s in hung:
                os.killpg(s.proc.pid, signal.SIGCONT)
        assert elapsed <= 3 * timeout, f"the append failed after {elapsed:.2f}s (deadline {3 * timeout:g}s)"
        deadline = loop.time() + 30
        while True:  # writing resumes once the LogStores answer again
            try:
                after = await w.append(b"b0")
                break
            except logstore.QuorumUnavailableError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert after > before[-1]
        await w.close()
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(6)]
        assert [m.payload for m in got] == [b"a%d" % i for i in range(5)] + [b"b0"]
        assert [m.id for m in got] == before + [after]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.5)


async def test_ensemble_loses_quorum_writer_moves_on_without_error(service_cluster):
    """Four LogStores, an ensemble of three: kill two of the ensemble mid-stream.
    The writer seals the segment at what it acknowledged and continues on a new
    ensemble; no append fails, nothing acknowledged is lost or duplicated."""
    sc = service_cluster(n=4)
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("move")
        w = await log.open_writer()
        q = (await c.meta.segments("move"))[-1].value.quorum
        victims = [s for s in sc.logstores if s.endpoint in q.nodes][:2]
        loop = asyncio.get_running_loop()
        acked = []  # (id, i, ack time)

        async def stream():
            for i in range(300):
                mid = await w.append(b"m%d" % i)
                acked.append((mid, i, loop.time()))

        task = asyncio.create_task(stream())
        await until(lambda: len(acked) >= 80 or task.done(), "80 acks")
        assert not task.done(), "the kills land while appends are in flight"
        acked_at_kill = len(acked)
        for s in victims:
            s.kill()  # returns once the process is gone
        t_kill = loop.time()
        await asyncio.wait_for(task, 90)
        assert [i for _, i, _ in acked] == list(range(300))
        ids = [m for m, _, _ in acked]
        assert ids == sorted(ids) and ids[-1].segment_id > ids[0].segment_id
        after = [m for m, _, t in acked if t > t_kill]
        assert len(after) >= 300 - acked_at_kill - 1, "acknowledgements kept coming after the quorum was lost"
        assert all(m.segment_id == ids[0].segment_id for m in ids[:acked_at_kill])
        assert after[-1].segment_id > ids[0].segment_id, "…on a new ensemble"
        last_q = (await c.meta.segments("move"))[-1].value.quorum
        assert not any(s.endpoint in last_q.nodes for s in victims), last_q.nodes
        await w.close()
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(300)]
        assert [m.payload for m in got] == [b"m%d" % i for i in range(300)]
        assert [m.id for m in got] == ids
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.5)
