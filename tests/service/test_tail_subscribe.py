"""Tail subscriptions in service mode (logstore/tailsub.py, server/subscribe.py):
a reader at the tail of an active segment gets entries streamed by the
LogStores as the LAC moves.  Readers here poll storage only every 5 s and
get no etcd bump, so an entry that arrives within a second came through a
stream; every test also checks what arrived against what was acknowledged:
in order, nothing missing, nothing twice, nothing past the writer's LAC."""
from __future__ import annotations

import asyncio
import time

import pytest

import logstore
from logstore import EARLIEST, LATEST
from logstore.rpc import SubscribeEntriesRequest
from logstore.storage.service import Node
from svcutil import http_get, until

SLOW_POLL = {"woodpecker.client.reader.storagePollInterval": "5s",
             "woodpecker.client.tailPush.pollInterval": "5s",
             "woodpecker.client.tailPush.etcdNotify": False}


def metric(ls, name: str) -> float:
    status, body = http_get(ls.http_port, "/metrics")
    assert status == 200, body
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def waiting(r) -> None:
    """Until the reader waits at the tail (a read_next is blocked on its hub)."""
    hub = r._h.hub
    await until(lambda: hub._changed is not None and not hub._changed.done(), "the reader to wait", timeout=10)


async def frames(sc) -> float:
    return sum([await asyncio.to_thread(metric, ls, "picchio_logstore_subscription_frames_total")
                for ls in sc.logstores if ls.alive()])


async def test_entries_are_streamed_without_polling(service_cluster):
    """Fails on the old code: with a 5 s poll and no etcd bump the reader in
    another client would see each entry only at its next poll."""
    sc = service_cluster(**SLOW_POLL)
    async with logstore.Client(sc.config) as wc, logstore.Client(sc.config) as rc:
        w = await (await wc.create_log("streamed")).open_writer()
        first = await w.append(b"first")
        r = await (await rc.open_log("streamed")).open_reader(EARLIEST)
        assert (await r.read_next(timeout=10)).id == first
        took, ids = [], []
        for i in range(20):
            reading = asyncio.create_task(r.read_next(timeout=10))
            await waiting(r)  # so the entry cannot be found by the read that precedes the wait
            mid = await w.append(b"e%d" % i)
            acked = time.monotonic()
            m = await reading
            took.append(time.monotonic() - acked)
            ids.append(m.id)
            assert (m.id, m.payload) == (mid, b"e%d" % i)
        assert max(took) < 1.0, f"entries reached the reader after {took}s (it polls every 5 s)"
        assert r._sub is not None and r._sub.live and r._sub.delivered >= 20
        assert await frames(sc) >= 20
        await r.close()
        await w.close()


async def test_order_across_segment_rolls(service_cluster):
    """A new segment every 3 blocks (the writer's etcd bump names each new
    segment, the storage poll stays at 5 s): every acknowledged entry arrives
    once, in order, the reader moving from one segment's subscription to the
    next — one entry at a time, then in a burst."""
    sc = service_cluster(**{**SLOW_POLL, "woodpecker.client.tailPush.etcdNotify": True,
                            "woodpecker.client.segmentRollingPolicy.maxBlocks": 3})
    async with logstore.Client(sc.config) as wc, logstore.Client(sc.config) as rc:
        w = await (await wc.create_log("rolls")).open_writer()
        acked = [await w.append(b"start")]
        r = await (await rc.open_log("rolls")).open_reader(EARLIEST)
        got = [(await r.read_next(timeout=10)).id]
        frames0 = await frames(sc)
        for i in range(15):
            reading = asyncio.create_task(r.read_next(timeout=10))
            await waiting(r)
            acked.append(await w.append(b"r%d" % i))
            got.append((await reading).id)
        assert await frames(sc) > frames0, "the reader never used a stream"

        async def write() -> None:
            for i in range(30):
                acked.append(await w.append(b"b%d" % i))
        task = asyncio.create_task(write())
        while len(got) < 46:
            got.append((await r.read_next(timeout=15)).id)
        await task
        assert got == acked, "entries lost, duplicated or reordered across rolls"
        assert len({m.segment_id for m in acked}) >= 10, acked
        with pytest.raises(TimeoutError):
            m = await r.read_next(timeout=0.3)
            raise AssertionError(f"read {m.id} twice or never acknowledged")
        await r.close()
        await w.close()


async def test_reader_never_sees_past_the_lac(service_cluster):
    """Two of three replicas hang: the next entry is durable on one replica
    only, never acknowledged.  The reader, subscribed to that replica too,
    must not get it; once the others resume and the writer acknowledges it,
    it arrives.  Every entry read had been acknowledged when it was read."""
    sc = service_cluster(**SLOW_POLL, **{"woodpecker.client.quorum.requestTimeout": "20s"})
    keep, hung = sc.logstores[0], sc.logstores[1:]
    rcfg = sc.client_config(**{"woodpecker.client.quorum.requestTimeout": "1s"})
    async with logstore.Client(sc.config) as wc, logstore.Client(rcfg) as rc:
        w = await (await wc.create_log("lac")).open_writer()
        acked: set = set()

        def append(p: bytes) -> asyncio.Future:
            f = asyncio.ensure_future(w.append(p))
            f.add_done_callback(lambda f: f.exception() is None and acked.add(f.result()))
            return f
        ids = [await append(b"a%d" % i) for i in range(5)]
        r = await (await rc.open_log("lac")).open_reader(EARLIEST)
        seen = []
        for _ in ids:
            m = await r.read_next(timeout=10)
            assert m.id in acked, f"{m.id} read before it was acknowledged"
            seen.append(m.id)
        assert seen == ids
        with pytest.raises(TimeoutError):  # the reader goes to wait: it subscribes
            await r.read_next(timeout=0.5)
        await until(lambda: r._sub is not None and r._sub.live == 3, "the reader's streams to all three replicas")
        base = await asyncio.to_thread(metric, keep, "picchio_logstore_entries_total")
        for s in hung:
            s.pause()
        try:
            pending = append(b"not-yet-acknowledged")
            await until(lambda: metric(keep, "picchio_logstore_entries_total") >= base + 1,
                        "the entry to be durable on the running replica", timeout=10)
            with pytest.raises(TimeoutError):
                m = await r.read_next(timeout=2.0)
                raise AssertionError(f"the reader saw {m.id} {m.payload!r} before the writer acknowledged it")
            assert r._sub.live >= 1 and not pending.done()
        finally:
            for s in hung:
                s.resume()
        late = await asyncio.wait_for(pending, 30)
        m = await r.read_next(timeout=10)
        assert m.id == late and m.id in acked and m.payload == b"not-yet-acknowledged"
        # a steady stream of appends: nothing is ever read ahead of its acknowledgement
        writes = [append(b"b%d" % i) for i in range(50)]
        for f in writes:
            m = await r.read_next(timeout=10)
            assert m.id in acked, f"{m.id} read before it was acknowledged"
            assert m.id == await f
        await r.close()
        await w.close()


@pytest.mark.parametrize("fault", ["kill", "wipe"])
async def test_logstore_dies_mid_stream(service_cluster, fault):
    """A LogStore of the ensemble is killed (or comes back on an empty disk: a
    new instance, refused) while the reader is subscribed: the reader goes on
    from the other replicas' streams and its ordinary reads — every
    acknowledged entry once, in order."""
    sc = service_cluster(**SLOW_POLL, **{"woodpecker.client.quorum.requestTimeout": "2s",
                                         "woodpecker.client.reader.metaPollInterval": "0.2s"})
    async with logstore.Client(sc.config) as wc, logstore.Client(sc.config) as rc:
        w = await (await wc.create_log("dies")).open_writer()
        acked = [await w.append(b"start")]
        r = await (await rc.open_log("dies")).open_reader(LATEST)
        acked.append(await w.append(b"one"))
        got = [(await r.read_next(timeout=10)).id]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.3)
        await until(lambda: r._sub is not None and r._sub.live == 3, "the reader's streams to all three replicas")
        sub = r._sub
        stop = asyncio.Event()

        async def write() -> None:
            i = 0
            while not stop.is_set() or i < 60:
                try:
                    acked.append(await w.append(b"d%d" % i))
                except logstore.LogstoreError:
                    pass  # failed appends were never acknowledged: never read
                i += 1
                await asyncio.sleep(0.01)
        task = asyncio.create_task(write())
        while len(got) < 20:
            got.append((await r.read_next(timeout=15)).id)
        victim = sc.logstores[0]
        if fault == "kill":
            await asyncio.to_thread(victim.kill)
        else:
            await asyncio.to_thread(victim.wipe_and_restart)
        await until(lambda: sub.live < 3 or sub.ended, "the stream from the dead LogStore to end", timeout=10)
        stop.set()
        await task
        while len(got) < len(acked) - 1:
            got.append((await r.read_next(timeout=15)).id)
        with pytest.raises(TimeoutError):
            m = await r.read_next(timeout=0.5)
            raise AssertionError(f"read {m.id} that was never acknowledged (or twice)")
        assert got == acked[1:], "entries lost, duplicated or reordered"
        assert sub.delivered > 0
        await r.close()
        await w.close()


async def test_subscription_ends_when_the_segment_is_completed(service_cluster):
    """The writer closes (the segment is completed and compacted): the stream
    ends with the segment's end, the reader reads the rest from its ordinary
    path, and a new writer's entries reach it in the next segment."""
    sc = service_cluster(**SLOW_POLL, **{"woodpecker.client.reader.metaPollInterval": "0.1s"})
    async with logstore.Client(sc.config) as wc, logstore.Client(sc.config) as rc:
        log = await wc.create_log("ends")
        w = await log.open_writer()
        acked = [await w.append(b"x%d" % i) for i in range(3)]
        r = await (await rc.open_log("ends")).open_reader(EARLIEST)
        got = [(await r.read_next(timeout=10)).id for _ in acked]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.3)
        await until(lambda: r._sub is not None and r._sub.live, "a live subscription")
        sub = r._sub
        acked.append(await w.append(b"last"))
        await w.close()
        await until(lambda: sub.ended, "the streams to end with the completed segment", timeout=10)
        assert sub.eof
        w2 = await log.open_writer()
        acked.append(await w2.append(b"next-writer"))
        while len(got) < len(acked):
            got.append((await r.read_next(timeout=15)).id)
        assert got == acked
        await r.close()
        await w2.close()


async def test_reader_certificate_may_subscribe(service_cluster, tmp_path):
    """mTLS with authorization: a reader-role certificate subscribes (and its
    entries arrive without polling); a certificate without a role is refused."""
    from picchio_harness.pki import CertificateAuthority
    from test_service_mtls import _server, client_tls, server_tls

    ca = CertificateAuthority(tmp_path / "ca")
    srv = _server(ca, "logstore")
    reader, norole = ca.issue("reader", "reader:tail"), ca.issue("norole", "picchio-client")
    writer = ca.issue("writer", "writer:app")
    sc = service_cluster(logstore_overrides=server_tls(srv.cert, srv.key, ca.pair.cert), **SLOW_POLL)
    wcfg = sc.client_config(**client_tls(ca.pair.cert, writer))
    rcfg = sc.client_config(**client_tls(ca.pair.cert, reader))
    async with logstore.Client(wcfg) as wc, logstore.Client(rcfg) as rc:
        w = await (await wc.create_log("tls")).open_writer()
        acked = [await w.append(b"t0")]
        r = await (await rc.open_log("tls")).open_reader(EARLIEST)
        got = [(await r.read_next(timeout=10)).id]
        for i in range(1, 6):
            reading = asyncio.create_task(r.read_next(timeout=10))
            await waiting(r)
            acked.append(await w.append(b"t%d" % i))
            t0 = time.monotonic()
            got.append((await reading).id)
            assert time.monotonic() - t0 < 1.0, "not streamed (the reader polls every 5 s)"
        assert got == acked and r._sub is not None and r._sub.delivered >= 5
        await r.close()
        await w.close()
    node = Node(sc.logstores[0].endpoint, sc.client_config(**client_tls(ca.pair.cert, norole)),
                options=(("grpc.use_local_subchannel_pool", 1),))
    try:
        req = SubscribeEntriesRequest(wcfg["minio.bucketName"], wcfg["minio.rootPath"], 1, 0).encode()
        with pytest.raises(logstore.PermissionDeniedError, match="SubscribeEntries"):
            await node.call("SubscribeEntries", req, 2.0)
    finally:
        await node.close()
    _, body = http_get(sc.logstores[0].http_port, "/metrics")
    assert 'picchio_logstore_authz_denied_total{role="none",rpc="SubscribeEntries"} 1' in body
