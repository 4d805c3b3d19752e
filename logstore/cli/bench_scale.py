"""``picchio bench scale``: what one more open log costs.  Milvus opens one log
per channel — 16 to hundreds per cluster — so the cost per log must be flat.

For every point of ``--logs`` (e.g. ``1,10,100,1000``) one client opens N logs,
each with an open writer, and drives the SAME total load at every point:
``--inflight`` appends of ``--entry-size`` bytes in flight in total, spread
round-robin over the N logs (worker k sends its j-th append to log
(k + j·inflight) mod N), for ``--seconds``.  All N writers stay open.  Then an
idle phase: the N writers stay open with no appends for ``--idle-seconds``.

Per point (JSON on stdout, a progress line on stderr when it is a tty):

- ``raw``: the raw limit at the same spread, right after the load
  (``--raw-seconds``), doing what the product does at its best with no product
  in the way.  local — a closed loop of rounds of ``inflight`` entries spread
  over the N files as the appends are, one framed block per file (``writev``)
  and one ``syncfs`` per round (``fdatasync`` when a round touches one file):
  the group commit of storage/groupsync.py.  service — three such loops at
  once, one per replica, on this disk; the second-fastest counts (ack quorum
  2).  minio — ``inflight`` conditional PUTs of one entry in flight (the
  product's blocks hold one entry from N ≥ inflight on; below that it
  batches and can pass this figure).  ``ratio_vs_raw`` = appends/s over it.
  The raw limit itself falls as N grows (one block per file per round instead
  of one block per round): compare ``ratio_vs_raw`` across points to see the
  product's own per-log cost, and ``throughput_ratio_vs_first`` for both.
- ``appends_per_s``, ``mb_per_s``, ``ack_p50_ms``/``ack_p99_ms`` and
  ``throughput_ratio_vs_1_log`` (appends/s over the first point's, which
  should be 1 log): the per-log cost is flat when the ratio stays near 1.
  With N ≥ inflight every append lands in another log, so a block carries one
  entry instead of up to ``inflight`` (group commit has nothing to group):
  ``entries_per_s3_request`` shows it for ``minio``.
- RSS (``VmRSS`` of ``/proc/PID/status``) and open fds (``/proc/PID/fd``) of the
  client and of every LogStore this bench started (sum and per process);
  CPU seconds (``utime+stime`` of ``/proc/PID/stat``) of each during the load.
- etcd requests/s: the delta of etcd's own ``/metrics`` on its client URL,
  ``grpc_server_handled_total{grpc_type="unary"}`` summed (Range, Put, Txn,
  LeaseGrant, …; the top methods are listed) plus
  ``grpc_server_msg_received_total`` of the streams (Watch, LeaseKeepAlive),
  and ``etcd_server_proposals_committed_total`` (writes).
- S3 requests/s: ``s3_requests_per_s`` is the client's own calls
  (``S3.requests``, counted in ``storage/s3.py``: each PUT/GET/list… once,
  its retries inside).  ``minio_s3_requests_per_s_approx`` is MinIO's
  ``minio_s3_requests_total`` from ``/minio/v2/metrics/node`` (the bench starts
  MinIO with ``MINIO_PROMETHEUS_AUTH_TYPE=public``, so no token): it also
  counts the LogStores' uploads, but MinIO caches these metrics for about 10 s,
  so over a phase of a few seconds it can read 0 or include the phase before.
- idle: CPU % of the client and the LogStores with N writers open and no
  appends, etcd and S3 requests/s meanwhile, and RSS per idle log (RSS with
  the N writers open minus RSS before the point opened them, over N; Python
  reuses freed memory, so later points can read low).

Without ``--config`` it starts its own etcd (+ MinIO, + three LogStores for
``service``) on loopback; with ``--config`` the LogStores' PIDs are unknown and
their figures are left out.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from .. import Client, Config
from ..config import parse_size
from .bench_raw import raw_puts

_TICK = os.sysconf("SC_CLK_TCK")


def add_scale_parser(bsub: Any) -> None:
    s = bsub.add_parser("scale", help="per-log cost: N open logs at the same total load, and idle")
    s.add_argument("--backend", choices=["local", "minio", "service"], default="local")
    s.add_argument("--logs", default="1,10,100,1000", help="comma-separated numbers of open logs, one point each")
    s.add_argument("--entry-size", default="4Ki", help="bytes per entry")
    s.add_argument("--inflight", type=int, default=64, help="appends in flight in total, over all logs")
    s.add_argument("--seconds", type=float, default=5.0, help="load per point")
    s.add_argument("--idle-seconds", type=float, default=3.0, help="idle phase per point")
    s.add_argument("--open-parallel", type=int, default=32, help="logs created / writers opened at a time")
    s.add_argument("--raw-seconds", type=float, default=None,
                   help="raw limit measured per point (default: half of --seconds; 0: none)")
    s.add_argument("--plot", metavar="FILE.png", help="also draw MB/s and ack p99 against logs (needs picchio[bench])")
    s.add_argument("--dir")


# -- process figures -------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0.0


class _Procs:
    """The client (this process) and the LogStores the bench started."""

    def __init__(self, logstores: dict[str, int]) -> None:
        self.pids = {"client": os.getpid(), **logstores}

    def cpu(self) -> dict[str, float]:
        return {k: _cpu_s(p) for k, p in self.pids.items()}

    def rss(self) -> dict[str, int]:
        return {k: _rss_kib(p) for k, p in self.pids.items()}

    def fds(self) -> dict[str, int]:
        return {k: _fds(p) for k, p in self.pids.items()}


def _split(d: dict[str, float], digits: int = 2) -> dict[str, Any]:
    """{"client": x, "logstores_sum": Σ, "logstores": {name: y}}"""
    ls = {k: round(v, digits) for k, v in d.items() if k != "client"}
    out: dict[str, Any] = {"client": round(d["client"], digits)}
    if ls:
        out["logstores_sum"] = round(sum(ls.values()), digits)
        out["logstores"] = ls
    return out


# -- server counters ---------------------------------------------------------------

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def _scrape(url: str | None) -> dict[tuple[str, str], float]:
    if not url:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def _label(labels: str, name: str) -> str:
    m = re.search(name + r'="([^"]*)"', labels)
    return m.group(1) if m else ""


def _etcd_rates(a: dict, b: dict, secs: float) -> dict[str, Any]:
    if not a or not b:
        return {}
    methods: dict[str, float] = {}
    for (name, labels), v in b.items():
        d = v - a.get((name, labels), 0.0)
        if d <= 0:
            continue
        if name == "grpc_server_handled_total" and _label(labels, "grpc_type") == "unary":
            methods[_label(labels, "grpc_method")] = methods.get(_label(labels, "grpc_method"), 0) + d
        elif name == "grpc_server_msg_received_total" and _label(labels, "grpc_type") == "bidi_stream":
            k = _label(labels, "grpc_method") + "(stream msgs)"
            methods[k] = methods.get(k, 0) + d
    total = sum(methods.values())
    writes = b.get(("etcd_server_proposals_committed_total", ""), 0) - a.get(("etcd_server_proposals_committed_total", ""), 0)
    top = dict(sorted(((k, round(v / secs, 1)) for k, v in methods.items()), key=lambda kv: -kv[1])[:5])
    return {"requests_per_s": round(total / secs, 1), "writes_per_s": round(writes / secs, 1), "top": top}


def _s3_total(m: dict) -> float:
    return sum(v for (name, _), v in m.items() if name == "minio_s3_requests_total")


def _s3_apis(a: dict, b: dict, secs: float) -> dict[str, float]:
    d = {_label(k[1], "api"): v - a.get(k, 0.0) for k, v in b.items() if k[0] == "minio_s3_requests_total"}
    return dict(sorted(((k, round(v / secs, 1)) for k, v in d.items() if v > 0), key=lambda kv: -kv[1])[:4])


# -- components -----------------------------------------------------------------

@contextlib.contextmanager
def _components(args: argparse.Namespace) -> Iterator[tuple[Config, dict[str, int], str | None, str | None]]:
    """→ (config, LogStore name → PID, etcd /metrics URL, MinIO metrics URL)."""
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="picchio-bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    uid = f"bench-{os.getpid()}-{int(time.time())}"
    overrides: dict[str, Any] = {"woodpecker.storage.type": args.backend,
                                 "woodpecker.storage.rootPath": str(workdir / "wal"),
                                 "etcd.rootPath": uid, "minio.rootPath": uid}
    started: list[Any] = []
    try:
        if args.config:
            cfg = Config.from_yaml(args.config).with_values(overrides)
            ep = cfg["etcd.endpoints"][0]
            url = ep if "://" in ep else f"http://{ep}"
            yield cfg, {}, None if url.startswith("https") else url + "/metrics", None
            return
        from ..dev.etcd import start_etcd
        from ..dev.s3 import start_s3
        etcd = start_etcd(workdir)
        started.append(etcd)
        overrides["etcd.endpoints"] = [etcd.endpoint]
        s3_url = None
        if args.backend in ("minio", "service"):
            # MinIO reads it from its environment (dev.procs passes ours on): metrics without a token
            os.environ.setdefault("MINIO_PROMETHEUS_AUTH_TYPE", "public")
            s3 = start_s3(workdir)
            started.append(s3)
            overrides.update({"minio.address": s3.host, "minio.port": s3.port, "minio.accessKeyID": s3.access_key,
                              "minio.secretAccessKey": s3.secret_key, "minio.bucketName": "picchio-bench",
                              "minio.createBucket": True})
            s3_url = f"http://{s3.host}:{s3.port}/minio/v2/metrics/node"  # (cluster metrics are cached)
        pids: dict[str, int] = {}
        if args.backend == "service":
            from ..dev.logstores import start_logstores, wait_registered
            cfg = Config(overrides)
            stores = start_logstores(workdir / "logstores", cfg.to_dict(), 3)
            started += stores
            wait_registered(cfg.meta_prefix, etcd.endpoint, 3)
            pids = {s.name: s.proc.pid for s in stores if s.proc is not None}
        yield Config(overrides), pids, f"{etcd.url}/metrics", s3_url
    finally:
        for s in reversed(started):
            s.stop()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


class _Progress:
    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self._last = 0.0

    def line(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.on and (force or now - self._last > 0.2):
            self._last = now
            sys.stderr.write("\r\033[K" + text[:150])
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def _gather_gated(n: int, parallel: int, fn) -> list[Any]:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> Any:
        async with gate:
            return await fn(i)
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _group_rounds(directory: Path, files: int, size: int, inflight: int, end: float) -> tuple[int, float]:
    """One replica's raw loop: rounds of ``inflight`` entries spread as the
    appends are (entry k of round j in file (k + j·inflight) mod ``files``);
    each file gets its entries as one block framed by the product's codec in
    one ``writev``, then one ``syncfs`` makes the round durable — one
    ``fdatasync`` when the round touched a single file.  That is the group
    commit (storage/groupsync.py) with no product around it → (entries, s)."""
    from ..codec import HeaderRecord
    from ..storage.groupsync import syncfs
    from .bench_raw import framed_block
    directory.mkdir(parents=True, exist_ok=True)
    n = min(files, inflight)  # files a round can touch
    fds = [os.open(directory / f"raw-{i}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_APPEND, 0o644)
           for i in range(files)]
    root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    blocks = {c: framed_block(size, c) for c in {inflight // n, inflight // n + 1}}
    count, t0 = 0, time.perf_counter()
    try:
        for fd in fds:
            os.write(fd, HeaderRecord(0).encode())
        os.sync()
        t0 = time.perf_counter()
        j = 0
        while time.monotonic() < end:
            per: dict[int, int] = {}
            for k in range(inflight):
                f = (k + j * inflight) % files
                per[f] = per.get(f, 0) + 1
            j += 1
            for f, c in per.items():
                os.writev(fds[f], blocks[c])
            if len(per) == 1:
                os.fdatasync(fds[next(iter(per))])
            else:
                syncfs(root)
            count += inflight
        return count, time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
        os.close(root)
        shutil.rmtree(directory, ignore_errors=True)


def _raw_files(directory: Path, files: int, size: int, inflight: int, seconds: float, replicas: int = 1) -> float:
    """The raw limit at this spread → entries/s: :func:`_group_rounds` in a
    closed loop; for service mode three at once (one directory each, this one
    disk), acked at the second-fastest replica's rate (the ack quorum is 2)."""
    import threading
    end = time.monotonic() + seconds
    rates: list[float] = [0.0] * replicas

    def run(r: int) -> None:
        c, secs = _group_rounds(directory / f"replica-{r}", files, size, inflight, end)
        rates[r] = c / secs if secs > 0 else 0.0
    threads = [threading.Thread(target=run, args=(r,)) for r in range(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(directory, ignore_errors=True)
    return sorted(rates, reverse=True)[min(1, replicas - 1)]


async def _raw_puts(cfg: Config, size: int, inflight: int, seconds: float) -> float:
    """``inflight`` conditional PUTs of ``size``-byte objects in flight → PUTs/s (bench_raw's loop)."""
    r = await raw_puts(cfg, size, inflight, seconds, lambda: None)
    return len(r["lat"]) / r["seconds"]


async def _raw(args: argparse.Namespace, cfg: Config, n: int, size: int) -> dict[str, Any] | None:
    secs = args.seconds / 2 if args.raw_seconds is None else args.raw_seconds
    if secs <= 0:
        return None
    if args.backend == "minio":
        ops = await _raw_puts(cfg, size, args.inflight, secs)
        what = f"PUT {size} B objects (If-None-Match), {args.inflight} in flight"
    else:
        d = Path(cfg["woodpecker.storage.rootPath"]) / "raw-scale"
        replicas = 3 if args.backend == "service" else 1
        ops = await asyncio.to_thread(_raw_files, d, n, size, args.inflight, secs, replicas)
        what = (f"rounds of {args.inflight} entries of {size} B spread over {n} files as the appends are: "
                f"one framed block per file (writev), then one syncfs (fdatasync for one file)")
        if replicas > 1:
            what += "; three such loops at once on this disk, the second-fastest (ack quorum 2)"
    return {"what": what, "ops_per_s": round(ops, 1)}


def _group_counts(c: Client) -> tuple | None:
    """(syncfs calls, blocks in them, seconds in syncfs, seconds busy) of a local client's group commit, or None."""
    g = getattr(c.backend, "group", None)
    return (g.groups, g.blocks, g.sync_seconds, g.cycle_seconds) if g is not None else None


def _client_s3(c: Client) -> int:
    s3 = getattr(c.backend, "s3", None)
    return int(getattr(s3, "requests", 0))


async def _point(c: Client, args: argparse.Namespace, n: int, point_no: int, size: int, procs: _Procs,
                 etcd_url: str | None, s3_url: str | None, prog: _Progress) -> dict[str, Any]:
    payload = os.urandom(size)
    label = f"{args.backend} {n:>5} logs"
    rss0 = procs.rss()
    prefix = f"scale{point_no}-{n}-"
    prog.line(f"{label}: creating logs and writers…", True)
    t_open = time.perf_counter()
    handles = await _gather_gated(n, args.open_parallel, lambda i: c.create_log(f"{prefix}{i}"))
    writers = await _gather_gated(n, args.open_parallel, lambda i: handles[i].open_writer())
    # warm-up: one append per writer (segments, connections)
    await _gather_gated(n, args.inflight, lambda i: writers[i].append(payload))
    open_s = time.perf_counter() - t_open

    lat: list[float] = []
    count = 0
    cpu0, etcd0, s30, cs30 = procs.cpu(), _scrape(etcd_url), _scrape(s3_url), _client_s3(c)
    g0 = _group_counts(c)
    t0 = time.perf_counter()
    end = time.monotonic() + args.seconds

    async def worker(k: int) -> None:
        nonlocal count
        j = 0
        while time.monotonic() < end:
            w = writers[(k + j * args.inflight) % n]
            j += 1
            s = time.perf_counter()
            await w.append(payload)
            lat.append(time.perf_counter() - s)
            count += 1
            prog.line(f"{label}: load {min(1.0, (time.perf_counter() - t0) / args.seconds) * 100:3.0f}%  "
                      f"{count / max(1e-9, time.perf_counter() - t0):8.0f} appends/s")

    await asyncio.gather(*(worker(k) for k in range(args.inflight)))
    secs = time.perf_counter() - t0
    cpu1, etcd1, s31, cs31 = procs.cpu(), _scrape(etcd_url), _scrape(s3_url), _client_s3(c)
    g1 = _group_counts(c)
    rss_load, fds_load = procs.rss(), procs.fds()
    prog.line(f"{label}: raw limit…", True)
    raw = await _raw(args, c.config, n, size)
    s3_reqs = _s3_total(s31) - _s3_total(s30)

    # idle: every writer open, nothing appended
    prog.line(f"{label}: idle {args.idle_seconds:g}s…", True)
    await asyncio.sleep(1.0)  # let what the load left (compactions, tail notifications) settle
    icpu0, ietcd0, is30, ics30 = procs.cpu(), _scrape(etcd_url), _scrape(s3_url), _client_s3(c)
    ti = time.perf_counter()
    await asyncio.sleep(args.idle_seconds)
    isecs = time.perf_counter() - ti
    icpu1, ietcd1, is31, ics31 = procs.cpu(), _scrape(etcd_url), _scrape(s3_url), _client_s3(c)
    rss_idle = procs.rss()
    idle_cpu_pct = {k: (icpu1[k] - icpu0[k]) / isecs * 100 for k in icpu1}
    idle = args.idle_seconds > 0  # else no figure, not a division by a few microseconds
    rss_per_log = {k: (rss_idle[k] - rss0[k]) / n for k in rss_idle}

    prog.line(f"{label}: closing writers…", True)
    t_close = time.perf_counter()
    await _gather_gated(n, args.open_parallel, lambda i: writers[i].close())
    close_s = time.perf_counter() - t_close

    ms = lambda p: round(_pct(lat, p) * 1e3, 3)  # noqa: E731
    out: dict[str, Any] = {
        "logs": n, "appends": count, "seconds": round(secs, 3),
        "appends_per_s": round(count / secs, 1), "mb_per_s": round(count * size / secs / 1e6, 2),
        "ack_p50_ms": ms(50), "ack_p99_ms": ms(99),
        "raw": raw, "ratio_vs_raw": round(count / secs / raw["ops_per_s"], 3) if raw and raw["ops_per_s"] else None,
        "cpu_seconds": _split({k: cpu1[k] - cpu0[k] for k in cpu1}),
        "rss_mib": _split({k: v / 1024 for k, v in rss_load.items()}, 1),
        "fds": _split({k: float(v) for k, v in fds_load.items()}, 0),
        "etcd": _etcd_rates(etcd0, etcd1, secs),
        "s3_requests_per_s": round((cs31 - cs30) / secs, 1),
        "entries_per_s3_request": round(count / (cs31 - cs30), 2) if cs31 > cs30 else None,
        "minio_s3_requests_per_s_approx": round(s3_reqs / secs, 1) if s3_url else None,
        "minio_s3_top_approx": _s3_apis(s30, s31, secs) if s3_url else None,
        "idle": {"seconds": round(isecs, 2), "cpu_pct": _split(idle_cpu_pct, 2) if idle else None,
                 "cpu_pct_per_log": _split({k: v / n for k, v in idle_cpu_pct.items()}, 4) if idle else None,
                 "rss_kib_per_log": _split(rss_per_log, 1),
                 "etcd": _etcd_rates(ietcd0, ietcd1, isecs),
                 "s3_requests_per_s": round((ics31 - ics30) / isecs, 1),
                 "minio_s3_requests_per_s_approx":
                     round((_s3_total(is31) - _s3_total(is30)) / isecs, 1) if s3_url else None},
        # local: blocks made durable by one syncfs per group (groupsync.py); None: group commit off
        "group_sync": {"syncs_per_s": round((g1[0] - g0[0]) / secs, 1),
                       "blocks_per_sync": round((g1[1] - g0[1]) / (g1[0] - g0[0]), 2) if g1[0] > g0[0] else None,
                       "sync_ms": round((g1[2] - g0[2]) / max(1, g1[0] - g0[0]) * 1e3, 3),
                       "busy": round((g1[3] - g0[3]) / secs, 3)}
        if g0 is not None and g1 is not None else None,
        "open_seconds": round(open_s, 2), "close_seconds": round(close_s, 2),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    return out


async def _run(args: argparse.Namespace, cfg: Config, pids: dict[str, int], etcd_url: str | None,
               s3_url: str | None) -> dict[str, Any]:
    size = parse_size(args.entry_size, "--entry-size")
    points = [int(x) for x in args.logs.split(",") if x.strip()]
    if not points or min(points) < 1:
        raise SystemExit("--logs: comma-separated positive numbers, e.g. 1,10,100")
    procs = _Procs(pids)
    prog = _Progress()
    results = []
    try:
        async with Client(cfg) as c:
            for i, n in enumerate(points):
                r = await _point(c, args, n, i, size, procs, etcd_url, s3_url, prog)
                base = results[0]["appends_per_s"] if results else r["appends_per_s"]
                r["throughput_ratio_vs_1_log" if points[0] == 1 else "throughput_ratio_vs_first"] = \
                    round(r["appends_per_s"] / base, 3) if base else None
                results.append(r)
    finally:
        prog.done()
    return {"bench": "scale", "backend": args.backend, "entry_size": size, "inflight": args.inflight,
            "seconds_per_point": args.seconds, "etcd_counters": "grpc_server_handled_total (unary) + "
            "grpc_server_msg_received_total (streams); writes: etcd_server_proposals_committed_total",
            "s3_counters": "the client's own S3.requests; MinIO's minio_s3_requests_total (all clients, ~10 s cache)",
            "points": results}


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    with _components(args) as (cfg, pids, etcd_url, s3_url):
        return asyncio.run(_run(args, cfg, pids, etcd_url, s3_url))


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="bench")
    add_scale_parser(sp)
    a = p.parse_args(["scale"] + sys.argv[1:])
    a.config = None
    print(json.dumps(bench_scale(a), indent=2))
