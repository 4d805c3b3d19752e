"""Decommissioning a LogStore under a steady writer (logstore/decommission.py):
four real LogStores, one of them in the writer's active ensemble is marked,
refuses appends, is drained and then killed with its disk wiped.  Every
acknowledged entry reads back, no append fails, and no segment created after
the LogStore acknowledged its mark names it."""
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import logstore
from logstore import EARLIEST, decommission
from logstore.proto import SegmentState

sys.path.insert(0, str(Path(__file__).parent))
from svcutil import until  # noqa: E402


class SteadyWriter:
    """Appends one entry after another until stopped; any failed append is
    kept (the test asserts there is none)."""

    def __init__(self, writer) -> None:
        self.w, self.acked, self.failures = writer, [], []
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            payload = b"e%06d" % i
            try:
                self.acked.append((await self.w.append(payload), payload))
            except logstore.LogstoreError as e:
                self.failures.append(repr(e))
            i += 1
            await asyncio.sleep(0.002)  # a steady rate, not a hot loop on 2 cores

    async def stop(self) -> None:
        self._stop.set()
        await self.task


async def drain(client, meta, endpoint: str, timeout: float = 60.0) -> dict:
    """What the operator does for one leaving LogStore, polled with a deadline:
    compact its Completed segments, wait for the writer to roll its Active
    ones, until it acknowledged the mark and holds nothing."""
    flushed: set = set()

    async def done():
        ack = (await decommission.acknowledged(meta, [endpoint]))[endpoint]
        h = await decommission.held(meta, [endpoint])
        flushed.update((s.log, s.segment) for s in h.completed)
        errors = await decommission.flush(client, h)
        return ack == "refusing" and not h.segments and not errors
    await until(done, f"{endpoint} drained", timeout=timeout, interval=0.2)
    return {"segmentsFlushed": len(flushed)}


async def test_decommission_one_of_four_under_a_steady_writer(service_cluster):
    sc = service_cluster(4, woodpecker__client__segmentRollingPolicy__maxInterval="1s")
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("steady")
        w = await log.open_writer()
        steady = SteadyWriter(w)
        await until(lambda: len(steady.acked) >= 50, "the writer to get going")
        active = [s for s in await c.meta.segments("steady") if s.value.state == SegmentState.ACTIVE]
        leaving = active[-1].value.quorum.nodes[0]  # in the active ensemble: the writer must roll off it
        victim = next(ls for ls in sc.logstores if ls.endpoint == leaving)
        before = len(steady.acked)
        t0 = time.monotonic()
        await decommission.mark(c.meta, leaving, "test")
        figures = await drain(c, c.meta, leaving)
        drained_in = time.monotonic() - t0
        during = len(steady.acked) - before
        # once acknowledged, no new segment is placed on it
        drained_segments = {s.value.seg_no for s in await c.meta.segments("steady")}
        victim.kill()  # removed, with its disk: it held nothing that is not in object storage
        shutil.rmtree(victim.data_dir, ignore_errors=True)
        after_kill = len(steady.acked)
        await until(lambda: len(steady.acked) >= after_kill + 100, "appends on the three that are left")

        async def rolled() -> bool:  # maxInterval=1s: a segment placed after the drain
            return any(s.value.seg_no not in drained_segments for s in await c.meta.segments("steady"))
        await until(rolled, "the writer to roll to a segment placed after the drain", interval=0.2)
        await steady.stop()
        await w.close()
        assert steady.failures == []
        # the segment active when the drain ended and every later one are off the leaving LogStore
        later = [s.value for s in await c.meta.segments("steady") if s.value.seg_no >= max(drained_segments)]
        assert len(later) >= 2 and all(leaving not in s.quorum.nodes for s in later), later
        r = await log.open_reader(EARLIEST)
        got = []
        for _ in range(len(steady.acked)):
            m = await r.read_next(timeout=10)
            got.append((m.id, m.payload))
        assert got == steady.acked  # nothing lost, duplicated or reordered
        figures.update(scaleDown="4->3", seconds=round(drained_in, 2), ackedDuring=during, lost=0,
                       ackedTotal=len(steady.acked), failedAppends=0)
        print("DECOMMISSION_FIGURES " + json.dumps(figures))
        await decommission.unmark(c.meta, leaving)


async def test_cancel_puts_the_logstore_back(service_cluster):
    """A mark removed (a scale-up meanwhile) makes the LogStore accept appends
    and be chosen for new ensembles again."""
    sc = service_cluster(3)
    async with logstore.Client(sc.config) as c:
        ep = sc.logstores[0].endpoint
        await decommission.mark(c.meta, ep, "test")
        await until(lambda: _ack(c, ep, "refusing"), "the LogStore to refuse appends")
        assert ep not in (await c.backend.choose_quorum()).nodes  # a smaller ensemble rather than the leaving one
        await decommission.unmark(c.meta, ep)
        await until(lambda: _ack(c, ep, "accepting"), "the LogStore to accept appends again")
        assert ep in (await c.backend.choose_quorum()).nodes
        log = await c.create_log("back")
        async with await log.open_writer() as w:
            await w.append(b"x")


async def _ack(c, endpoint: str, want: str) -> bool:
    return (await decommission.acknowledged(c.meta, [endpoint]))[endpoint] == want


async def test_an_idle_writer_seals_its_segment_off_a_leaving_logstore(service_cluster):
    """No append will come to be refused: the writer's own poll of the marks
    seals the active segment and moves to an ensemble without the LogStore;
    its later appends work and everything reads back."""
    sc = service_cluster(4)
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("idle")
        w = await log.open_writer()
        first = [await w.append(b"a%d" % i) for i in range(5)]
        seg = (await c.meta.segments("idle"))[-1].value
        leaving = seg.quorum.nodes[0]
        await decommission.mark(c.meta, leaving, "test")
        figures = await drain(c, c.meta, leaving, timeout=30)
        assert figures["segmentsFlushed"] <= 1
        sealed = await c.meta.get_segment("idle", seg.seg_no)
        assert sealed.value.state == SegmentState.SEALED and sealed.value.last_entry_id == 4
        later = [await w.append(b"b%d" % i) for i in range(5)]
        assert later[0].segment_id > seg.seg_no
        now = (await c.meta.segments("idle"))[-1].value
        assert leaving not in now.quorum.nodes
        await w.close()
        r = await log.open_reader(EARLIEST)
        got = [(await r.read_next(timeout=10)).id for _ in range(10)]
        assert got == first + later
        await decommission.unmark(c.meta, leaving)
