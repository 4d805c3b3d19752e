"""picchio beside its peers — the real Woodpecker (v0.1.35) and Apache Kafka 4.x — on the same
machine and disk, with the raw write+fdatasync limit of that disk measured in the same run.
Prints JSON and draws a PNG (``--plot``, logstore.cli.plot.peers_chart).

    python -m picchio_harness.bench_peers [--seconds 4] [--rounds 3] [--tail-entries 300] [--plot peers.png]
    make bench-peers [PLOT=docs/bench/peers.png] [BENCH_ARGS="--seconds 4 --rounds 3"]

Systems (all started up front and left up for the whole run, so the idle ones sit beside the
measured one alike):
- ``picchio-local``: embedded, local backend: one block per flush, write + fdatasync;
- ``picchio-service``: three ``picchio logstore serve`` on loopback, ack from 2 of 3 (each
  fdatasyncs before it answers), MinIO behind them;
- ``woodpecker-local``, ``woodpecker-service``: the real Woodpecker through wpctl (its Go client),
  its own three LogStores in service mode, with the flush timers of its shipped woodpecker.yaml
  (the functions of bench_compare);
- ``kafka-1-pagecache``: one KRaft node (combined controller+broker), acks=all, Kafka's default
  durability: the ack comes from the page cache;
- ``kafka-1-fsync``: the same broker, a topic with ``flush.messages=1`` (the topic form of
  ``log.flush.interval.messages=1``): fsync of the partition after each appended batch, before
  the ack — the durability picchio-local gives;
- ``kafka-3-rf3``: three KRaft nodes (3-voter quorum), replication factor 3,
  min.insync.replicas=2, acks=all (the leader waits for every in-sync replica), page cache —
  the setup picchio-service compares with.
Kafka runs from Maven Central's jars (picchio_harness.kafka: fetched once into the cache, never
committed) under Kafka's own Java client (KafkaBench.java; why not ProducerPerformance or a
Python client: see picchio_harness.kafka).  Every system keeps exactly N appends in flight, one
writer, one log / one single-partition topic.  All three replicated setups put their three
replicas on this one disk.

Workloads: 1 MiB × 16 in flight and 64 KiB × 16 in flight (throughput), 4 KiB one at a time
(ack latency), each in ``--rounds`` alternating slices of ``--seconds`` per system (raw first,
then the systems, the order rotated each round) so that this machine's drift hits all alike;
then end-to-end tail latency: one entry at a time, ``--tail-interval`` apart, from the start of
the append to a reader in another process printing it (picchio: ``picchio log tail`` as in
``picchio bench tail``; Kafka: a consumer in another JVM), and from its ack to that reader.
Woodpecker gets the second only, with the reason in the JSON: wpctl has no tail benchmark, and
its ``write`` command prints when an entry is acknowledged, not when it was sent (ack → seen:
``wpctl write``'s ack lines against ``wpctl tail``'s entry lines, each stamped as it arrives).

The raw baseline: ``size × in_flight`` bytes written then one fdatasync, over and over, in the
run's directory (the best batching a writer with that many appends in flight could get); for the
tail workload one 4 KiB write + fdatasync.  Per system and workload the JSON gives MB/s,
appends/s, ack p50/p99 (ms), MB/s by round, errors and the 1-minute load average after each of
its slices.  Needs ``make components ONLY=interop`` (etcd 3.6, MinIO, woodpecker, wpctl), java,
javac and mvn."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bench_compare import (backend_settings, pct, picchio_slice, start_service_logstores, summarize_picchio,
                            summarize_woodpecker, woodpecker_client, woodpecker_slice)
from .woodpecker import unique

WORKLOADS = [("1Mi x16", 1 << 20, 16), ("64Ki x16", 64 << 10, 16), ("4Ki x1", 4096, 1)]
SYSTEMS = {
    "picchio-local": "picchio embedded, local backend (write + fdatasync per block)",
    "picchio-service": "picchio service mode: 3 LogStores, ack from 2 (each fdatasyncs)",
    "woodpecker-local": "Woodpecker v0.1.35 embedded, local storage (shipped flush timers)",
    "woodpecker-service": "Woodpecker v0.1.35 service mode: its 3 LogStores (shipped flush timers)",
    "kafka-1-pagecache": "Kafka, 1 KRaft node, acks=all, ack from the page cache (default)",
    "kafka-1-fsync": "Kafka, 1 KRaft node, acks=all, flush.messages=1 (fsync per appended batch)",
    "kafka-3-rf3": "Kafka, 3 KRaft nodes, RF 3, min.insync.replicas 2, acks=all, page cache",
}
WOODPECKER_NO_E2E = ("wpctl has no tail benchmark, and its write command reports an entry's ack but not when it was "
                     "sent: send → seen is not measured for Woodpecker; ack → seen is (wpctl write's ack lines and "
                     "wpctl tail's entry lines, both timed as they reach this process)")


_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"[peers {time.monotonic() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def raw_slice(directory: Path, size: int, batch: int, seconds: float) -> tuple[int, float, list[float]]:
    """``batch`` entries of ``size`` bytes framed as one block, written then fdatasync'd, for
    ``seconds`` → (bytes, elapsed, per-fdatasync latencies in ms): ``picchio bench append``'s own
    raw limit (logstore/cli/bench_raw.py), so both benches measure the disk the same way."""
    from logstore.cli.bench_raw import raw_disk

    r = raw_disk(directory, size, batch, seconds, replicas=1, quorum=1, tick=lambda: None)
    return r["bytes"], r["seconds"], [x * 1e3 for x in r["lat"]]


# --- one side per system: open(size, inflight) → slice(seconds) … → close() -------------------------------------

class PicchioSide:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    async def open(self, size: int, inflight: int) -> None:
        import logstore

        self.payload, self.inflight = os.urandom(size), inflight
        self.client = logstore.Client(self.cfg)
        await self.client.__aenter__()
        self.name = unique("peers-picchio")
        log = await self.client.create_log(self.name)
        self.w = await log.open_writer()
        for _ in range(min(inflight, 8)):  # warm-up: connections, the first segment
            await self.w.append(self.payload)

    async def slice(self, seconds: float) -> dict[str, Any]:
        lat: list[float] = []
        n, t = await picchio_slice(self.w, self.payload, self.inflight, seconds, lat)
        return {"appends": n, "seconds": t, "errors": 0, "lat_ms": lat}

    async def close(self) -> None:
        await self.w.close()
        try:
            await self.client.delete_log(self.name)  # its data too: a long run writes tens of GB
        finally:
            await self.client.__aexit__(None, None, None)


class WoodpeckerSide:
    """wpctl bench per slice (a fresh process and writer each slice, its 5 warm-up appends not counted)."""

    def __init__(self, wpctl: str, settings: dict[str, Any], workdir: Path, seeds: list[str] | None) -> None:
        self.wpctl, self.settings, self.workdir, self.seeds = wpctl, settings, workdir, seeds

    async def open(self, size: int, inflight: int) -> None:
        import logstore

        uid = unique("peers-wp")
        cfg = logstore.Config.from_dict({"etcd.rootPath": uid, "minio.rootPath": uid, **self.settings})
        self.local_dir = Path(cfg["woodpecker.storage.rootPath"]) / cfg["minio.rootPath"]
        self.wp = woodpecker_client(self.wpctl, cfg, self.workdir, uid, self.seeds)
        self.log, self.size, self.inflight = unique("peers-woodpecker"), size, inflight

    async def slice(self, seconds: float) -> dict[str, Any]:
        return await asyncio.to_thread(woodpecker_slice, self.wp, self.log, self.size, self.inflight, seconds)

    async def close(self) -> None:
        if self.settings["woodpecker.storage.type"] == "local":  # wpctl cannot delete a log: its files, then
            shutil.rmtree(self.local_dir, ignore_errors=True)


class KafkaSide:
    def __init__(self, cluster: Any, rf: int, topic_config: str, workdir: Path) -> None:
        self.cluster, self.rf, self.topic_config, self.workdir = cluster, rf, topic_config, workdir

    async def open(self, size: int, inflight: int) -> None:
        from .kafka import KafkaProducer

        self.topic = topic = unique("peers")
        await asyncio.to_thread(self.cluster.create_topics, f"{topic}:{self.rf}:{self.topic_config}")
        self.prod = KafkaProducer(self.cluster, topic, size, inflight, self.workdir / f"{topic}.producer.log")
        await asyncio.to_thread(self.prod.__enter__)
        await asyncio.to_thread(self.prod.warmup, min(inflight, 8))

    async def slice(self, seconds: float) -> dict[str, Any]:
        s = await asyncio.to_thread(self.prod.slice, seconds)
        if s["errors"]:
            _say(f"kafka: {s['errors']} failed sends, first: {s['first_error']}")
        return s

    async def close(self) -> None:
        await asyncio.to_thread(self.prod.__exit__, None, None, None)
        await asyncio.to_thread(self.cluster.delete_topics, self.topic)


# --- tail: send → a reader in another process prints it ----------------------------------------------------------

async def picchio_tail(cfg: Any, entries: int, interval: float, workdir: Path) -> dict[str, list[float]]:
    """As ``picchio bench tail`` does it (a ``picchio log tail`` child, ready once it printed a
    marker), timed from the start of each append (e2e) as well as from its ack."""
    import yaml

    import logstore

    cfg_path = workdir / f"{unique('tail')}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict(nested=True)))
    e2e: list[float] = []
    ack: list[float] = []
    ack_seen: list[float] = []
    async with logstore.Client(cfg) as c:
        name = unique("peers-tail")
        log = await c.create_log(name)
        w = await log.open_writer()
        await w.append(b"warm-up")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logstore.cli.main", "--config", str(cfg_path), "--json", "log", "tail", name,
            "--from", "latest", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert child.stdout is not None
        try:
            deadline = time.monotonic() + 60
            while True:
                await w.append(b"marker")
                try:
                    if await asyncio.wait_for(child.stdout.readline(), 0.5):
                        break
                except asyncio.TimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the picchio tailing process never saw an entry") from None
            while True:  # let the markers drain
                try:
                    await asyncio.wait_for(child.stdout.readline(), 0.3)
                except asyncio.TimeoutError:
                    break
            for i in range(entries):
                payload = b"t%d" % i
                s = time.perf_counter()
                await w.append(payload)
                acked = time.perf_counter()
                while True:
                    line = await asyncio.wait_for(child.stdout.readline(), 10)
                    if json.loads(line)["payload"] == payload.decode():
                        seen = time.perf_counter()
                        break
                e2e.append((seen - s) * 1e3)
                ack.append((acked - s) * 1e3)
                ack_seen.append((seen - acked) * 1e3)
                await asyncio.sleep(interval)
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
            await w.close()
    return {"e2e_ms": e2e, "ack_ms": ack, "ack_to_seen_ms": ack_seen}


def woodpecker_tail(wp: Any, entries: int, interval: float) -> dict[str, list[float]]:
    """Woodpecker: ``wpctl tail --from latest`` (another process) and ``wpctl write`` one entry
    at a time; ack → seen from the arrival of the writer's ack line and the reader's entry line
    (both pumped by threads that stamp each line as it arrives).  No send times: e2e stays empty."""
    log = unique("peers-wp-tail")
    wp.run("write", "--log", log, "--count", "1", "--create", "--tag", "warm", timeout=120)
    budget = 120 + entries * (interval + 2)
    reader = wp.start("tail", "--log", log, "--from", "latest", timeout=budget)
    try:
        reader.until(lambda d: d.get("op") == "reader-open", "reader-open", 60)
        writer = wp.start("write", "--log", log, "--count", str(entries), "--interval-ms", str(int(interval * 1e3)),
                          "--tag", "t", timeout=budget)
        writer.finish(budget)
        acked = {d["i"]: t for t, d in writer.seen if d.get("op") == "ack"}
        seen: dict[int, float] = {}
        end = time.monotonic() + 30
        while len(seen) < len(acked) and time.monotonic() < end:
            item = reader.next_line(end - time.monotonic())
            if item and item[1].get("op") == "entry" and (item[1].get("props") or {}).get("tag") == "t":
                seen[int(item[1]["props"]["i"])] = item[0]
    finally:
        reader.kill()
    if len(seen) < entries:
        raise RuntimeError(f"wpctl tail saw {len(seen)} of {entries} entries ({len(acked)} acked)")
    return {"e2e_ms": [], "ack_ms": [], "ack_to_seen_ms": [(seen[i] - acked[i]) * 1e3 for i in sorted(seen)]}


def _tail_summary(lists: list[dict[str, list[float]]]) -> dict[str, Any]:
    e2e = [x for d in lists for x in d["e2e_ms"]]
    ack = [x for d in lists for x in d["ack_ms"]]
    a2s = [x for d in lists for x in d["ack_to_seen_ms"]]
    r = lambda xs, p: round(pct(xs, p), 3) if xs else None  # noqa: E731
    return {"entries": len(a2s), "e2e_p50_ms": r(e2e, 50), "e2e_p99_ms": r(e2e, 99),
            "e2e_max_ms": round(max(e2e), 3) if e2e else None, "ack_p50_ms": r(ack, 50),
            "ack_to_seen_p50_ms": r(a2s, 50), "ack_to_seen_p99_ms": r(a2s, 99),
            "e2e_p50_ms_by_round": [r(d["e2e_ms"], 50) for d in lists],
            "e2e_percentiles_ms": {str(p): r(e2e, p) for p in (10, 50, 90, 99)} if e2e else None}


# --- the run ----------------------------------------------------------------------------------------------------

def _summarize(name: str, slices: list[dict[str, Any]], size: int, loads: list[float]) -> dict[str, Any]:
    if name.startswith("woodpecker"):
        out = summarize_woodpecker(slices, size)
    else:
        lat = [x for s in slices for x in s["lat_ms"]]
        out = summarize_picchio([(s["appends"], s["seconds"]) for s in slices], lat, size)
        out["errors"] = sum(s["errors"] for s in slices)
    out["loadavg_1m_by_round"] = [round(x, 2) for x in loads]
    return out


async def _workload(sides: dict[str, Any], label: str, size: int, inflight: int, rounds: int, seconds: float,
                    rawdir: Path) -> dict[str, Any]:
    names = list(sides)
    slices: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    loads: dict[str, list[float]] = {n: [] for n in names}
    raw: list[tuple[int, float, list[float]]] = []
    try:
        await asyncio.gather(*(sides[n].open(size, inflight) for n in names))  # Kafka's JVMs start in parallel
        for r in range(rounds):
            raw.append(await asyncio.to_thread(raw_slice, rawdir, size, inflight, seconds))
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: no system always first
            for n in order:
                _say(f"{label} round {r + 1}/{rounds}: {n}")
                slices[n].append(await sides[n].slice(seconds))
                loads[n].append(os.getloadavg()[0])
    finally:
        for n in names:
            try:
                await sides[n].close()
            except Exception as e:  # noqa: BLE001 - a side that failed to open: report, close the others
                _say(f"closing {n}: {e!r}")
    raw_bytes, raw_t = sum(b for b, _, _ in raw), sum(t for _, t, _ in raw)
    raw_lat = [x for _, _, lat in raw for x in lat]
    return {"workload": label, "entry_size": size, "in_flight": inflight,
            "raw": {"what": f"writev of a framed block of {inflight} × {size} B + fdatasync, same directory",
                    "mb_per_s": round(raw_bytes / raw_t / 1e6, 1),
                    "mb_per_s_by_round": [round(b / t / 1e6, 1) for b, t, _ in raw],
                    "fdatasync_p50_ms": round(pct(raw_lat, 50), 3), "fdatasync_p99_ms": round(pct(raw_lat, 99), 3)},
            "systems": {n: _summarize(n, slices[n], size, loads[n]) for n in names}}


async def _tail(tails: dict[str, Any], entries: int, rounds: int, interval: float, workdir: Path) -> dict[str, Any]:
    per = max(1, entries // rounds)
    got: dict[str, list[dict[str, list[float]]]] = {n: [] for n in tails}
    raw: list[float] = []
    names = list(tails)
    for r in range(rounds):
        raw += (await asyncio.to_thread(raw_slice, workdir / "raw", 4096, 1, 0.5))[2]
        for n in names[r % len(names):] + names[:r % len(names)]:
            _say(f"tail round {r + 1}/{rounds}: {n} ({per} entries)")
            got[n].append(await tails[n](per, interval))
    out: dict[str, Any] = {"entries_per_system": per * rounds, "interval_s": interval,
                           "raw": {"what": "writev of a framed 4096 B entry + fdatasync, same directory",
                                   "fdatasync_p50_ms": round(pct(raw, 50), 3),
                                   "fdatasync_p99_ms": round(pct(raw, 99), 3)},
                           "systems": {n: _tail_summary(v) for n, v in got.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m picchio_harness.bench_peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of one slice per system")
    ap.add_argument("--rounds", type=int, default=3, help="slices per system and workload (alternating)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of: {', '.join(SYSTEMS)}")
    ap.add_argument("--workloads", default=",".join(w for w, _, _ in WORKLOADS) + ",tail",
                    help="comma-separated, of: " + ", ".join(w for w, _, _ in WORKLOADS) + ", tail")
    ap.add_argument("--tail-entries", type=int, default=300, help="tail: entries per system (over the rounds)")
    ap.add_argument("--tail-interval", type=float, default=0.01, help="tail: seconds between entries")
    ap.add_argument("--plot", help="write the chart (PNG) here")
    ap.add_argument("--dir", help="work directory (default: a temp dir, removed afterwards)")
    args = ap.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    if set(systems) - set(SYSTEMS):
        ap.error(f"--systems: unknown {sorted(set(systems) - set(SYSTEMS))}")
    wanted = args.workloads.split(",")
    workloads = [w for w in WORKLOADS if w[0] in wanted]
    if args.plot:  # fail before minutes of benchmarking, not after
        from logstore.cli.plot import require_matplotlib
        require_matplotlib()
    import logstore

    from .build import component_binary
    from .etcd import start_etcd

    kafka_systems = [s for s in systems if s.startswith("kafka")]
    wp_systems = [s for s in systems if s.startswith("woodpecker")]
    service = {"picchio-service", "woodpecker-service"} & set(systems)
    wpctl = component_binary("wpctl") if wp_systems else ""
    woodpecker = component_binary("woodpecker") if service else ""
    if kafka_systems:
        from . import kafka
        kafka.bench_classes(kafka.fetch())  # fetched/compiled before anything starts (progress on stderr)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="picchio-peers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[Any] = []
    t_start, load_start = time.time(), os.getloadavg()
    try:
        _say(f"starting components in {workdir}")
        etcd = start_etcd(workdir)
        started.append(etcd)
        local = backend_settings("local", workdir, etcd.endpoint, started)
        svc: dict[str, Any] = {}
        seeds: list[str] | None = None
        if service:
            svc = backend_settings("service", workdir, etcd.endpoint, started)
            uid = unique("peers-svc")
            svc.update({"etcd.rootPath": uid, "minio.rootPath": uid})
            if woodpecker:
                seeds = start_service_logstores(logstore.Config.from_dict(svc), woodpecker, workdir / uid, started)
        k1 = k3 = None
        if {"kafka-1-pagecache", "kafka-1-fsync"} & set(systems):
            k1 = kafka.start_kafka(workdir / "kafka-1", 1)
            started.append(k1)
        if "kafka-3-rf3" in systems:
            k3 = kafka.start_kafka(workdir / "kafka-3", 3)
            started.append(k3)

        def cfg_of(settings: dict[str, Any]) -> Any:
            uid = unique("peers")
            return logstore.Config.from_dict({"etcd.rootPath": uid, "minio.rootPath": uid, **settings})

        def sides() -> dict[str, Any]:
            make = {"picchio-local": lambda: PicchioSide(cfg_of(local)),
                    "picchio-service": lambda: PicchioSide(cfg_of(svc)),
                    "woodpecker-local": lambda: WoodpeckerSide(wpctl, local, workdir, None),
                    "woodpecker-service": lambda: WoodpeckerSide(wpctl, svc, workdir, seeds),
                    "kafka-1-pagecache": lambda: KafkaSide(k1, 1, "", workdir),
                    "kafka-1-fsync": lambda: KafkaSide(k1, 1, "flush.messages=1", workdir),
                    "kafka-3-rf3": lambda: KafkaSide(k3, 3, "min.insync.replicas=2", workdir)}
            return {s: make[s]() for s in systems}

        results = []
        for label, size, inflight in workloads:
            _say(f"{label}: {args.rounds} × {args.seconds:g}s per system, {len(systems)} systems + raw")
            results.append(asyncio.run(_workload(sides(), label, size, inflight, args.rounds, args.seconds,
                                                 workdir / "raw")))
        tail: dict[str, Any] = {}
        if "tail" in wanted:
            tails: dict[str, Any] = {}
            for s in systems:
                if s.startswith("picchio"):
                    cfg = cfg_of(local if s == "picchio-local" else svc)
                    tails[s] = lambda n, iv, cfg=cfg: picchio_tail(cfg, n, iv, workdir)
                elif s.startswith("kafka"):
                    cl, rf, tc = {"kafka-1-pagecache": (k1, 1, ""), "kafka-1-fsync": (k1, 1, "flush.messages=1"),
                                  "kafka-3-rf3": (k3, 3, "min.insync.replicas=2")}[s]
                    topic = unique("peers-tail")
                    cl.create_topics(f"{topic}:{rf}:{tc}")
                    tails[s] = lambda n, iv, cl=cl, topic=topic: asyncio.to_thread(
                        kafka.tail_bench, cl, topic, n, int(iv * 1e3), workdir / f"{topic}.log")
                elif s.startswith("woodpecker"):
                    wside = WoodpeckerSide(wpctl, local if s == "woodpecker-local" else svc, workdir,
                                           None if s == "woodpecker-local" else seeds)
                    asyncio.run(wside.open(0, 1))
                    tails[s] = lambda n, iv, wp=wside.wp: asyncio.to_thread(woodpecker_tail, wp, n, iv)
            tail = asyncio.run(_tail(tails, args.tail_entries, args.rounds, args.tail_interval, workdir))
            for s in wp_systems:
                tail["systems"][s]["e2e_note"] = WOODPECKER_NO_E2E
    finally:
        for s in reversed(started):
            s.stop()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    out: dict[str, Any] = {
        "bench": "peers", "versions": {"woodpecker": "v0.1.35", "kafka": kafka.KAFKA_VERSION if kafka_systems else None,
                                       "java": _java_version() if kafka_systems else None},
        "seconds_per_slice": args.seconds, "rounds": args.rounds, "systems": {s: SYSTEMS[s] for s in systems},
        "loadavg": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()],
                    "cpus": os.cpu_count()},
        "wall_seconds": round(time.time() - t_start, 1), "results": results, "tail": tail}
    if args.plot:
        from logstore.cli.plot import peers_chart
        out["plot"] = str(peers_chart(out, args.plot))
    print(json.dumps(out, indent=2))
    return 0


def _java_version() -> str | None:
    try:
        p = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return p.stderr.splitlines()[0] if p.stderr else None
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())
