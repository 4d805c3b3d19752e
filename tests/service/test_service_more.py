"""Service mode: fencing, writer crash cycles, TLS, disk watermarks, probes."""
import asyncio
import os
import random
import sys

from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST
from picchio_harness.pki import CertificateAuthority

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from crashcheck import check_exactly_once, read_back, run_cycle  # noqa: E402
from svcutil import http_get  # noqa: E402


async def test_fenced_old_writer(service_cluster):
    sc = service_cluster()
    async with logstore.Client(sc.config) as c1, logstore.Client(sc.config) as c2:
        log1 = await c1.create_log("f")
        w1 = await log1.open_writer()
        acked = [await w1.append(b"old%d" % i) for i in range(5)]
        w2 = await (await c2.open_log("f")).open_writer()
        with pytest.raises(logstore.WriterFencedError):
            await w1.append(b"late")
        new = await w2.append(b"new")
        assert new.segment_id > acked[-1].segment_id
        await w2.close()
        await w1.close()
        r = await log1.open_reader(EARLIEST)
        got = [(await r.read_next(timeout=10)).payload for _ in range(6)]
        assert got == [b"old%d" % i for i in range(5)] + [b"new"]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.3)


@pytest.mark.slow
async def test_writer_sigkill_cycles(service_cluster):
    sc = service_cluster()
    async with logstore.Client(sc.config) as c:
        await c.create_log("crashy")
    rng = random.Random(7)
    acked = []
    for cycle in range(6):
        acked += await asyncio.to_thread(run_cycle, sc.config.to_dict(), "crashy", cycle, rng, (0.05, 0.5))
    assert len(acked) > 20
    check_exactly_once(await read_back(sc.config, "crashy", idle=2.0), acked)


def _tls_files(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("logstore", "logstore", server=True, dns=("localhost",), ips=("127.0.0.1",))
    client = ca.issue("client", "writer:picchio-client")  # a role: authorization is on by default
    other = CertificateAuthority(tmp_path / "other-pki", cn="someone-else")
    return ca, server, client, other


async def test_tls_on_and_wrong_ca_refused(service_cluster, tmp_path):
    ca, server, client, other = _tls_files(tmp_path)
    tls = {"woodpecker.logstore.tls.enabled": True, "woodpecker.logstore.tls.caFile": str(ca.pair.cert),
           "woodpecker.logstore.tls.certFile": str(server.cert), "woodpecker.logstore.tls.keyFile": str(server.key),
           "woodpecker.logstore.tls.requireClientCert": True,
           "woodpecker.logstore.tls.clientCertFile": str(client.cert),
           "woodpecker.logstore.tls.clientKeyFile": str(client.key)}
    sc = service_cluster(logstore_overrides=tls, **{"woodpecker.client.quorum.requestTimeout": "2s"})
    good = sc.client_config(**tls)
    async with logstore.Client(good) as c:
        log = await c.create_log("tls")
        async with await log.open_writer() as w:
            mid = await w.append(b"secret")
        r = await log.open_reader(EARLIEST)
        assert (await r.read_next(timeout=5)).id == mid
    wrong_ca = sc.client_config(**{**tls, "woodpecker.logstore.tls.caFile": str(other.pair.cert)})
    plaintext = sc.client_config()
    no_client_cert = sc.client_config(**{**tls, "woodpecker.logstore.tls.clientCertFile": "",
                                         "woodpecker.logstore.tls.clientKeyFile": ""})
    for bad in (wrong_ca, plaintext, no_client_cert):
        async with logstore.Client(bad) as c:
            log = await c.open_log("tls")
            with pytest.raises(logstore.QuorumUnavailableError):
                w = await log.open_writer()  # fencing the old segment needs the LogStores
                await w.append(b"x")


async def _poll(cond, what: str, timeout: float = 15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (got := await asyncio.to_thread(cond)):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return got


def _entries(s) -> float:
    text = http_get(s.http_port, "/metrics")[1]
    line = [ln for ln in text.splitlines() if ln.startswith("picchio_logstore_entries_total ")]
    return float(line[0].split()[1]) if line else 0.0


async def test_disk_soft_and_hard_limits(service_cluster):
    """A 200 kB staging budget, soft limit 50 %, hard limit 80 %.  Watermarks
    count what a LogStore has written, what it has accepted and not yet written,
    and the incoming append: at 45 % an append of another 45 % is refused
    (StorageFullError naming the hard limit) rather than carrying the LogStores
    from below the soft limit past the hard one.  A LogStore restarted with a
    smaller budget that its staged data already exceeds is not ready (/readyz
    503) but alive; deleting the log frees the space: ready again.  Then the
    soft limit: appends are refused (retriable push-back) while the LogStore
    stays ready.  What was acknowledged before any push-back is intact."""
    import yaml
    budget, soft, hard = 200_000, 0.5, 0.8
    sc = service_cluster(logstore_overrides={"woodpecker.logstore.disk.maxBytes": budget,
                                             "woodpecker.logstore.disk.softLimit": soft,
                                             "woodpecker.logstore.disk.hardLimit": hard},
                         **{"woodpecker.client.quorum.requestTimeout": "2s",
                            "woodpecker.logstore.segmentSyncPolicy.maxFlushRetries": 2,
                            "woodpecker.logstore.segmentSyncPolicy.retryInterval": "50ms"})
    for s in sc.logstores:
        assert http_get(s.http_port, "/readyz")[0] == 200
    async with logstore.Client(sc.config) as c:
        # -- the hard limit: 0.45 of the budget, then 0.45 more would pass it: refused
        log = await c.create_log("hard")
        w = await log.open_writer()
        first = await w.append(os.urandom(90_000))
        with pytest.raises(logstore.StorageFullError) as e:
            await w.append(os.urandom(90_000))
        assert "hard limit" in str(e.value), e.value
        for s in sc.logstores:
            assert http_get(s.http_port, "/readyz")[0] == 200, "refused before the limit: still ready"
        assert all(s.alive() for s in sc.logstores), "a full disk never crashes a LogStore"
        await w.close()
        r = await (await c.open_log("hard")).open_reader(EARLIEST)
        assert (await r.read_next(timeout=5)).id == first
        await r.close()
        # -- above the hard limit (restarted with half the budget: 90 %): alive, not ready
        for s in sc.logstores:
            cfg = yaml.safe_load(s.config_path.read_text())
            s.config_path.write_text(yaml.safe_dump({**cfg, "woodpecker.logstore.disk.maxBytes": budget // 2}))
            s.stop()
            s.start()
            body = await _poll(lambda s=s: (lambda st, b: st == 503 and b)(*http_get(s.http_port, "/readyz")),
                               f"{s.name} to be not ready above the hard limit")
            assert "hard limit" in body, (s.name, body)
            assert http_get(s.http_port, "/healthz") == (200, "ok\n"), "above the hard limit: alive, not ready"
        # -- space frees: the log is deleted, its staged bytes dropped
        await c.delete_log("hard")
        for s in sc.logstores:
            await _poll(lambda s=s: http_get(s.http_port, "/readyz")[0] == 200, f"{s.name} ready again")
        for s in sc.logstores:  # back to the full budget for the soft limit
            cfg = yaml.safe_load(s.config_path.read_text())
            s.config_path.write_text(yaml.safe_dump({**cfg, "woodpecker.logstore.disk.maxBytes": budget}))
            s.stop()
            s.start()
        # -- the soft limit: 0.3, 0.6 (accepted from 30 %), then refused — still ready
        log = await c.create_log("soft")
        w = await log.open_writer()
        base = [_entries(s) for s in sc.logstores]
        acked = []
        for k in range(2):
            acked.append(await w.append(os.urandom(60_000)))
            # every replica has synced it before the next one (the ack needs only two of three, and a
            # replica checks its watermark against what it has written, not what it has queued)
            for s, b in zip(sc.logstores, base):
                await _poll(lambda s=s, b=b, k=k: _entries(s) >= b + k + 1, f"{s.name} to sync entry {k}")
        with pytest.raises(logstore.StorageFullError) as e:
            await w.append(os.urandom(60_000))
        assert "soft limit" in str(e.value), e.value
        for s in sc.logstores:
            assert http_get(s.http_port, "/readyz")[0] == 200, "the soft limit pushes back but keeps the node ready"
        assert all(s.alive() for s in sc.logstores)
        await w.close()
    async with logstore.Client(sc.config) as c:  # what was acknowledged before the push-back is intact
        r = await (await c.open_log("soft")).open_reader(EARLIEST)
        assert [(await r.read_next(timeout=5)).id for _ in acked] == acked


async def test_health_readiness_metrics(service_cluster):
    sc = service_cluster()
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("m")
        async with await log.open_writer() as w:
            for i in range(5):
                await w.append(b"x")
    s = sc.logstores[0]
    assert http_get(s.http_port, "/healthz") == (200, "ok\n")
    assert http_get(s.http_port, "/readyz")[0] == 200
    text = http_get(s.http_port, "/metrics")[1]
    line = [ln for ln in text.splitlines() if ln.startswith("picchio_logstore_entries_total ")]
    assert line and float(line[0].split()[1]) >= 5
    s.stop()  # graceful: deregisters at once (no waiting for the lease to expire)
    from logstore.meta import MetaStore
    from logstore.server.membership import live_logstores
    m = MetaStore(sc.config)
    await m.connect()
    try:
        nodes = [n["endpoint"] for n in await live_logstores(m)]
    finally:
        await m.close()
    assert s.endpoint not in nodes and len(nodes) == 2


async def test_woodpecker_rpcs_select_nodes_block_count(service_cluster):
    """The rest of Woodpecker's LogStore service answers: SelectNodes (from etcd
    membership), AddEntry (single), GetSegmentBlockCount."""
    from logstore.rpc import (AddEntryRequest, GetSegmentBlockCountRequest, LogEntry, NodeFilter,
                              SelectNodesRequest)
    from logstore.storage.service import Node

    sc = service_cluster()
    node = Node(sc.logstores[0].endpoint, sc.config)
    try:
        sel = await node.call("SelectNodes", SelectNodesRequest(filters=[NodeFilter(limit=2)]), 5)
        assert sel.total_count == 2 and all(n.endpoint.startswith("127.0.0.1:") for n in sel.nodes)
        r = await node.call("AddEntry", AddEntryRequest("b", "r", 9, LogEntry(0, 0, b"\x0a\x01x")), 5)
        assert r.entry_id == 0 and r.state == 1
        bc = await node.call("GetSegmentBlockCount", GetSegmentBlockCountRequest("b", "r", 9, 0), 5)
        assert bc.block_count == 1
    finally:
        await node.close()
