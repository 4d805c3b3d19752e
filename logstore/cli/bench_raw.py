"""The raw limit next to which ``picchio bench append`` prints its figures: the
same I/O the product does at its best, with no product in the way.

A ratio is only worth printing against a limit the product cannot beat.  The
first baseline (``write`` of the bare entry + ``fdatasync`` in a loop) could be
beaten: it wrote fewer bytes than the product (no framing), grew its file in a
different pattern, and for service mode assumed that three replicas on one disk
get exactly a third of one writer's bandwidth — concurrent ``fdatasync`` calls
on ext4 share journal commits, so they can get more, or less.  Each baseline
here does what the product's best case does:

- **local** (one flush in flight per segment, ``LocalSegmentWriter.parallel``
  is 1): one thread appends a block of ``concurrency`` entries, framed by the
  product's own codec (block header + DataRecords, byte for byte what picchio
  writes), with one ``writev`` and one ``fdatasync``, then the next — a closed
  loop with ``concurrency`` appends in flight can put at most that many entries
  in one block.
- **service** (three LogStores on this one disk, an append acked by two): three
  threads, one file each, each running the local loop above at the same time;
  a block is acked once two replicas hold it, so the acked throughput is the
  *second-fastest* replica's.  Network, gRPC and the three processes are the
  product's cost, not the hardware's, so they are not in it.
- **minio**: PUTs (``If-None-Match: *``) of objects of the product's block size
  (``maxFlushSize``, rounded to whole entries), with as many in flight as the
  appends in flight can fill (at most ``maxFlushThreads``), to the same bucket.

Latency: each loop's operation time (one block's write + sync, or one PUT) is
the floor of an ack; ``ack_p50_vs_raw`` divides picchio's ack p50 by it.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..codec import BlockBuilder, HeaderRecord


def framed_block(entry_size: int, count: int) -> list[bytes]:
    """``count`` entries of ``entry_size`` random bytes, framed as the product
    frames one block (its block header record and DataRecords)."""
    b = BlockBuilder()
    payload = os.urandom(entry_size)
    for _ in range(count):
        b.add(payload)
    return [b.header(0, 0).encode(), *(bytes(p) for p in b.pieces)]


def _chunks(block: list[bytes], limit: int = 1 << 20) -> list[list[bytes]]:
    """``writev`` calls of about 1 MiB, as the product makes them (segfile.writev_all:
    one 16 MiB call copies into the page cache at about half the speed here)."""
    out: list[list[bytes]] = [[]]
    size = 0
    for p in block:
        if out[-1] and (size + len(p) > limit or len(out[-1]) >= 1024):
            out.append([])
            size = 0
        out[-1].append(p)
        size += len(p)
    return out


def _sync_loop(path: Path, block: list[bytes], payload: int, end: float, lat: list[float],
               tick: Callable[[], None]) -> tuple[int, float]:
    """Append ``block`` + fdatasync until ``end`` → (payload bytes made durable,
    seconds).  Only the loop is timed: creating the file and unlinking it
    afterwards (tens of ms for a gigabyte on ext4) are not appends, and the
    product's writer pays neither inside its own slice."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_APPEND, 0o644)
    chunks = _chunks(block)
    done = 0
    t0 = time.perf_counter()
    try:
        os.write(fd, HeaderRecord(0).encode())
        os.fdatasync(fd)
        t0 = time.perf_counter()
        while time.monotonic() < end:
            s = time.perf_counter()
            for chunk in chunks:
                os.writev(fd, chunk)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - s)
            done += payload
            tick()
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return done, elapsed


def raw_disk(directory: Path, entry_size: int, concurrency: int, seconds: float, replicas: int,
             quorum: int, tick: Callable[[], None]) -> dict[str, Any]:
    """``replicas`` concurrent append+fdatasync loops (one file each) in
    ``directory``; the acked bytes are the ``quorum``-th fastest replica's."""
    directory.mkdir(parents=True, exist_ok=True)
    block = framed_block(entry_size, concurrency)
    payload = entry_size * concurrency
    lats: list[list[float]] = [[] for _ in range(replicas)]
    done = [0] * replicas
    took = [1e-9] * replicas
    end = time.monotonic() + seconds

    def run(i: int) -> None:
        done[i], took[i] = _sync_loop(directory / f"raw-{os.getpid()}-{i}.log", block, payload, end, lats[i], tick)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = [done[i] / took[i] for i in range(replicas)]
    order = sorted(range(replicas), key=lambda i: rate[i], reverse=True)
    acked = order[quorum - 1]
    what = (f"writev of a framed block of {concurrency} × {entry_size} B + fdatasync, same directory"
            if replicas == 1 else
            f"{replicas} concurrent loops (one file each) of writev of a framed block of {concurrency} × "
            f"{entry_size} B + fdatasync, same disk; acked = the {quorum}nd-fastest replica")
    return {"what": what, "bytes": done[acked], "seconds": took[acked], "lat": lats[acked],
            "replica_mb_per_s": [round(r / 1e6, 1) for r in rate]}


async def raw_puts(cfg: Any, size: int, parallel: int, seconds: float, tick: Callable[[], None]) -> dict[str, Any]:
    """PUTs of ``size``-byte objects with ``parallel`` in flight, then deleted."""
    import asyncio

    from ..storage.s3 import S3

    s3 = S3(cfg, pool_size=parallel + 4)
    await s3.ensure_bucket(cfg["minio.createBucket"])
    body = os.urandom(size)
    lat: list[float] = []
    prefix = f"{cfg['minio.rootPath']}/raw-put"
    counter = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal counter
        while time.monotonic() < end:
            counter += 1
            s = time.perf_counter()
            await s3.put(f"{prefix}/{counter}.blk", body, if_absent=True)
            lat.append(time.perf_counter() - s)
            tick()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    elapsed = time.perf_counter() - t0
    objs = await s3.list(prefix + "/")
    await s3.delete_many([o.key for o in objs])
    await s3.close()
    return {"what": f"PUT {size} B objects (If-None-Match), {parallel} in flight, same bucket",
            "bytes": len(lat) * size, "seconds": elapsed, "lat": lat}
