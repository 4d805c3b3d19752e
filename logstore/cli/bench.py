"""``picchio bench``: throughput and latency of the log, always next to the raw
limit of the same hardware measured in the same run, printed as JSON.

- ``bench append``: appends vs the raw limit of the same I/O pattern at its best,
  with no product in the way (``bench_raw`` says exactly what and why):
  - ``--backend local``: one thread appending a block of ``concurrency`` entries,
    framed byte for byte as picchio frames them, with ``writev`` + ``fdatasync``
    (a closed loop with that many appends in flight fits at most that many in a
    block; picchio has one flush in flight per local segment);
  - ``--backend service``: that loop on three files at once on the same disk (the
    three replicas share it), acked at the second-fastest replica (ack quorum 2);
  - ``--backend minio``: PUTs of block-sized objects to the same bucket with as
    many in flight as the product can have.
  ``ratio`` is picchio's MB/s over the raw MB/s; ``ack_p50_vs_raw`` its ack p50
  over one raw operation's p50 (1.0 is the floor).

Raw and picchio run in alternating slices so that the drift of a noisy machine
hits both sides alike.
- ``bench tail``: how long after its ack an entry reaches a reader in the same
  process and in another process (woken by the tail push unless ``--no-push``),
  and how many etcd puts per second the writer's tail notifications added.
- ``bench gc``: ``collect_garbage`` over many logs vs raw S3 batch deletes
  (see ``bench_gc``).
- ``bench scale``: N open logs (1, 10, 100, 1000) at the same total load, and
  idle: throughput, RSS, fds, CPU, etcd and S3 requests per point (see ``bench_scale``).

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
from .bench_scale import add_scale_parser, bench_scale
from .bench_raw import raw_disk, raw_puts


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
    a.add_argument("--plot", metavar="FILE.png", help="also draw throughput over time and ack percentiles (needs picchio[bench])")
    t = bsub.add_parser("tail", help="ack → reader latency, same process and another process")
    t.add_argument("--backend", choices=["local", "minio", "service"], default="local")
    t.add_argument("--entries", type=int, default=200)
    t.add_argument("--interval", type=float, default=0.01, help="seconds between appends")
    t.add_argument("--no-push", action="store_true",
                   help="woodpecker.client.tailPush.enabled=false: the other process only polls (the old way)")
    t.add_argument("--dir")
    t.add_argument("--plot", metavar="FILE.png", help="also draw latency percentiles and histograms (needs picchio[bench])")
    add_gc_parser(bsub)
    add_scale_parser(bsub)


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


_PCTS = (50, 90, 99, 99.9)


class _Timeline(_Progress):
    """The progress bar that also notes when each of picchio's appends was acknowledged, and
    when the raw side ran: throughput over time for ``--plot`` (raw slices are gaps)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.start, self.acks, self.raw = time.perf_counter(), [], []  # type: ignore[var-annotated]

    def tick(self, label: str) -> None:
        (self.acks if label == "picchio" else self.raw).append(time.perf_counter() - self.start)
        super().tick(label)

    def timeline(self, size: int, bucket: float = 0.1) -> dict[str, Any]:
        t0 = min(self.acks + self.raw + [0.0])  # from the first slice on, not from the set-up
        n = int((max(self.acks + self.raw + [0.0]) - t0) / bucket) + 1
        acks, raw = [0] * n, [0] * n
        for t in self.acks:
            acks[int((t - t0) / bucket)] += 1
        for t in self.raw:
            raw[int((t - t0) / bucket)] += 1
        return {"bucket_s": bucket, "t": [round(i * bucket, 2) for i in range(n)],
                "mb_per_s": [None if raw[i] and not acks[i] else round(acks[i] * size / bucket / 1e6, 2)
                             for i in range(n)]}


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


async def _raw_slice(args: argparse.Namespace, cfg: Config, size: int, seconds: float,
                     prog: _Progress) -> dict[str, Any]:
    """One slice of the raw limit (see ``bench_raw``: what the product does at its best)."""
    tick = lambda: prog.tick("raw")  # noqa: E731
    if args.backend == "minio":
        # the writer closes a block once its payload reaches maxFlushSize: compare with PUTs of that
        # block's size, as many in flight as the appends in flight can fill
        per_block = max(1, -(-cfg["woodpecker.logstore.segmentSyncPolicy.maxFlushSize"] // size))
        per_block = min(per_block, args.concurrency)
        parallel = max(1, min(cfg["woodpecker.logstore.segmentSyncPolicy.maxFlushThreads"],
                              args.concurrency // per_block))
        return await raw_puts(cfg, per_block * size, parallel, seconds, tick)
    replicas = 3 if args.backend == "service" else 1
    quorum = cfg["woodpecker.client.quorum.ackQuorum"] if args.backend == "service" else 1
    return await asyncio.to_thread(raw_disk, Path(cfg["woodpecker.storage.rootPath"]) / "raw", size,
                                   args.concurrency, seconds, replicas, quorum, tick)


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
    prog = _Timeline(args.seconds)
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
            "etcd_tail_puts_per_s": round(tail_puts / ours_t, 1),
            "ack_percentiles_ms": {str(p): ms(lat, p) for p in _PCTS}, "timeline": prog.timeline(size)}
    raw = {"what": raws[0]["what"], "mb_per_s": round(raw_bytes / raw_t / 1e6, 1),
           "mb_per_s_by_slice": [round(r["bytes"] / r["seconds"] / 1e6, 1) for r in raws],
           "op_p50_ms": ms(raw_lat, 50), "op_p99_ms": ms(raw_lat, 99)}
    if "replica_mb_per_s" in raws[0]:
        raw["replica_mb_per_s_by_slice"] = [r["replica_mb_per_s"] for r in raws]
    return {"bench": "append", "backend": args.backend, "entry_size": size, "concurrency": args.concurrency,
            "rounds": rounds, "picchio": ours, "raw": raw,
            "ratio": round(ours["mb_per_s"] / raw["mb_per_s"], 3) if raw["mb_per_s"] else None,
            "ack_p50_vs_raw": round(ours["ack_p50_ms"] / raw["op_p50_ms"], 2) if raw["op_p50_ms"] else None}


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
            "writer_etcd_tail_puts_per_s": round(puts_per_s, 1), "raw_same_run": floor,
            "same_process_percentiles_ms": {str(p): ms(same, p) for p in _PCTS},
            "other_process_percentiles_ms": {str(p): ms(other, p) for p in _PCTS},
            "same_process_latencies_ms": [round(x * 1e3, 3) for x in same],  # for --plot; not printed
            "other_process_latencies_ms": [round(x * 1e3, 3) for x in other]}


def run_bench(args: argparse.Namespace) -> int:
    if args.bench == "append":
        out = _bench_append(args)
    elif args.bench == "scale":
        out = bench_scale(args)
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
    if getattr(args, "plot", None):
        from . import plot
        if args.bench == "scale":
            out["plot"] = str(plot.scale_chart(out["points"], args.plot, f"picchio bench scale --backend {args.backend}"))
        else:
            out["plot"] = str((plot.append_chart if args.bench == "append" else plot.tail_chart)(out, args.plot))
    for k in ("same_process_latencies_ms", "other_process_latencies_ms"):
        out.pop(k, None)
    print(json.dumps(out, indent=2))
    return 0
