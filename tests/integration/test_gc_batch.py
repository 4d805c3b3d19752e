"""GC in batches (issue 11.3): one listing per log, DeleteObjects of up to
1,000 keys, etcd deletes in transactions of at most 100 — and still exactly
the segments below the watermark, every object of them, nothing else."""
from __future__ import annotations

import pytest

import logstore
from logstore import EARLIEST
from logstore.storage.s3 import S3

SEGMENTS = 130  # > 100: two etcd transactions
JUNK = 10  # extra objects per doomed segment (e.g. blocks of an interrupted compaction)


@pytest.mark.cluster
@pytest.mark.slow
async def test_gc_batches_delete_every_object_and_key_below_the_watermark(make_config):
    cfg = make_config("minio", **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("many")
        async with await log.open_writer() as w:
            ids = [await w.append(b"e%d" % i) for i in range(SEGMENTS)]
        assert ids[-1].segment_id == SEGMENTS - 1, "one segment per entry"
        s3 = S3(cfg)
        seg_prefix = f"{cfg['minio.rootPath']}/{log.log_id}/"
        for seg in range(SEGMENTS - 1):  # 1,290 more keys: two DeleteObjects batches
            for j in range(JUNK):
                await s3.put(f"{seg_prefix}{seg}/junk-{j}.blk", b"j" * 7)
        before = {o.key: o.size for o in await s3.list(seg_prefix)}
        keep_prefix = f"{seg_prefix}{SEGMENTS - 1}/"
        kept = {k: n for k, n in before.items() if k.startswith(keep_prefix)}
        assert kept, "the last segment has objects of its own"

        await log.truncate(ids[-2])
        dry = await log.collect_garbage(dry_run=True)
        assert dry.segments == list(range(SEGMENTS - 1))
        assert dry.objects == len(before) - len(kept)
        assert dry.bytes == sum(before.values()) - sum(kept.values())
        assert len(await s3.list(seg_prefix)) == len(before), "a dry run deletes nothing"

        rep = await log.collect_garbage()
        assert (rep.segments, rep.objects, rep.bytes) == (dry.segments, dry.objects, dry.bytes)
        after = {o.key: o.size for o in await s3.list(seg_prefix)}
        assert after == kept, "every object below the watermark is gone, the rest untouched"
        assert [s.id for s in await log.segments()] == [SEGMENTS - 1], "every etcd key below the mark is gone"
        assert (await log.collect_garbage()).segments == [], "a rerun finds nothing"
        r = await log.open_reader(EARLIEST)
        assert (await r.read_next(timeout=5)).id == ids[-1]
