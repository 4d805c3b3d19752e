"""``picchio bench``: throughput and latency of the log, always next to the raw
limit of the same hardware measured in the same run, printed as JSON.

- ``bench append --backend local``: appends vs raw ``write`` + ``fdatasync`` of the
  same entry size to the same directory (one fdatasync per ``concurrency`` entries,
  the best batching a writer with that many appends in flight could get).
- ``bench append --backend minio``: appends vs raw PUTs of block-sized objects to
  the same bucket with the same number of requests in flight.
- ``bench append --backend service``: appends through three LogStores vs raw
  ``write`` + ``fdatasync`` on the same disk divided by three (the three replicas
  share this one disk).

Raw and picchio run in alternating slices so that the drift of a noisy machine
hits both sides alike.
- ``bench tail``: how long after its ack an entry reaches a reader in the same
  process and in another process (woken by the tail push unless ``--no-push``),
  and how many etcd puts per second the writer's tail notifications added.
- ``bench gc``: ``collect_garbage`` over many logs vs raw S3 batch deletes
  (see ``bench_gc``).

Without ``--config`` the bench starts its own etcd (and S3 server, and LogStores)
on loopback.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .. import LATEST, Client, Config
from ..config import parse_size
from .bench_gc import add_gc_parser, bench_gc, bench_orphans


def add_bench_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="measure the log against the raw limit of the same hardware")
    bsub = b.add_subparsers(dest="bench", required=True)
    a = bsub.add_parser("append", help="append throughput and ack latency")
    a.add_argument("--backend", choices=["local", "minio", "service"], default="local")
    a.add_argument("--entry-size", default="4Ki", help="bytes per entry, e.g. 4Ki, 1Mi")
    a.add_argument("--concurrency", type=int, default=1, help="appends in flight")
    a.add_argument("--seconds", type=float, default=5.0)
    a.add_argument("--block-size", default=None, help="object storage: maxFlushSize (default: the config's)")
    a.add_argument("--dir", help="local: directory for the log and the raw file (default: a temp dir)")
    t = bsub.add_parser("tail", help="ack → reader latency, same process and another process")
    t.add_argument("--backend", choices=["local", "minio", "service"], default="local")
    t.add_argument("--entries", type=int, default=200)
    t.add_argument("--interval", type=float, default=0.01, help="seconds between appends")
    t.add_argument("--no-push", action="store_true",
                   help="woodpecker.client.tailPush.enabled=false: the other process only polls (the old way)")
    t.add_argument("--dir")
    add_gc_parser(bsub)


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class _Progress:
    def __init__(self, seconds: float) -> None:
        self.on, self.seconds, self.t0 = sys.stderr.isatty(), seconds, time.monotonic()

    def tick(self, label: str) -> None:
        if self.on:
            f = min(1.0, (time.monotonic() - self.t0) / self.seconds)
            sys.stderr.write(f"\r{label:>8} [{'#' * int(f * 30):<30}] {f * 100:3.0f}%")
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\r" + " " * 60 + "\r")


@contextlib.contextmanager
def _components(args: argparse.Namespace, backend: str) -> Iterator[Config]:
    """The configured components, or an etcd (+ S3) of our own on loopback."""
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="picchio-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with _components_in(args, backend, workdir) as cfg:
            yield cfg
    finally:
        if not args.dir:  # ours to remove: benchmarks write gigabytes
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _components_in(args: argparse.Namespace, backend: str, workdir: Path) -> Iterator[Config]:
    uid = f"bench-{os.getpid()}-{int(time.time())}"
    overrides: dict[str, Any] = {"woodpecker.storage.type": backend, "woodpecker.storage.rootPath": str(workdir / "wal"),
                                 "etcd.rootPath": uid, "minio.rootPath": uid}
    if args.config:
        yield Config.from_yaml(args.config).with_values(overrides)
        return
    from ..dev.etcd import start_etcd
    from ..dev.s3 import start_s3

    started: list[Any] = [start_etcd(workdir)]
    overrides["etcd.endpoints"] = [started[0].endpoint]
    try:
        if backend in ("minio", "service"):
            s3 = start_s3(workdir)
            started.append(s3)
            overrides.update({"minio.address": s3.host, "minio.port": s3.port, "minio.accessKeyID": s3.access_key,
                              "minio.secretAccessKey": s3.secret_key, "minio.bucketName": "picchio-bench",
                              "minio.createBucket": True})
        if backend == "service":
            from ..dev.logstores import start_logstores, wait_registered
            cfg = Config(overrides)
            started += start_logstores(workdir / "logstores", cfg.to_dict(), 3)
            wait_registered(cfg.meta_prefix, started[0].endpoint, 3)
        yield Config(overrides)
    finally:
        for s in reversed(started):
            s.stop()


async def _ours_slice(w: Any, payload: bytes, concurrency: int, seconds: float, lat: list[float],
                      prog: _Progress) -> tuple[int, float]:
    """``concurrency`` appends kept in flight for ``seconds`` → (entries, elapsed)."""
    end = time.monotonic() + seconds
    n = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal n
        while time.monotonic() < end:
            s = time.perf_counter()
            await w.append(payload)
            lat.append(time.perf_counter() - s)
            n += 1
            prog.tick("picchio")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n, time.perf_counter() - t0


def _raw_local(directory: Path, size: int, batch: int, seconds: float, prog: _Progress) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "raw-fdatasync.bin"
    buf = os.urandom(size)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    lat: list[float] = []
    n = 0
    try:
        end = time.monotonic() + seconds
        t0 = time.perf_counter()
        while time.monotonic() < end:
            s = time.perf_counter()
            for _ in range(batch):
                os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - s)
            n += batch
            prog.tick("raw")
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"what": f"write {size} B ×{batch} + fdatasync, same directory", "entries": n,
            "bytes": n * size, "seconds": elapsed, "lat": lat,
            "mb_per_s": round(n * size / elapsed / 1e6, 1), "sync_p50_ms": round(_pct(lat, 50) * 1e3, 3),
            "sync_p99_ms": round(_pct(lat, 99) * 1e3, 3)}


async def _raw_puts(cfg: Config, size: int, parallel: int, seconds: float, prog: _Progress) -> dict[str, Any]:
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
            prog.tick("raw")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    elapsed = time.perf_counter() - t0
    objs = await s3.list(prefix + "/")
    await s3.delete_many([o.key for o in objs])
    await s3.close()
    n = len(lat)
    return {"what": f"PUT {size} B objects (If-None-Match), {parallel} in flight, same bucket", "puts": n,
            "bytes": n * size, "seconds": elapsed, "lat": lat,
            "mb_per_s": round(n * size / elapsed / 1e6, 1), "put_p50_ms": round(_pct(lat, 50) * 1e3, 3),
            "put_p99_ms": round(_pct(lat, 99) * 1e3, 3)}


async def _raw_slice(args: argparse.Namespace, cfg: Config, size: int, seconds: float,
                     prog: _Progress) -> dict[str, Any]:
    if args.backend == "minio":
        # the writer closes a block once its payload reaches maxFlushSize: compare with PUTs of that
        # block's size, as many in flight as the appends in flight can fill
        per_block = max(1, -(-cfg["woodpecker.logstore.segmentSyncPolicy.maxFlushSize"] // size))
        parallel = max(1, min(cfg["woodpecker.logstore.segmentSyncPolicy.maxFlushThreads"],
                              args.concurrency // per_block))
        return await _raw_puts(cfg, per_block * size, parallel, seconds, prog)
    raw = await asyncio.to_thread(_raw_local, Path(cfg["woodpecker.storage.rootPath"]), size, args.concurrency,
                                  seconds, prog)
    if args.backend == "service":
        # three replicas share this one disk: the raw limit is a third of raw fdatasync throughput
        raw["bytes"] = raw["bytes"] / 3
        raw["what"] += ", divided by 3: the 3 replicas share this disk"
    return raw


async def _append_rounds(args: argparse.Namespace, cfg: Config, size: int) -> dict[str, Any]:
    """Raw and picchio alternate in short slices (raw, picchio, raw, picchio, …):
    this machine's disk and CPU drift a lot, and alternating lets the drift hit
    both sides alike.  Totals are bytes over time summed across slices."""
    rounds = max(2, int(round(args.seconds / 2)))
    slice_s = args.seconds / rounds / 2
    payload = os.urandom(size)
    lat: list[float] = []
    raws: list[dict[str, Any]] = []
    ours_n, ours_t = 0, 0.0
    prog = _Progress(args.seconds)
    async with Client(cfg) as c:
        log = await c.create_log(f"bench-{int(time.time() * 1000)}")
        w = await log.open_writer()
        for _ in range(min(args.concurrency, 8)):  # warm-up: connections, segment creation
            await w.append(payload)
        for _ in range(rounds):
            raws.append(await _raw_slice(args, cfg, size, slice_s, prog))
            n, t = await _ours_slice(w, payload, args.concurrency, slice_s, lat, prog)
            ours_n, ours_t = ours_n + n, ours_t + t
        notifier = getattr(w, "_notifier", None)
        tail_puts = notifier.puts if notifier is not None else 0
        await w.close()
        await c.delete_log(log.name)
    prog.done()
    raw_lat = [x for r in raws for x in r.pop("lat")]
    raw_bytes, raw_t = sum(r["bytes"] for r in raws), sum(r["seconds"] for r in raws)
    ms = lambda xs, p: round(_pct(xs, p) * 1e3, 3)  # noqa: E731
    ours = {"entries": ours_n, "seconds": round(ours_t, 3), "mb_per_s": round(ours_n * size / ours_t / 1e6, 1),
            "entries_per_s": round(ours_n / ours_t, 1), "ack_p50_ms": ms(lat, 50), "ack_p99_ms": ms(lat, 99),
            "etcd_tail_puts_per_s": round(tail_puts / ours_t, 1)}
    raw = {"what": raws[0]["what"], "mb_per_s": round(raw_bytes / raw_t / 1e6, 1),
           "mb_per_s_by_slice": [round(r["bytes"] / r["seconds"] / 1e6, 1) for r in raws],
           "op_p50_ms": ms(raw_lat, 50), "op_p99_ms": ms(raw_lat, 99)}
    return {"bench": "append", "backend": args.backend, "entry_size": size, "concurrency": args.concurrency,
            "rounds": rounds, "picchio": ours, "raw": raw,
            "ratio": round(ours["mb_per_s"] / raw["mb_per_s"], 3) if raw["mb_per_s"] else None}


def _bench_append(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.entry_size, "--entry-size")
    with _components(args, args.backend) as cfg:
        if args.block_size:
            cfg = cfg.with_values({"woodpecker.logstore.segmentSyncPolicy.maxFlushSize": args.block_size})
        return asyncio.run(_append_rounds(args, cfg, size))


async def _tail_floor(c: Client, cfg: Config) -> dict[str, Any]:
    """The raw limit of a push-woken reader in another process, same run: one
    etcd put (the writer's bump; its watch event arrives about as fast) and,
    for MinIO, one GET of a small object (the reader's read of the block)."""
    ms = lambda xs: round(_pct(xs, 50) * 1e3, 3)  # noqa: E731
    key = (c.meta.keys.prefix + "/bench-raw-put").encode()
    puts: list[float] = []
    for i in range(50):
        s = time.perf_counter()
        await c.meta.client.put(key, b"%d" % i)
        puts.append(time.perf_counter() - s)
    await c.meta.client.delete(key)
    out: dict[str, Any] = {"etcd_put_p50_ms": ms(puts)}
    if cfg.storage_type == "minio":
        from ..storage.s3 import S3
        s3 = S3(cfg, pool_size=2)
        obj = f"{cfg['minio.rootPath']}/bench-raw-get.blk"
        await s3.put(obj, os.urandom(4096))
        gets: list[float] = []
        for _ in range(50):
            s = time.perf_counter()
            await s3.get(obj)
            gets.append(time.perf_counter() - s)
        await s3.delete_many([obj])
        await s3.close()
        out["s3_get_4KiB_p50_ms"] = ms(gets)
    return out


async def _bench_tail(cfg: Config, entries: int, interval: float, cfg_path: Path) -> dict[str, Any]:
    async with Client(cfg) as c:
        name = f"tail-{int(time.time() * 1000)}"
        log = await c.create_log(name)
        w = await log.open_writer()
        await w.append(b"warm-up")
        reader = await log.open_reader(LATEST)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logstore.cli.main", "--config", str(cfg_path), "--json", "log", "tail", name,
            "--from", "latest", stdout=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert child.stdout is not None
        # the other process is ready once it has seen a marker entry
        deadline = time.monotonic() + 30
        while True:
            await w.append(b"marker")
            try:
                line = await asyncio.wait_for(child.stdout.readline(), 0.5)
                if line:
                    break
            except asyncio.TimeoutError:
                if time.monotonic() > deadline:
                    child.kill()
                    raise RuntimeError("the tailing process never saw an entry")
        while True:  # drain the in-process reader to the same point
            try:
                await reader.read_next(timeout=0.2)
            except TimeoutError:
                break
        same: list[float] = []
        other: list[float] = []
        notifier = getattr(w, "_notifier", None)
        puts0, t0 = (notifier.puts if notifier else 0), time.monotonic()
        for i in range(entries):
            payload = b"t%d" % i
            mid = await w.append(payload)
            acked = time.perf_counter()
            m = await reader.read_next(timeout=5)
            same.append(time.perf_counter() - acked)
            assert m.id == mid
            while True:
                line = await asyncio.wait_for(child.stdout.readline(), 5)
                if json.loads(line)["payload"] == payload.decode():
                    other.append(time.perf_counter() - acked)
                    break
            await asyncio.sleep(interval)
        elapsed = time.monotonic() - t0
        puts_per_s = ((notifier.puts if notifier else 0) - puts0) / elapsed
        child.kill()
        await child.wait()
        await w.close()
        await c.delete_log(name)
        floor = await _tail_floor(c, cfg) if cfg.storage_type != "local" else {}
    ms = lambda xs, p: round(_pct(xs, p) * 1e3, 3)  # noqa: E731
    return {"same_process_p50_ms": ms(same, 50), "same_process_p99_ms": ms(same, 99),
            "other_process_p50_ms": ms(other, 50), "other_process_p99_ms": ms(other, 99),
            "other_process_max_ms": round(max(other) * 1e3, 3), "entries": entries,
            "appends_per_s": round(entries / elapsed, 1),
            "push": cfg["woodpecker.client.tailPush.enabled"],
            "other_process_etcd_reads_per_s": 1 / cfg["woodpecker.client.reader.metaPollInterval"],
            "writer_etcd_tail_puts_per_s": round(puts_per_s, 1), "raw_same_run": floor}


def run_bench(args: argparse.Namespace) -> int:
    if args.bench == "append":
        out = _bench_append(args)
    elif args.bench in ("gc", "orphans"):
        with _components(args, args.backend) as cfg:
            out = (bench_gc if args.bench == "gc" else bench_orphans)(args, cfg)
    else:
        with _components(args, args.backend) as cfg:
            cfg = cfg.with_values({"woodpecker.client.tailPush.enabled": not args.no_push,
                                   "woodpecker.client.tailPush.etcdNotify": not args.no_push})
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                import yaml
                yaml.safe_dump(cfg.to_dict(nested=True), f)
            try:
                out = {"bench": "tail", "backend": args.backend,
                       **asyncio.run(_bench_tail(cfg, args.entries, args.interval, Path(f.name)))}
            finally:
                os.unlink(f.name)
    print(json.dumps(out, indent=2))
    return 0
