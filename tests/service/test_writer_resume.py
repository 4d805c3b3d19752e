"""No false split-brain (issue 9, defect 6): when the quorum is gone — the
LogStores dead and their registrations expired — an append fails with
QuorumUnavailableError, and so does the next one (never WriterFencedError: no
other writer exists); once LogStores are back, the SAME writer appends again
and nothing acknowledged is lost."""
from __future__ import annotations

import asyncio

import pytest

import logstore
from logstore import EARLIEST
from logstore.meta import MetaStore
from logstore.server.membership import live_logstores
from svcutil import until  # noqa: E402


async def test_quorum_gone_then_back_same_writer_resumes_without_false_fencing(service_cluster):
    ttl, timeout = 2.0, 1.0
    sc = service_cluster(logstore_overrides={"woodpecker.logstore.registrationTTL": f"{ttl}s"},
                         **{"woodpecker.client.quorum.requestTimeout": f"{timeout}s"})
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("resume")
        w = await log.open_writer()
        before = [await w.append(b"a%d" % i) for i in range(10)]
        dead = sc.logstores[:2]
        for s in dead:
            s.kill()
        meta = MetaStore(sc.config)
        await meta.connect()
        try:
            async def expired():
                return len(await live_logstores(meta)) == 1
            await until(expired, "the dead LogStores' registrations to expire", timeout=ttl + 5)
        finally:
            await meta.close()
        loop = asyncio.get_running_loop()
        for attempt in range(3):  # each one: the typed quorum error, within its bound — never "fenced"
            t0 = loop.time()
            with pytest.raises(logstore.QuorumUnavailableError):
                await asyncio.wait_for(w.append(b"lost-%d" % attempt), 10 * timeout)
            assert loop.time() - t0 <= 3 * timeout + 0.5
        assert not w.fenced
        for s in dead:
            s.start()

        async def appended():
            try:
                return await w.append(b"b0")
            except logstore.QuorumUnavailableError:
                return None
        after = await until(appended, "the same writer to append again", timeout=30, interval=0.2)
        await w.close()
        assert after.segment_id > before[-1].segment_id
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(11)]
        assert [m.id for m in got] == before + [after]
        assert [m.payload for m in got] == [b"a%d" % i for i in range(10)] + [b"b0"]
        with pytest.raises(TimeoutError):  # the failed appends never appear
            await r.read_next(timeout=0.5)
