"""Service-mode promises of the README that had no test of their own, each
against real LogStore processes on a real etcd and S3:

* the LAC hides unacknowledged entries from readers of the active segment;
* a new writer recovers (fences, takes the LAC, completes) a segment while one
  member of its ensemble is down, and every acknowledged entry is there — and
  that completion uploads the segment (then the replicas drop their copies);
* once a segment is uploaded every replica drops its staged copy, and readers
  get the data from the bucket;
* a crashed (SIGKILLed) LogStore's registration expires after its lease TTL;
* ``zone-spread`` spreads ensembles over the zones LogStores register with.

Waits poll a condition under a deadline; every bound is a documented setting
(request timeout, registration TTL) plus a stated margin.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml

import logstore
from logstore import EARLIEST
from logstore.meta import MetaStore
from logstore.proto import SegmentState
from logstore.server.membership import live_logstores
from picchio_harness.logstores import LogStoreProc, logstore_config, wait_registered
from picchio_harness.procs import Proc, free_port

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from crash_writer import payload  # noqa: E402
from crashcheck import check_exactly_once, read_back, run_cycle  # noqa: E402
from svcutil import http_get, until  # noqa: E402

pytestmark = pytest.mark.cluster  # MinIO and etcd: Go-built components


# -- helpers local to this module ---------------------------------------------------------------

def metric(s: LogStoreProc, name: str) -> float:
    """A counter or gauge from the LogStore's /metrics (0 when not yet set)."""
    text = http_get(s.http_port, "/metrics")[1]
    vals = [float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(name + " ")]
    return vals[0] if vals else 0.0


async def afetch(fn, *a):
    return await asyncio.to_thread(fn, *a)


def pause(s: LogStoreProc) -> None:
    """SIGSTOP: the process holds its sockets but answers nothing (a hung node)."""
    os.killpg(s.proc.pid, signal.SIGSTOP)


def resume(s: LogStoreProc) -> None:
    if s.alive():
        os.killpg(s.proc.pid, signal.SIGCONT)


@asynccontextmanager
async def meta_of(cfg: logstore.Config):
    m = MetaStore(cfg)
    await m.connect()
    try:
        yield m
    finally:
        await m.close()


async def registered(cfg: logstore.Config) -> dict[str, dict]:
    async with meta_of(cfg) as m:
        return {n["endpoint"]: n for n in await live_logstores(m)}


def files_holding(root: Path, markers: list[bytes]) -> list[str]:
    """Files under ``root`` that contain any of ``markers``."""
    hits = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            try:
                data = p.read_bytes()
            except OSError:  # removed while we looked
                continue
            if any(mk in data for mk in markers):
                hits.append(str(p))
    return hits


# -- 1. the LAC hides unacknowledged entries ------------------------------------------------------
async def test_lac_hides_unacknowledged_entry_from_reader_of_active_segment(service_cluster):
    """Two of three replicas hang, so the next entry reaches one replica only:
    it is durable there but not acknowledged (ack quorum 2).  A reader in
    another client, reading the active segment from the LogStores — including
    the replica holding the entry — must not see it until the writer's ack."""
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": "20s"})
    reader_cfg = sc.client_config(**{"woodpecker.client.quorum.requestTimeout": "0.5s"})
    keep, hung = sc.logstores[0], sc.logstores[1:]
    async with logstore.Client(sc.config) as cw, logstore.Client(reader_cfg) as cr:
        log = await cw.create_log("lac")
        w = await log.open_writer()
        acked = [await w.append(b"acked-%d" % i) for i in range(5)]
        r = await (await cr.open_log("lac")).open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in range(5)]  # the LAC reached the replicas
        assert [m.id for m in got] == acked
        assert (await cr.meta.segments("lac"))[0].value.state == SegmentState.ACTIVE
        base = await afetch(metric, keep, "picchio_logstore_entries_total")
        for s in hung:
            pause(s)
        try:
            task = asyncio.create_task(w.append(b"not-yet-acknowledged"))
            await until(lambda: metric(keep, "picchio_logstore_entries_total") >= base + 1,
                        "the entry to be durable on the one running replica", timeout=10)
            reads_before = await afetch(metric, keep, "picchio_logstore_reads_total")
            with pytest.raises(TimeoutError):
                seen = await r.read_next(timeout=3.0)
                raise AssertionError(f"reader saw {seen.id} {seen.payload!r} before the writer acknowledged it")
            assert await afetch(metric, keep, "picchio_logstore_reads_total") > reads_before, \
                "the reader asked the replica that holds the entry"
            assert not task.done(), "the entry stayed unacknowledged while the reader looked"
        finally:
            for s in hung:
                resume(s)
        mid = await asyncio.wait_for(task, 25)
        assert mid == logstore.MessageId(acked[-1].segment_id, acked[-1].entry_id + 1)
        m = await r.read_next(timeout=10)
        assert (m.id, m.payload) == (mid, b"not-yet-acknowledged")
        await w.close()


# -- 2. recovery with one LogStore down ------------------------------------------------------------
async def test_recovery_with_one_ensemble_member_down(service_cluster):
    """A writer process is SIGKILLed mid-stream; one LogStore of the segment's
    ensemble is SIGKILLed too.  A new writer fences the two left (ensemble −
    ack + 1 = 2 replies), takes the LAC, completes the segment and goes on;
    every acknowledged entry reads back exactly once, in order, byte-exact."""
    timeout = 2.0
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": f"{timeout}s"})
    async with logstore.Client(sc.config) as c:
        await c.create_log("rec")
    acked = await asyncio.to_thread(run_cycle, sc.config.to_dict(), "rec", 0, random.Random(3), (0.4, 0.8))
    assert acked, "the writer acknowledged entries before its crash"
    async with logstore.Client(sc.config) as c:
        segs = await c.meta.segments("rec")
        assert [v.value.state for v in segs] == [SegmentState.ACTIVE], "the crashed writer left segment 0 active"
        q = segs[0].value.quorum
        victim = next(s for s in sc.logstores if s.endpoint == q.nodes[0])
        victim.kill()
        log = await c.open_log("rec")
        w = await asyncio.wait_for(log.open_writer(), 10 * timeout)  # (wait_for: a hang fails, not blocks)
        seg0 = (await c.meta.get_segment("rec", 0)).value
        assert seg0.state in (SegmentState.COMPLETED, SegmentState.SEALED), seg0.state
        last_acked = max(int(mid.split(":")[1]) for _, _, mid in acked if mid.startswith("0:"))
        assert seg0.last_entry_id >= last_acked, (seg0.last_entry_id, last_acked)
        extra = await w.append(payload(99, 0))  # the new writer acknowledges with the LogStore still down
        assert extra.segment_id == 1
        await w.close()
    acked.append((99, 0, str(extra)))
    got = await read_back(sc.config, "rec", idle=2.0)
    check_exactly_once(got, acked)
    assert not victim.alive()


async def test_recovered_segment_is_uploaded_while_one_ensemble_member_down(service_cluster):
    """The writer that recovers a crashed writer's segment completes it, and
    completion means upload (README: "On completion one replica holding every
    entry up to the LAC uploads m_k.blk + footer.blk, then all replicas drop
    their copies") — with one LogStore of its ensemble down, and without
    waiting for yet another writer to come along."""
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": "2s"})
    async with logstore.Client(sc.config) as c:
        await c.create_log("rec-up")
    acked = await asyncio.to_thread(run_cycle, sc.config.to_dict(), "rec-up", 0, random.Random(4), (0.3, 0.6))
    assert acked
    async with logstore.Client(sc.config) as c:
        q = (await c.meta.segments("rec-up"))[0].value.quorum
        victim = next(s for s in sc.logstores if s.endpoint == q.nodes[0])
        victim.kill()
        log = await c.open_log("rec-up")
        w = await log.open_writer()
        await w.close()  # waits for the compactions it started
        state = await until(lambda: _sealed(c, "rec-up", 0), "segment 0 to be uploaded (Sealed)", timeout=10,
                            interval=0.1)
        assert state
        keys = {o.key.rsplit("/", 1)[1] for o in
                await c.backend.objects.s3.list(c.backend.objects.key(log.log_id, 0, ""))}
        assert {"footer.blk", "m_0.blk"} <= keys, keys
    for s in sc.logstores:
        if s is not victim:
            seg_dirs = [p.parent for p in s.data_dir.rglob("data.log") if p.parent.name == "0"]
            assert not seg_dirs, f"{s.name} still stages segment 0 after its upload: {seg_dirs}"
    check_exactly_once(await read_back(sc.config, "rec-up", idle=1.0), acked)


async def _sealed(c: logstore.Client, name: str, seg: int) -> bool:
    v = await c.meta.get_segment(name, seg)
    return v is not None and v.value.state == SegmentState.SEALED


# -- 3. replicas drop their copies after the upload -------------------------------------------------
async def test_replicas_drop_staged_copies_after_upload_reads_come_from_bucket(service_cluster):
    sc = service_cluster()
    markers = [b"picchio-drop-marker-%05d-" % i for i in range(40)]
    payloads = [mk + os.urandom(1500) for mk in markers]
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("drop")
        w = await log.open_writer()
        ids = await asyncio.gather(*(w.append(p) for p in payloads))
        # staged on every replica while the segment is active (the scan below can see them)
        for s in sc.logstores:
            await until(lambda s=s: set(files_holding(s.data_dir, markers[-1:])),
                        f"the last entry staged on {s.name}", timeout=10)
        await w.close()  # completes, uploads, replicas drop their copies
        segs = await log.segments()
        assert segs[0].state == "Sealed", segs
        keys = {o.key.rsplit("/", 1)[1] for o in
                await c.backend.objects.s3.list(c.backend.objects.key(log.log_id, 0, ""))}
        assert {"footer.blk", "m_0.blk"} <= keys, keys
    for s in sc.logstores:
        await until(lambda s=s: not files_holding(s.data_dir, markers) and not list(s.data_dir.rglob("data.log")),
                    f"{s.name} to drop its staged copy", timeout=10)
    reads_before = [await afetch(metric, s, "picchio_logstore_reads_total") for s in sc.logstores]
    async with logstore.Client(sc.config) as c:
        r = await (await c.open_log("drop")).open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in payloads]
    assert [m.payload for m in got] == payloads and [m.id for m in got] == ids
    assert [await afetch(metric, s, "picchio_logstore_reads_total") for s in sc.logstores] == reads_before, \
        "the sealed segment was read from the bucket, not from a LogStore"


# -- 4. a crashed LogStore's registration expires ---------------------------------------------------
async def test_crashed_logstore_registration_expires_after_ttl(service_cluster):
    ttl = 2.0
    sc = service_cluster(logstore_overrides={"woodpecker.logstore.registrationTTL": f"{ttl}s"})
    victim, others = sc.logstores[0], sc.logstores[1:]
    assert set(await registered(sc.config)) == {s.endpoint for s in sc.logstores}
    loop = asyncio.get_running_loop()
    victim.kill()  # SIGKILL: no graceful deregistration
    t_kill = loop.time()
    assert victim.endpoint in await registered(sc.config), "a SIGKILL does not deregister: the lease must expire"
    margin = 2.0  # etcd's lessor checks expiry every 500 ms; polling and scheduling on 2 cores
    async with meta_of(sc.config) as m:
        async def gone():
            live = {n["endpoint"] for n in await live_logstores(m)}
            assert {s.endpoint for s in others} <= live, f"a live LogStore lost its registration: {live}"
            return victim.endpoint not in live
        await until(gone, "the crashed LogStore's registration to expire", timeout=ttl + margin, interval=0.05)
        expired_after = loop.time() - t_kill
        # the live ones keep theirs well past one TTL (their keep-alive works)
        while loop.time() - t_kill < 2 * ttl + 0.5:
            live = {n["endpoint"] for n in await live_logstores(m)}
            assert live == {s.endpoint for s in others}, live
            await asyncio.sleep(0.1)
    assert expired_after <= ttl + margin
    # a client that never talked to the dead LogStore builds its ensemble from the live registrations
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("after-expiry")
        async with await log.open_writer() as w:
            mid = await w.append(b"x")
        q = (await c.meta.segments("after-expiry"))[0].value.quorum
        assert victim.endpoint not in q.nodes and sorted(q.nodes) == sorted(s.endpoint for s in others)
        r = await log.open_reader(EARLIEST)
        assert (await r.read_next(timeout=10)).id == mid


# -- 5. zone-spread with real registrations ----------------------------------------------------------
class ZonedLogStore(LogStoreProc):
    """A LogStore started with ``--zone`` on its command line."""

    def start(self, timeout: float = 30.0) -> "ZonedLogStore":
        ready = self.data_dir.parent / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        env = {"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
        self.proc = Proc(self.name, [sys.executable, "-m", "logstore.server.main", "serve", "--config",
                                     str(self.config_path), "--ready-file", str(ready),
                                     "--zone", self.extra["zone"]], self.log_path, env=env).start()
        self.proc.wait_ready(ready.exists, timeout=timeout)
        return self


def _distinct_ports(n: int) -> list[int]:
    """``n`` different free ports (two calls of free_port can return the same one)."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


async def test_zone_spread_ensembles_from_real_registrations(make_config, tmp_path, etcd, s3):  # s3: MinIO
    zones = ["zone-a", "zone-a", "zone-a", "zone-b", "zone-c"]
    base = make_config("minio", **{"woodpecker.client.quorum.strategy": "zone-spread"})
    ports = _distinct_ports(2 * len(zones))
    stores: list[ZonedLogStore] = []
    try:
        for i, zone in enumerate(zones):
            data = tmp_path / "logstores" / f"logstore-{i}"
            data.mkdir(parents=True)
            cfg = logstore_config(base.to_dict(), data, ports[2 * i], ports[2 * i + 1])
            path = data.parent / f"logstore-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            stores.append(ZonedLogStore(f"logstore-{i}", ports[2 * i], ports[2 * i + 1], data, path,
                                        data.parent / f"logstore-{i}.log", extra={"zone": zone}))
        for s in stores:
            s.start()
        await asyncio.to_thread(wait_registered, base.meta_prefix, etcd.endpoint, len(zones))
        config = base.with_values({"woodpecker.storage.type": "service"})
        regs = await registered(config)
        zone_of = {ep: n["zone"] for ep, n in regs.items()}
        assert zone_of == {s.endpoint: s.extra["zone"] for s in stores}, "each LogStore registered its --zone"
        # random choice spreads 3 of these 5 over all three zones 3 times in 10: 8 segments → 0.3⁸ ≈ 7e-5
        async with logstore.Client(config) as c:
            for i in range(8):
                name = f"z{i}"
                log = await c.create_log(name)
                async with await log.open_writer() as w:
                    mid = await w.append(b"z%d" % i)
                q = (await c.meta.segments(name))[0].value.quorum  # the QuorumInfo recorded in etcd
                assert q.es == 3 and len(q.nodes) == 3
                assert sorted(zone_of[n] for n in q.nodes) == ["zone-a", "zone-b", "zone-c"], (i, q.nodes)
                r = await log.open_reader(EARLIEST)
                assert (await r.read_next(timeout=10)).id == mid
    finally:
        for s in stores:
            s.stop()
