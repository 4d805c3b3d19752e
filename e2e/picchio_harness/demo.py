"""``make demo``: a short tour of picchio on real components.

Starts etcd and MinIO (built by `make components`) on loopback — and
three LogStore servers for service mode — then on each backend (local, S3,
service): creates a log, appends, follows it with a tailing reader,
truncates, collects garbage, prints the log's stats — and finishes with a short
benchmark against the raw limit of this machine.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import logstore
from logstore import EARLIEST

from .etcd import start_etcd
from .logstores import start_logstores, wait_registered
from .s3 import start_s3


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


async def _tour(cfg: logstore.Config, cfg_path: Path) -> None:
    async with logstore.Client(cfg) as client:
        log = await client.create_log("demo-orders")
        print(f"created log {log.name} (id {log.log_id}) on {cfg.storage_type}")
        reader = await log.open_reader(EARLIEST)
        tail = asyncio.create_task(_follow(reader, 300))
        async with await log.open_writer() as w:
            t0 = time.perf_counter()
            ids = []
            for batch in range(10):  # 10 groups of 30 concurrent appends: about one block each
                ids += await asyncio.gather(*(w.append(b"order-%04d" % i, {"n": str(i)})
                                              for i in range(batch * 30, batch * 30 + 30)))
            dt = time.perf_counter() - t0
            print(f"appended 300 entries (30 in flight) in {dt * 1000:.1f} ms: {ids[0]} … {ids[-1]}")
            got = await tail
            print(f"a tailing reader received all {len(got)} entries in order: {got[0]} … {got[-1]}")
        segs = await log.segments()
        print(f"{len(segs)} segments: " + ", ".join(f"{s.id}:{s.state}" for s in segs))
        mark = ids[199]
        await log.truncate(mark)
        print(f"truncated at {mark}")
        rep = await log.collect_garbage()
        print(f"garbage collected segments {rep.segments}: {rep.objects} objects, {rep.bytes} bytes")
        first = await (await log.open_reader(EARLIEST)).read_next(timeout=5)
        print(f"a reader from EARLIEST now starts at {first.id} ({first.payload.decode()})")
    print(subprocess.run([sys.executable, "-m", "logstore.cli.main", "--config", str(cfg_path), "log", "stat",
                          "demo-orders"], capture_output=True, text=True).stdout)


async def _follow(reader: logstore.LogReader, n: int) -> list[str]:
    return [str((await reader.read_next(timeout=30)).id) for _ in range(n)]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="picchio-demo-"))
    _say(f"starting etcd and S3 on loopback (work dir {work})")
    etcd = start_etcd(work)
    s3 = start_s3(work)
    stores: list = []
    print(f"etcd {etcd.endpoint} ({Path(etcd.binary).name}); S3 {s3.endpoint} ({s3.flavour})")
    try:
        base = {"etcd.endpoints": [etcd.endpoint], "woodpecker.storage.rootPath": str(work / "wal"),
                "minio.address": s3.host, "minio.port": s3.port, "minio.accessKeyID": s3.access_key,
                "minio.secretAccessKey": s3.secret_key, "minio.bucketName": "picchio-demo", "minio.createBucket": True,
                "woodpecker.client.segmentRollingPolicy.maxBlocks": 4}
        for kind in ("local", "minio", "service"):
            cfg = logstore.Config({**base, "woodpecker.storage.type": kind, "etcd.rootPath": f"demo-{kind}"})
            cfg_path = work / f"woodpecker-{kind}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg.to_dict(nested=True)))
            if kind == "service":
                stores = start_logstores(work / "logstores", cfg.to_dict(), 3)
                wait_registered(cfg.meta_prefix, etcd.endpoint, 3)
                _say(f"service mode: 3 LogStores ({', '.join(s.endpoint for s in stores)}), ack quorum 2 "
                     f"(config {cfg_path})")
            else:
                _say(f"embedded mode on {kind} storage (config {cfg_path})")
            asyncio.run(_tour(cfg, cfg_path))
        for kind, extra in (("local", ["--entry-size", "4Ki", "--concurrency", "1"]),
                            ("local", ["--entry-size", "1Mi", "--concurrency", "16"]),
                            ("minio", ["--entry-size", "1Mi", "--concurrency", "16", "--block-size", "2MB"])):
            _say(f"benchmark: {kind} {' '.join(extra)} (2 s each, raw limit measured in the same run)")
            cfg_path = work / f"woodpecker-{kind}.yaml"
            out = subprocess.run([sys.executable, "-m", "logstore.cli.main", "--config", str(cfg_path), "bench",
                                  "append", "--backend", kind, "--seconds", "2", "--dir", str(work / "bench"), *extra],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr)
                return 1
            d = json.loads(out.stdout)
            p, r = d["picchio"], d["raw"]
            print(f"picchio {p['mb_per_s']} MB/s, {p['entries_per_s']} entries/s, ack p50 {p['ack_p50_ms']} ms "
                  f"p99 {p['ack_p99_ms']} ms | raw ({r['what']}): {r['mb_per_s']} MB/s | ratio {d['ratio']}")
    finally:
        for st in stores:
            st.stop()
        s3.stop()
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    _say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
