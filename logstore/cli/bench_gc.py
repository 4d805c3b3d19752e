"""``picchio bench gc``: garbage collection end to end against the raw batch
delete of the same S3 server, measured in the same run.

Setup (not timed): ``--logs`` logs of ``--segments`` segments each, written by
the real writer (one small entry per segment: ``maxBlocks`` 1 rolls after
every block), then every log truncated to its last entry so that all but the
active segment are garbage.  Timed: ``collect_garbage`` on every log,
``--parallel`` logs at a time (what the operator's GC timer does) — objects
and etcd keys gone.  Raw: the same number of objects under another prefix,
listed once and removed with DeleteObjects, 1,000 keys a request, four in
flight — the best the store allows a client on this machine.

``picchio bench orphans``: one orphan scan (report mode) over ``--objects``
objects no metadata knows, next to a raw listing of the same prefix: time, and
(in a second, traced scan) the peak of Python memory (tracemalloc) — the scan
streams the listing, so memory must not grow with the number of objects.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from .. import Client, Config


def add_gc_parser(bsub: Any) -> None:
    g = bsub.add_parser("gc", help="garbage collection vs raw S3 batch delete")
    g.add_argument("--backend", choices=["minio"], default="minio")
    g.add_argument("--logs", type=int, default=200)
    g.add_argument("--segments", type=int, default=50, help="segments per log")
    g.add_argument("--parallel", type=int, default=8, help="logs collected at a time")
    g.add_argument("--dir")
    o = bsub.add_parser("orphans", help="orphan scan time and memory vs a raw listing")
    o.add_argument("--backend", choices=["minio"], default="minio")
    o.add_argument("--objects", type=int, default=100_000)
    o.add_argument("--dir")


async def _setup(cfg: Config, logs: int, segments: int, parallel: int) -> None:
    gate = asyncio.Semaphore(parallel * 4)
    async with Client(cfg) as c:
        async def one(i: int) -> None:
            async with gate:
                log = await c.create_log(f"gc-{i}")
                async with await log.open_writer() as w:
                    for s in range(segments):
                        last = await w.append(b"x" * 64)
                await log.truncate(last)
        _raise_first(await asyncio.gather(*(one(i) for i in range(logs)), return_exceptions=True))


def _raise_first(results: list[Any]) -> None:
    """One typed error for the CLI to print, not a traceback per failed log."""
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _collect(cfg: Config, logs: int, parallel: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(parallel)
    totals = {"segments": 0, "objects": 0, "bytes": 0}
    async with Client(cfg) as c:
        async def one(i: int) -> None:
            async with gate:
                rep = await (await c.open_log(f"gc-{i}")).collect_garbage()
                totals["segments"] += len(rep.segments)
                totals["objects"] += rep.objects
                totals["bytes"] += rep.bytes
        t0 = time.perf_counter()
        _raise_first(await asyncio.gather(*(one(i) for i in range(logs)), return_exceptions=True))
        return {**totals, "seconds": time.perf_counter() - t0}


async def _raw(cfg: Config, objects: int) -> dict[str, Any]:
    from ..storage.s3 import S3
    s3 = S3(cfg)
    prefix = cfg["minio.rootPath"] + "-raw/"
    gate = asyncio.Semaphore(32)

    async def put(i: int) -> None:
        async with gate:
            await s3.put(f"{prefix}{i // 50}/{i % 50}/m_0.blk", b"x" * 64)

    _raise_first(await asyncio.gather(*(put(i) for i in range(objects)), return_exceptions=True))
    t0 = time.perf_counter()
    keys = [o.key for o in await s3.list(prefix)]
    await s3.delete_many(keys)
    return {"objects": len(keys), "seconds": time.perf_counter() - t0}


def bench_gc(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    cfg = cfg.with_values({"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    t0 = time.perf_counter()
    asyncio.run(_setup(cfg, args.logs, args.segments, args.parallel))
    setup_s = time.perf_counter() - t0
    ours = asyncio.run(_collect(cfg, args.logs, args.parallel))
    raw = asyncio.run(_raw(cfg, max(ours["objects"], 1)))
    ours_rate = ours["objects"] / ours["seconds"] if ours["seconds"] else 0.0
    raw_rate = raw["objects"] / raw["seconds"] if raw["seconds"] else 0.0
    return {"bench": "gc", "backend": args.backend, "logs": args.logs, "segments_per_log": args.segments,
            "setup_s": round(setup_s, 1),
            "picchio": {**ours, "seconds": round(ours["seconds"], 3), "objects_per_s": round(ours_rate)},
            "raw_batch_delete": {**raw, "seconds": round(raw["seconds"], 3), "objects_per_s": round(raw_rate)},
            "ratio": round(ours_rate / raw_rate, 2) if raw_rate else None}


async def _orphans(cfg: Config, objects: int) -> dict[str, Any]:
    import tracemalloc

    from ..orphans import scan_orphans
    from ..storage.s3 import S3
    s3 = S3(cfg)
    root = cfg["minio.rootPath"]
    gate = asyncio.Semaphore(64)

    async def put(i: int) -> None:
        async with gate:
            await s3.put(f"{root}/{900000 + i // 1000}/{i % 1000}/0.blk", b"o")

    async with Client(cfg) as c:  # creates the bucket
        t0 = time.perf_counter()
        _raise_first(await asyncio.gather(*(put(i) for i in range(objects)), return_exceptions=True))
        setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        listed = 0
        async for page in s3.list_pages(f"{root}/"):
            listed += len(page)
        raw_s = time.perf_counter() - t0
        rep = await scan_orphans(c, grace=0)  # timed
        tracemalloc.start()  # a second scan for memory: tracing slows Python several times over
        await scan_orphans(c, grace=0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"bench": "orphans", "objects": objects, "setup_s": round(setup_s, 1),
            "scan": {"seconds": round(rep.seconds, 3), "orphans": rep.objects, "scanned": rep.scanned,
                     "objects_per_s": round(rep.scanned / rep.seconds) if rep.seconds else None,
                     "python_peak_mib": round(peak / 2**20, 2)},
            "raw_listing": {"seconds": round(raw_s, 3), "objects": listed},
            "ratio": round(raw_s / rep.seconds, 2) if rep.seconds else None}


def bench_orphans(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return asyncio.run(_orphans(cfg, args.objects))
