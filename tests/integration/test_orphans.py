"""Orphan scan (issue 11.2), both ways, on a real etcd and each backend:
objects no log or segment knows are found (once older than the grace period)
and deleted only when asked; segments whose objects are gone are reported;
foreign keys and everything still referenced are never touched."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import logstore
from logstore.orphans import scan_orphans
from logstore.storage.s3 import S3


class Store:
    """Raw access to the backend's root, the way a crash or a person leaves things."""

    def __init__(self, client: logstore.Client, cfg: logstore.Config) -> None:
        self.local = client.backend.kind == "local"
        if self.local:
            self.root = Path(client.backend.root)
        else:
            self.s3, self.prefix = S3(cfg), client.backend.root_prefix

    async def put(self, rel: str, body: bytes) -> None:
        if self.local:
            p = self.root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)
        else:
            await self.s3.put(self.prefix + rel, body)

    async def keys(self, rel_prefix: str = "") -> set[str]:
        if self.local:
            base = self.root / rel_prefix
            return {os.path.relpath(os.path.join(d, n), self.root) for d, _, ns in os.walk(base) for n in ns}
        return {o.key[len(self.prefix):] for o in await self.s3.list(self.prefix + rel_prefix)}

    async def remove(self, rel_prefix: str) -> None:
        for k in await self.keys(rel_prefix):
            if self.local:
                os.unlink(self.root / k)
            else:
                await self.s3.delete_many([self.prefix + k])


async def test_orphan_scan_finds_reports_and_deletes_only_orphans(make_config, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("kept")
        async with await log.open_writer() as w:
            ids = [await w.append(b"e%d" % i) for i in range(4)]  # segments 0..3
        st = Store(c, cfg)
        lid = log.log_id
        referenced = await st.keys(f"{lid}/")
        orphans = {f"{lid + 1000}/0/0.blk": b"a" * 10,  # a log etcd does not know (interrupted delete)
                   f"{lid + 1000}/3/footer.blk": b"b" * 20,
                   f"{lid}/77/0.blk": b"c" * 30}  # a segment the log does not know (crash before metadata)
        for k, body in orphans.items():
            await st.put(k, body)
        await st.put("README.txt", b"not ours")  # foreign: never judged
        await st.remove(f"{lid}/2/")  # a completed segment lost its objects
        await log.truncate(ids[0])
        await st.remove(f"{lid}/0/")  # below the watermark: GC's business, not damage

        young = await scan_orphans(c, grace=3600)
        assert (young.objects, young.young, young.deleted) == (0, len(orphans), 0), "inside the grace: left alone"
        assert young.missing_segments == ["kept/2"]

        rep = await scan_orphans(c, grace=0)
        assert rep.objects == len(orphans) and rep.bytes == sum(map(len, orphans.values()))
        assert set(rep.examples) == {st_key(st, k) for k in orphans}
        assert rep.foreign == 1 and rep.deleted == 0
        assert rep.missing_segments == ["kept/2"]
        assert orphans.keys() <= await st.keys(), "a report deletes nothing"

        gone = await scan_orphans(c, grace=0, delete=True)
        assert gone.deleted == len(orphans)
        left = await st.keys()
        assert not (orphans.keys() & left)
        assert "README.txt" in left
        kept_now = {k for k in referenced if not k.startswith((f"{lid}/0/", f"{lid}/2/"))}
        assert kept_now <= left, "nothing referenced was deleted"
        again = await scan_orphans(c, grace=0)
        assert (again.objects, again.foreign) == (0, 1)
        r = await log.open_reader(ids[3])
        assert (await r.read_next(timeout=5)).payload == b"e3"


def st_key(st: Store, rel: str) -> str:
    return rel if st.local else st.prefix + rel


async def test_segment_born_during_a_scan_is_not_an_orphan(make_config, backend_kind, monkeypatch):
    """The one interleaving that matters, forced: a writer rolls into a new
    segment after the scan read etcd and before it lists that segment's
    objects.  Even with no grace period, and with the store's clock an hour
    behind ours (so the new objects look old), the scan must not delete them."""
    import time

    import logstore.orphans as orphans

    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("born")
        w = await log.open_writer()
        first = await w.append(b"before")
        real = orphans._snapshot
        born = []

        async def snapshot_then_write(client):
            snap = await real(client)
            if not born:  # the interleaving: new segments right after the scan's first read of etcd
                known = set(snap[log.log_id].segments)
                for p in (b"during-1", b"during-2", b"during-3"):
                    born.append(await w.append(p))
                assert {m.segment_id for m in born} - known, "a segment etcd did not have at the snapshot"
            return snap

        monkeypatch.setattr(orphans, "_snapshot", snapshot_then_write)
        rep = await scan_orphans(c, grace=0, delete=True, clock=lambda: time.time() + 3600)
        assert rep.young == 0, "the skewed clock makes every object look old"
        assert (rep.objects, rep.deleted) == (0, 0), f"a live segment's objects taken for orphans: {rep.examples}"
        await w.close()
        r = await log.open_reader(first)
        got = [(await r.read_next(timeout=5)).payload for _ in range(4)]
        assert got == [b"before", b"during-1", b"during-2", b"during-3"]


@pytest.mark.slow
async def test_scan_gc_and_writer_interleaved_never_delete_what_is_reachable(make_config, backend_kind):
    """Property, over random interleavings (seeded): a writer rolling a segment
    per entry, truncation + GC, and orphan scans in delete mode with **no**
    grace period run at once; afterwards every acknowledged entry above the
    watermark reads back, in order, and no scan ever called a live segment
    missing."""
    import asyncio
    import random

    for seed in range(3):
        rng = random.Random(seed)
        cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
        async with logstore.Client(cfg) as c:
            log = await c.create_log(f"race{seed}")
            acked: list = []
            done = asyncio.Event()
            scans = []

            async def writer() -> None:
                async with await log.open_writer() as w:
                    for i in range(60):
                        acked.append((await w.append(b"p%d" % i), b"p%d" % i))
                        if rng.random() < 0.3:
                            await asyncio.sleep(0)
                done.set()

            async def collector() -> None:
                hi = 0  # the watermark only moves forward (truncating below it names a collected segment)
                while not done.is_set():
                    if len(acked) // 2 > hi:  # half the log stays above the mark: what the scans must spare
                        hi = rng.randrange(hi, len(acked) // 2)
                        await log.truncate(acked[hi][0])
                        await log.collect_garbage()
                    await asyncio.sleep(rng.uniform(0, 0.05))  # a random moment, not a wait for a condition

            async def scanner() -> None:
                while not done.is_set():
                    scans.append(await scan_orphans(c, grace=0, delete=True))

            await asyncio.wait_for(asyncio.gather(writer(), collector(), scanner()), 120)
            mark = await log.truncated_id()
            want = [(m, p) for m, p in acked if mark is None or m > mark]
            r = await log.open_reader(want[0][0])
            got = [await r.read_next(timeout=5) for _ in want]
            assert [(m.id, m.payload) for m in got] == want, f"seed {seed}: an entry above the watermark was lost"
            assert scans and all(s.missing_segments == [] for s in scans), f"seed {seed}: a live segment called missing"
