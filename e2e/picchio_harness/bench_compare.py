"""picchio beside the real Woodpecker (v0.1.35): the same append workloads on the same machine,
the same etcd and the same disk / MinIO bucket, in alternating slices (picchio, Woodpecker,
picchio, …) so that this machine's drift hits both alike.  Prints JSON: per backend and workload
both figures and the ratio picchio / Woodpecker.

    python -m picchio_harness.bench_compare [--seconds 4] [--rounds 3] [--backends local,minio,service]
    make bench-compare

Workloads (issue 10): 1 MiB × 16 in flight (throughput) and 4 KiB one at a time (ack latency),
each on local disk, on MinIO and in service mode.  Service mode: each client appends through
three LogStore servers of its own implementation, on loopback, on the same etcd and MinIO —
picchio's client through three ``picchio logstore serve`` (registered in etcd, as
``picchio bench --backend service`` starts them), Woodpecker's client (wpctl, the LogStores'
endpoints as its quorum seeds) through three of Woodpecker's own LogStores (``woodpecker
server``, one gossip ring; picchio_harness.woodpecker.start_woodpecker_logstores); both sets
stay up for the whole backend, so the idle set runs beside the measured one.  Both sides run
as shipped: picchio with its defaults (a flush starts when idle), Woodpecker with its
config/woodpecker.yaml's flush timers (10 ms local, 200 ms object storage, 1 ms service mode);
one writer, one log per side.  ratio_throughput = picchio's appends/s ÷ Woodpecker's;
ratio_ack_p50 = Woodpecker's p50 ÷ picchio's (above 1: picchio ahead).  Needs
`make components ONLY=interop` (etcd 3.6, MinIO, woodpecker, wpctl).  Its pieces (one slice per
side, the summaries, the backends' settings, the LogStore sets, wpctl's config) are reused by
``picchio_harness.bench_peers``, which adds Kafka."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .build import component_binary
from .etcd import start_etcd
from .woodpecker import Wpctl, shipped_sync, start_woodpecker_logstores, unique, wp_config

WORKLOADS = [("1Mi x16", 1 << 20, 16), ("4Ki x1", 4096, 1)]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))] if xs else float("nan")


async def picchio_slice(w: Any, payload: bytes, inflight: int, seconds: float, lat: list[float]) -> tuple[int, float]:
    """``inflight`` appends kept in flight on picchio's writer ``w`` for ``seconds`` → (acked, elapsed);
    each ack latency (ms) is added to ``lat``."""
    end = time.monotonic() + seconds
    n = 0

    async def worker() -> None:
        nonlocal n
        while time.monotonic() < end:
            t0 = time.monotonic()
            await w.append(payload)
            lat.append((time.monotonic() - t0) * 1e3)
            n += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return n, time.monotonic() - t0


def woodpecker_slice(wp: Wpctl, log: str, size: int, inflight: int, seconds: float) -> dict[str, Any]:
    """One ``wpctl bench`` run (its own 5 warm-up appends excluded) → its result line: appends,
    seconds, errors, ack_ms_p50, ack_ms_p99."""
    lines = wp.run("bench", "--log", log, "--size", str(size), "--inflight", str(inflight), "--seconds", str(seconds),
                   check=False, timeout=seconds + 120)
    b = next((d for d in lines if d.get("op") == "bench"), None)
    if b is None:
        raise RuntimeError(f"wpctl bench printed no result: {lines[-3:]}\n{wp.log_tail()}")
    return b


def summarize_picchio(rounds: list[tuple[int, float]], lat: list[float], size: int) -> dict[str, Any]:
    """(acked, seconds) per slice and every ack latency (ms) → the figures of one side."""
    pn, pt = sum(n for n, _ in rounds), sum(t for _, t in rounds)
    return {"appends": pn, "seconds": round(pt, 2), "mb_per_s": round(pn * size / pt / 1e6, 1) if pt else 0.0,
            "appends_per_s": round(pn / pt, 1) if pt else 0.0, "ack_p50_ms": round(pct(lat, 50), 3),
            "ack_p99_ms": round(pct(lat, 99), 3),
            "mb_per_s_by_round": [round(n * size / t / 1e6, 1) if t else 0.0 for n, t in rounds]}


def summarize_woodpecker(slices: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """wpctl bench lines (one per slice) → the figures of one side; wpctl prints percentiles,
    not latencies, so p50 is the median of the slices' p50s and p99 the largest slice p99."""
    wn, wt = sum(b["appends"] for b in slices), sum(b["seconds"] for b in slices)
    return {"appends": wn, "seconds": round(wt, 2), "errors": sum(b["errors"] for b in slices),
            "mb_per_s": round(wn * size / wt / 1e6, 1) if wt else 0.0, "appends_per_s": round(wn / wt, 1) if wt else 0.0,
            "ack_p50_ms": round(statistics.median(b["ack_ms_p50"] for b in slices), 3),
            "ack_p99_ms": round(max(b["ack_ms_p99"] for b in slices), 3),
            "mb_per_s_by_round": [round(b["appends"] * size / b["seconds"] / 1e6, 1) if b["seconds"] else 0.0
                                  for b in slices]}


async def _compare(cfg: Any, wp: Wpctl, size: int, inflight: int, rounds: int, seconds: float) -> dict[str, Any]:
    import logstore

    payload = os.urandom(size)
    p_lat: list[float] = []
    p_rounds: list[tuple[int, float]] = []
    w_slices: list[dict[str, Any]] = []
    async with logstore.Client(cfg) as c:
        log = await c.create_log(unique("cmp-picchio"))
        w = await log.open_writer()
        for _ in range(min(inflight, 8)):  # warm-up: connections, the first segment
            await w.append(payload)
        wp_log = unique("cmp-woodpecker")
        for _ in range(rounds):
            p_rounds.append(await picchio_slice(w, payload, inflight, seconds, p_lat))
            w_slices.append(await asyncio.to_thread(woodpecker_slice, wp, wp_log, size, inflight, seconds))
        await w.close()
    ours, theirs = summarize_picchio(p_rounds, p_lat, size), summarize_woodpecker(w_slices, size)
    return {"picchio": ours, "woodpecker": theirs,
            "ratio_throughput": round(ours["appends_per_s"] / theirs["appends_per_s"], 2)
            if theirs["appends_per_s"] and ours["appends_per_s"] else None,
            "ratio_ack_p50": round(theirs["ack_p50_ms"] / ours["ack_p50_ms"], 2) if ours["ack_p50_ms"] else None}


def backend_settings(backend: str, workdir: Path, etcd_endpoint: str, started: list[Any]) -> dict[str, Any]:
    """The Config keys (flat) of ``backend`` on this run's etcd, under ``workdir``; for minio and
    service the run's MinIO (started on first use, added to ``started``)."""
    d: dict[str, Any] = {"etcd.endpoints": [etcd_endpoint], "woodpecker.storage.type": backend,
                         "woodpecker.storage.rootPath": str(workdir / "wal")}
    if backend in ("minio", "service"):
        from .s3 import start_s3
        s3 = next((s for s in started if hasattr(s, "access_key")), None)
        if s3 is None:
            s3 = start_s3(workdir)
            started.append(s3)
        d.update({"minio.address": s3.host, "minio.port": s3.port, "minio.accessKeyID": s3.access_key,
                  "minio.secretAccessKey": s3.secret_key, "minio.bucketName": "picchio-compare",
                  "minio.createBucket": True})
    return d


def start_service_logstores(cfg: Any, woodpecker: str, workdir: Path, started: list[Any]) -> list[str]:
    """Three ``picchio logstore serve`` (registered in etcd under ``cfg``'s keyspace, where
    picchio's client picks its ensembles) and three of Woodpecker's own LogStores (not registered:
    Woodpecker's client finds them by their endpoints, its seeds, which are returned); all added
    to ``started``."""
    from .logstores import start_logstores, wait_registered

    started += start_logstores(workdir / "picchio", cfg.to_dict(), 3)
    wait_registered(cfg.meta_prefix, cfg["etcd.endpoints"][0], 3)
    stores = start_woodpecker_logstores(woodpecker, cfg, workdir / "woodpecker", 3, shipped=True)
    started += stores
    return [s.endpoint for s in stores]


def woodpecker_client(wpctl: str, cfg: Any, workdir: Path, uid: str, seeds: list[str] | None) -> Wpctl:
    """wpctl on a woodpecker.yaml for ``cfg``'s keyspace with the shipped flush timers."""
    return Wpctl(wpctl, shipped_sync(wp_config(cfg, workdir / f"{uid}.yaml", sync_ms=None, seeds=seeds)),
                 workdir / f"{uid}.wp.log")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m picchio_harness.bench_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of one slice per side")
    ap.add_argument("--rounds", type=int, default=3, help="slices per side (alternating)")
    ap.add_argument("--backends", default="local,minio,service", help="comma-separated: local, minio, service")
    ap.add_argument("--dir", help="work directory (default: a temp dir, removed afterwards)")
    args = ap.parse_args(argv)
    import logstore

    backends = args.backends.split(",")
    if set(backends) - {"local", "minio", "service"}:
        ap.error(f"--backends: local, minio or service, not {args.backends!r}")
    wpctl = component_binary("wpctl")
    woodpecker = component_binary("woodpecker") if "service" in backends else ""
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="picchio-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[Any] = []
    results = []
    try:
        etcd = start_etcd(workdir)
        started.append(etcd)
        for backend in backends:
            d = backend_settings(backend, workdir, etcd.endpoint, started)
            shared = len(started)  # etcd (+ MinIO): kept for the next backend
            seeds = None
            if backend == "service":  # one keyspace for the backend: the LogStores stay up for its workloads
                uid = unique("cmp-svc")
                d.update({"etcd.rootPath": uid, "minio.rootPath": uid})
                seeds = start_service_logstores(logstore.Config.from_dict(d), woodpecker, workdir / uid, started)
            for label, size, inflight in WORKLOADS:
                uid = unique("cmp")  # a keyspace per workload, but service mode's (in d) for its LogStores
                cfg = logstore.Config.from_dict({"etcd.rootPath": uid, "minio.rootPath": uid, **d})
                wp = woodpecker_client(wpctl, cfg, workdir, uid, seeds)
                print(f"[compare] {backend} {label}: {args.rounds} × {args.seconds:g}s per side", file=sys.stderr,
                      flush=True)
                r = asyncio.run(_compare(cfg, wp, size, inflight, args.rounds, args.seconds))
                results.append({"backend": backend, "workload": label, "entry_size": size, "in_flight": inflight, **r})
            while len(started) > shared:  # service mode's six LogStores: not beside the next backend
                started.pop().stop()
    finally:
        for s in reversed(started):
            s.stop()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"bench": "compare", "woodpecker": "v0.1.35", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
