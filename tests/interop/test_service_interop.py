"""Service mode across implementations: Woodpecker's client (v0.1.35) appending to three
``picchio logstore serve``, and picchio's client appending to three of Woodpecker's own
LogStores; each log read back byte for byte by the other side's client; and writers of the two
clients fencing each other on picchio's LogStores."""
from __future__ import annotations

import asyncio

import pytest

import logstore
from logstore import EARLIEST, MessageId
from wp import (SIZE_ARG, acks, append_all, check_picchio_read, check_wp_read, entries, payload, read_picchio,
                register_in_etcd, size_of, take_over_from_woodpecker, unique)

N = 40


# -- Woodpecker's client, picchio's LogStores -------------------------------------------------

async def test_woodpecker_client_on_picchio_logstores(service_cluster, wp):
    """Woodpecker's service-mode client finds picchio's LogStores through a seed (SelectNodes),
    appends batches to an ensemble of three (Buffered, then Synced frames), closes; picchio's
    client reads every acknowledged entry back byte for byte, and so does Woodpecker's."""
    sc = service_cluster(3)
    w = wp(sc.config, seeds=[s.endpoint for s in sc.logstores])
    name, tag = unique("wpsvc"), unique("t")
    lines = await asyncio.to_thread(w.run, "write", "--log", name, "--create", "--count", str(N), "--size",
                                    SIZE_ARG, "--tag", tag, "--inflight", "8")
    wp_acks = acks(lines)
    assert len(wp_acks) == N, lines[-3:]
    check_picchio_read(await read_picchio(sc.config, name, N), wp_acks, tag)
    async with logstore.Client(sc.config) as c:
        segs = await (await c.open_log(name)).segments()
    assert {s.state for s in segs} <= {"Completed", "Sealed"}, segs
    back = await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(N))
    check_wp_read(back, [MessageId(a["seg"], a["entry"]) for a in wp_acks], tag, [a["i"] for a in wp_acks])


async def test_woodpecker_reads_picchio_client_on_picchio_logstores(service_cluster, wp):
    """picchio's client appends through its own LogStores; Woodpecker's service-mode client reads
    the log from the LogStores while the segment is Active (and waits at its end: the LogStore
    answers "entry not found" there, not an empty OK), then from object storage once Sealed."""
    sc = service_cluster(3)
    w = wp(sc.config, seeds=[s.endpoint for s in sc.logstores])
    name, tag = unique("psvc"), unique("t")
    async with logstore.Client(sc.config) as c:
        log = await c.create_log(name)
        async with await log.open_writer() as writer:
            ids = await append_all(writer, tag, range(N))
            assert [s.state for s in await log.segments()] == ["Active"]
            live = await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(N))
            check_wp_read(live, ids, tag)
            tail = await asyncio.to_thread(w.run, "read", "--log", name, "--from",
                                           f"{ids[-1].segment_id}:{ids[-1].entry_id + 1}", "--idle-ms", "1500")
            assert entries(tail) == []
        assert [s.state for s in await log.segments()] == ["Sealed"]
    check_wp_read(await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(N)), ids, tag)


async def test_woodpecker_writer_fences_picchio_writer_on_picchio_logstores(service_cluster, wp):
    """On picchio's LogStores: picchio's writer holds the log; Woodpecker's writer opens it
    (FenceSegment to the ensemble, recovery of the LAC) and appends; picchio's next append fails
    with WriterFencedError; every acknowledged entry of both reads back, picchio's first."""
    sc = service_cluster(3)
    w = wp(sc.config, seeds=[s.endpoint for s in sc.logstores])
    name, tag, a, b = unique("svch1"), unique("t"), 10, 10
    async with logstore.Client(sc.config) as c:
        writer = await (await c.create_log(name)).open_writer()
        p_ids = await append_all(writer, tag, range(a))
        wp_acks = acks(await asyncio.to_thread(w.run, "write", "--log", name, "--start", str(a), "--count", str(b),
                                               "--size", SIZE_ARG, "--tag", tag, "--inflight", "8"))
        assert len(wp_acks) == b
        with pytest.raises(logstore.WriterFencedError):
            await writer.append(b"too late")
        await writer.close()
    all_ids = p_ids + [MessageId(x["seg"], x["entry"]) for x in wp_acks]
    got = await read_picchio(sc.config, name, a + b)
    assert [m.id for m in got] == all_ids
    assert [m.payload for m in got] == [payload(tag, i, size_of(i)) for i in range(a + b)]
    check_wp_read(await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(a + b)), all_ids, tag)


async def test_picchio_writer_fences_woodpecker_writer_on_picchio_logstores(service_cluster, wp):
    """On picchio's LogStores: Woodpecker's writer appends steadily; picchio's writer takes the
    log over mid-stream.  Woodpecker's appends fail from then on; every entry it acknowledged
    is in the log, before picchio's."""
    sc = service_cluster(3)
    w = wp(sc.config, seeds=[s.endpoint for s in sc.logstores])
    name, tag, b = unique("svch2"), unique("t"), 10
    async with logstore.Client(sc.config) as c:
        wp_acks, p_ids = await take_over_from_woodpecker(await c.create_log(name), w, tag, b)
    got = await read_picchio(sc.config, name, len(wp_acks) + b)
    check_picchio_read(got[:len(wp_acks)], wp_acks, tag)
    assert [m.id for m in got[len(wp_acks):]] == p_ids


# -- picchio's client, Woodpecker's LogStores -------------------------------------------------

async def test_picchio_client_on_woodpecker_logstores(make_config, woodpecker_logstores, wp):
    """picchio's client appends to an ensemble of three of Woodpecker's own LogStores (registered in
    etcd for it, see register_in_etcd), reads the log back while its writer is open (from the
    LogStores) and after closing it (compacted by a Woodpecker LogStore into MinIO); Woodpecker's
    own service-mode client reads the same bytes."""
    cfg = make_config("minio").with_values({"woodpecker.storage.type": "service"})
    stores = woodpecker_logstores(cfg, 3)
    register_in_etcd(cfg, stores)
    name, tag = unique("p2wls"), unique("t")
    async with logstore.Client(cfg) as c:
        log = await c.create_log(name)
        w = await log.open_writer()
        ids = await append_all(w, tag, range(N))
        assert [s.state for s in await log.segments()] == ["Active"]
        r = await log.open_reader(EARLIEST)
        live = [await r.read_next(timeout=20) for _ in range(N)]
        await w.close()
        segs = await log.segments()
    for got in (live, await read_picchio(cfg, name, N)):
        assert [m.id for m in got] == ids
        assert [m.payload for m in got] == [payload(tag, i, size_of(i)) for i in range(N)]
    assert [s.state for s in segs] == ["Sealed"], segs
    lines = await asyncio.to_thread(wp(cfg, seeds=[s.endpoint for s in stores]).run, "read", "--log", name,
                                    "--count", str(N))
    check_wp_read(lines, ids, tag)


async def test_picchio_client_many_logs_on_woodpecker_logstores_without_write_batch(make_config, woodpecker_logstores):
    """Two logs at once on Woodpecker's LogStores: their writes meet in one turn,
    so the client tries WriteBatch, which Woodpecker's LogStore does not have
    (UNIMPLEMENTED); it must go back to one call each — for those very
    requests, nothing lost — and not try again."""
    cfg = make_config("minio").with_values({"woodpecker.storage.type": "service"})
    stores = woodpecker_logstores(cfg, 3)
    register_in_etcd(cfg, stores)
    names, tag = [unique("wb1"), unique("wb2")], unique("t")
    async with logstore.Client(cfg) as c:
        logs = [await c.create_log(n) for n in names]
        ws = [await log.open_writer() for log in logs]
        ids = await asyncio.gather(*(append_all(w, tag, range(N)) for w in ws))
        nodes = list(c.backend._nodes.values())  # type: ignore[attr-defined]
        assert nodes and all(not n.batching for n in nodes), "each LogStore should have answered UNIMPLEMENTED"
        for w in ws:
            await w.close()
    for name, want in zip(names, ids):
        got = await read_picchio(cfg, name, N)
        assert [m.id for m in got] == want
        assert [m.payload for m in got] == [payload(tag, i, size_of(i)) for i in range(N)]
