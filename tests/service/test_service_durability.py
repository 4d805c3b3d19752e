"""Service mode under replica faults (issue 9, defect 1): a lagging replica, a
replica restarted on an empty data dir, hung replicas.  Acknowledged entries
are never lost or hidden: they read back exactly once, in order, byte-exact —
or recovery raises a typed error within its deadline and succeeds later."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST, QuorumUnavailableError
from logstore.codec import BlockHeader
from logstore.proto import SegmentState, decode_layout
from logstore.rpc import AddEntriesRequest, Code, FenceSegmentRequest, LogEntry
from logstore.server.membership import live_logstores
from logstore.storage.service import NodeError

sys.path.insert(0, str(Path(__file__).parent))
from ack_writer import payload, seq_of  # noqa: E402
from svcutil import until  # noqa: E402

T = 1.0  # woodpecker.client.quorum.requestTimeout in these tests
QUICK = {"woodpecker.client.quorum.requestTimeout": f"{T:g}s"}
WRITER = Path(__file__).parent / "ack_writer.py"


def read_acks(path: Path) -> tuple[list[tuple[int, str]], list[str]]:
    acks, errors = [], []
    for ln in path.read_text().splitlines():
        parts = ln.split(" ", 2)
        if parts[0] == "ack" and len(parts) == 3:
            acks.append((int(parts[1]), parts[2]))
        elif parts[0] == "err":
            errors.append(ln)
    return acks, errors


async def read_all(cfg: logstore.Config, name: str, idle: float = 3.0) -> list[logstore.Message]:
    async with logstore.Client(cfg) as c:
        r = await (await c.open_log(name)).open_reader(EARLIEST)
        got = []
        while True:
            try:
                got.append(await r.read_next(timeout=idle))
            except TimeoutError:
                return got


def check_exactly_once(got: list[logstore.Message], acks: list[tuple[int, str]]) -> None:
    seqs = [seq_of(m.payload) for m in got]
    assert len(seqs) == len(set(seqs)), "an entry was read twice"
    assert seqs == sorted(seqs), "entries are read in append order"
    assert [m.id for m in got] == sorted(m.id for m in got)
    by_seq = {seq_of(m.payload): m for m in got}
    lost = [(s, mid) for s, mid in acks if s not in by_seq]
    assert not lost, f"{len(lost)} of {len(acks)} acknowledged entries lost, first {lost[:3]}"
    for s, mid in acks:
        assert by_seq[s].payload == payload(s), f"entry {s} not byte-exact"
        assert str(by_seq[s].id) == mid, f"acknowledged entry {s} moved from {mid} to {by_seq[s].id}"


async def open_writer_retrying(cfg: logstore.Config, name: str, timeout: float = 60.0) -> None:
    """A new writer (recovering every active segment), retried while recovery
    reports a typed, transient QuorumUnavailableError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            async with logstore.Client(cfg) as c:
                async with await (await c.open_log(name)).open_writer():
                    return
        except QuorumUnavailableError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def put(seg, first: int, n: int) -> None:
    """One block of entries first … first+n−1 straight through a segment writer."""
    await seg.write_block(BlockHeader(0, first, first + n - 1, 0, 0), [], [(payload(first + k), {}) for k in range(n)])


async def segment_with_c_dropped(sc, b, log_id: int):
    """A segment on replicas A, B, C where C missed a deadline and was dropped:
    A and B hold entries 0–19, C only 0–9 (resumed, it receives nothing more)."""
    q = await b.choose_quorum()
    by_ep = {s.endpoint: s for s in sc.logstores}
    a_ls, b_ls, c_ls = (by_ep[n] for n in q.nodes)
    seg = await b.create_segment(log_id, 0, quorum=q)
    await put(seg, 0, 10)
    c_ls.pause()
    await put(seg, 10, 10)  # acked by A and B
    await until(lambda: seg.degraded, "C dropped after the deadline", 3 * T)
    c_ls.resume()
    return q, seg, (a_ls, b_ls, c_ls)


# -- (a) the user's scenario ----------------------------------------------------------------------
async def test_lagging_replica_then_writer_crash_then_wipe_loses_nothing(service_cluster, tmp_path):
    """SIGSTOP one LogStore past the deadline while appending, resume it, keep
    appending, SIGKILL the writer, wipe one of the other two and restart it
    empty (the third is hung while the first recovery runs).  Recovery must not
    complete the segment at the lagging replica's position: every acked entry
    reads back — or recovery raises QuorumUnavailableError and succeeds later."""
    t = 2 * T  # this scenario runs beside a loaded machine's other work: a little more slack
    sc = service_cluster(**{"woodpecker.client.quorum.requestTimeout": f"{t:g}s"})
    async with logstore.Client(sc.config) as c:
        await c.create_log("user")
    acks_file = tmp_path / "acks.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, str(WRITER), json.dumps(sc.config.to_dict()), "user", str(acks_file)],
                             stdout=subprocess.DEVNULL, stderr=open(tmp_path / "writer.err", "w"), env=env)
    try:
        count = lambda: acks_file.exists() and len(read_acks(acks_file)[0])  # noqa: E731
        await until(lambda: (count() or 0) >= 200 or child.poll() is not None, "200 acks", 60)
        assert child.poll() is None, (tmp_path / "writer.err").read_text()
        async with logstore.Client(sc.config) as c:
            q = (await c.meta.segments("user"))[-1].value.quorum
        lagging = next(s for s in sc.logstores if s.endpoint in q.nodes)
        lagging.pause()
        paused_at, before = time.monotonic(), count()
        await until(lambda: count() >= before + 100 and time.monotonic() - paused_at > 2.5 * t, "acks while paused")
        lagging.resume()
        resumed = count()
        await until(lambda: count() >= resumed + 300, "acks after resume", 60)
    finally:
        child.kill()
        child.wait(10)
    acks, errors = read_acks(acks_file)
    assert not errors, (f"one slow LogStore made appends fail: {errors[:3]}\n"
                        + "\n".join((tmp_path / "writer.err").read_text().splitlines()[-20:]))
    others = [s for s in sc.logstores if s is not lagging]
    wiped, hung = others
    wiped.wipe_and_restart()
    hung.pause()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        async with logstore.Client(sc.config) as c:
            async with await (await c.open_log("user")).open_writer():
                pass
        recovered_early = True
    except QuorumUnavailableError:
        recovered_early = False
        assert loop.time() - t0 < 3 * t, "recovery without a genuine quorum fails within its deadline"
        async with logstore.Client(sc.config) as c:
            states = [v.value.state for v in await c.meta.segments("user")]
        assert SegmentState.ACTIVE in states, "a segment recovery could not decide on stays Active"
    finally:
        hung.resume()
    await open_writer_retrying(sc.config, "user")
    check_exactly_once(await read_all(sc.config, "user"), acks)
    # only the lagging replica could answer as a genuine instance: no quorum vouched for a LAC
    assert not recovered_early, "recovery completed a segment without es-aq+1 genuine replicas"


# -- (b) replica identity --------------------------------------------------------------------------
async def test_instance_id_is_durable_and_new_after_wipe(service_cluster):
    sc = service_cluster(**QUICK)
    ids = {s.endpoint: s.instance() for s in sc.logstores}
    assert all(ids.values()) and len(set(ids.values())) == 3
    async with logstore.Client(sc.config) as c:
        live = {n["endpoint"]: n.get("instance") for n in await live_logstores(c.meta)}
        assert live == ids, "each LogStore registers its instance id in etcd"
        log = await c.create_log("ident")
        w = await log.open_writer()
        acked = [await w.append(b"x%d" % i) for i in range(10)]
        q = (await c.meta.segments("ident"))[0].value.quorum
        assert q.instances == ids, "the segment records each replica's instance"

        same, wiped = sc.logstores[0], sc.logstores[1]
        same.stop()
        same.start()
        assert same.instance() == ids[same.endpoint], "a restart on the same data dir keeps the identity"
        old = ids[wiped.endpoint]
        wiped.wipe_and_restart()
        assert wiped.instance() and wiped.instance() != old, "an empty data dir is a new instance"

        async def registered() -> bool:
            return {n["endpoint"]: n.get("instance") for n in await live_logstores(c.meta)}.get(wiped.endpoint) \
                == wiped.instance()
        await until(registered, "the new instance registered", 15)

        # defense in depth: the new instance refuses requests meant for the old one
        node = c.backend.node(wiped.endpoint)
        fence = FenceSegmentRequest(c.backend.bucket, c.backend.root, log.log_id, 0)
        with pytest.raises(NodeError) as e:
            await node.call("FenceSegment", fence, T, expect=old)
        assert e.value.code == Code.WRONG_INSTANCE
        add = AddEntriesRequest(c.backend.bucket, c.backend.root, log.log_id, [LogEntry(0, 10, b"late")])
        with pytest.raises(NodeError) as e:
            await node.call("AddEntries", add, T, expect=old)
        assert e.value.code == Code.WRONG_INSTANCE
        seg_dir = wiped.data_dir / c.backend.bucket / c.backend.root / str(log.log_id) / "0"
        assert not seg_dir.exists(), "a refused request leaves no trace of the segment"
        await w.close()  # the writer seals with the two genuine replicas
        r = await log.open_reader(EARLIEST)
        assert [(await r.read_next(timeout=10)).id for _ in range(10)] == acked


async def test_recovery_does_not_count_a_wiped_replicas_nothing(service_cluster):
    """Replica C lags (dropped after missing a deadline), A and B hold every
    acked entry; A is wiped.  Recovery must not take A's "nothing" and C's old
    position as a quorum: with B hung it fails (typed); with B back it finds
    every entry."""
    sc = service_cluster(**QUICK)
    async with logstore.Client(sc.config) as c:
        b = c.backend
        q, seg, (a_ls, b_ls, c_ls) = await segment_with_c_dropped(sc, b, 4242)
        for first in range(20, 100, 10):
            await put(seg, first, 10)
        assert seg.bad == {c_ls.endpoint}
        a_ls.wipe_and_restart()
        b_ls.pause()
        t0 = time.monotonic()
        try:
            with pytest.raises(QuorumUnavailableError):
                await b.fence_and_recover(4242, 0, quorum=q)
            assert time.monotonic() - t0 < 2 * T + 1
        finally:
            b_ls.resume()
        rec = await b.fence_and_recover(4242, 0, quorum=q)
        assert rec.last_entry_id == 99, "recovery reached a genuine replica holding every acked entry"
        res = await b.scan(4242, 0, None, 1 << 20, quorum=q, sealed_last=99)
        entries = [bytes(r) for blk in res.blocks for r in blk.records]
        while not res.complete:
            res = await b.scan(4242, 0, res.cursor, 1 << 20, quorum=q, sealed_last=99)
            entries += [bytes(r) for blk in res.blocks for r in blk.records]
        assert [decode_layout(e)[0] for e in entries] == [payload(i) for i in range(100)]
        # B lost too (not yet compacted): only the lagging C is genuine; a reader
        # gets what C has, then a typed error — never an early end of the segment
        b_ls.wipe_and_restart()
        got, cursor = [], None
        with pytest.raises(QuorumUnavailableError):
            for _ in range(100):
                res = await b.scan(4242, 0, cursor, 1 << 20, quorum=q, sealed_last=99)
                assert not res.complete, "the lagging replica never ends the segment early"
                got += [decode_layout(bytes(r))[0] for blk in res.blocks for r in blk.records]
                cursor = res.cursor
        assert 10 <= len(got) < 100 and got == [payload(i) for i in range(len(got))]


def answer_late(node, rpc: str, seconds: float) -> None:
    """Nemesis: this replica answers ``rpc`` ``seconds`` late (a slow disk, a
    GC pause) — in the client, so the order of replies is the test's choice."""
    real = node.call

    async def call(name, req, timeout, expect=""):
        if name == rpc:
            await asyncio.sleep(seconds)  # the injected delay itself, not a wait for a condition
        return await real(name, req, timeout, expect)
    node.call = call


async def test_recovery_waits_for_the_replica_holding_the_last_entry(service_cluster):
    """A holds entries up to 29, B up to 19 (it hung during the last, unacked,
    block), C up to 9 (dropped earlier).  Fence answers come from A and B, so
    recovery completes at 29; the first two CompleteSegment answers come from B
    and C, which lag: recovery must wait for A's confirmation, not give up
    (seen in CI as a writer that could not open after a SIGKILL)."""
    sc = service_cluster(**QUICK)
    async with logstore.Client(sc.config) as c:
        b = c.backend
        q, seg, (a_ls, b_ls, c_ls) = await segment_with_c_dropped(sc, b, 4343)
        b_ls.pause()
        try:
            with pytest.raises(QuorumUnavailableError):
                await put(seg, 20, 10)  # reaches A only: never acknowledged
        finally:
            b_ls.resume()
        answer_late(b.node(c_ls.endpoint), "FenceSegment", 0.4 * T)
        answer_late(b.node(a_ls.endpoint), "CompleteSegment", 0.4 * T)
        rec = await b.fence_and_recover(4343, 0, quorum=q)
        assert rec.last_entry_id == 29


# -- (c) too few genuine replicas: a typed error within a bound --------------------------------------
async def test_recovery_with_two_hung_replicas_fails_typed_and_bounded(service_cluster):
    sc = service_cluster(**QUICK)
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("hung2")
        w = await log.open_writer()
        acked = [await w.append(b"h%d" % i) for i in range(20)]
        hung = sc.logstores[:2]
        for s in hung:
            s.pause()
        try:
            async with logstore.Client(sc.config) as c2:
                t0 = time.monotonic()
                with pytest.raises(QuorumUnavailableError):
                    await (await c2.open_log("hung2")).open_writer()
                assert time.monotonic() - t0 < 2 * T + 1.5, "bounded by the request timeout, not a hang"
                seg0 = await c2.meta.get_segment("hung2", 0)
                assert seg0 is not None and seg0.value.state == SegmentState.ACTIVE, "left for a later recovery"
        finally:
            for s in hung:
                s.resume()
        await open_writer_retrying(sc.config, "hung2")
        with pytest.raises(logstore.WriterFencedError):
            await w.append(b"fenced")
        got = await read_all(sc.config, "hung2", idle=2.0)
        assert [m.payload for m in got] == [b"h%d" % i for i in range(20)] and [m.id for m in got] == acked


# -- (d) ensemble changes are facts ------------------------------------------------------------------
async def test_degraded_segment_and_bounded_seal_with_hung_replica(service_cluster):
    sc = service_cluster(**QUICK)
    async with logstore.Client(sc.config) as c:
        b = c.backend
        q = await b.choose_quorum()
        by_ep = {s.endpoint: s for s in sc.logstores}
        seg = await b.create_segment(4343, 0, quorum=q)
        await put(seg, 0, 5)
        assert not seg.degraded
        hung = by_ep[q.nodes[2]]
        hung.pause()
        try:
            t0 = time.monotonic()
            await put(seg, 5, 5)
            assert time.monotonic() - t0 < T, "two replicas ack without waiting for the hung one"
            await until(lambda: seg.degraded, "degraded once the hung replica missed the deadline", 3 * T)
            t0 = time.monotonic()
            await seg.finalize([], 9)
            assert time.monotonic() - t0 < T + 0.5, "sealing does not wait for a dropped, hung replica"
        finally:
            hung.resume()
        # a replica that turns out to be another instance also degrades the segment
        async def full_ensemble():  # the resumed replica is probed back once its failure is a timeout old
            q2 = await b.choose_quorum()
            return q2 if q2.es == 3 else None
        seg2 = await b.create_segment(4343, 1, quorum=await until(full_ensemble, "a full ensemble again", 10, 0.2))
        await put(seg2, 0, 5)
        by_ep[seg2.q.nodes[0]].wipe_and_restart()
        await put(seg2, 5, 5)  # acked by the two genuine replicas; the third's answer may come after
        await until(lambda: seg2.degraded, "degraded by the wrong-instance reply", 2 * T)
        assert seg2.q.nodes[0] in seg2.bad


# -- one deadline ----------------------------------------------------------------------------------------
async def test_two_hung_logstores_fail_an_append_within_three_timeouts(service_cluster):
    sc = service_cluster(**QUICK)
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("deadline")
        w = await log.open_writer()
        await w.append(b"before")
        hung = sc.logstores[:2]
        for s in hung:
            s.pause()
        try:
            t0 = time.monotonic()
            with pytest.raises(QuorumUnavailableError):
                await w.append(b"no quorum")
            took = time.monotonic() - t0
            assert took <= 3 * T + 0.5, f"append failed after {took:.1f}s, bound {3 * T:g}s"
        finally:
            for s in hung:
                s.resume()
        await w.close()


# -- the identity file and the wire additions, without servers ----------------------------------------
def test_identity_file_durable_new_for_empty_or_foreign_dir(tmp_path):
    from logstore.server.identity import FILENAME, load_or_create
    a = load_or_create(tmp_path / "d", "node-a")
    assert a and load_or_create(tmp_path / "d", "node-a") == a, "same dir, same node: same instance"
    assert json.loads((tmp_path / "d" / FILENAME).read_text()) == {"instance": a, "nodeId": "node-a"}
    b = load_or_create(tmp_path / "d", "node-b")
    assert b != a, "a dir that belonged to another node is foreign: new instance"
    (tmp_path / "d" / FILENAME).write_text("{torn")
    assert load_or_create(tmp_path / "d", "node-b") not in (a, b), "an unreadable cookie is never trusted"


def test_quorum_info_instances_are_an_added_field_only():
    from logstore.proto import QuorumInfo
    plain = QuorumInfo(id=1, es=3, wq=3, aq=2, nodes=["h:1", "h:2", "h:3"])
    with_ids = QuorumInfo(id=1, es=3, wq=3, aq=2, nodes=["h:1", "h:2", "h:3"],
                          instances={"h:1": "i1", "h:2": "i2", "h:3": "i3"})
    enc = with_ids.encode()
    assert enc.startswith(plain.encode()), "Woodpecker's fields 1-5 keep their bytes; field 100 comes after"
    assert QuorumInfo.decode(enc) == with_ids and QuorumInfo.decode(plain.encode()).instances == {}
