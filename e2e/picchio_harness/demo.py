"""``make demo``: a tour of picchio on real components, each step building and
starting only what it uses, the WAL first.

    python -m picchio_harness.demo [wal] [s3] [operator]     (default: all three)

1. ``wal`` — embedded mode on local disk: etcd (the cached 3.6 build, else
   Debian's etcd-server: nothing to build), then create, append, tail,
   truncate, collect garbage, stat, and a short benchmark against the raw
   ``write`` + ``fdatasync`` limit of this disk.
2. ``s3`` — MinIO (built now if missing): the same tour on object storage,
   service mode (three LogStores, ack quorum 2, compacting into MinIO) and a
   benchmark against raw PUTs.
3. ``operator`` — the control plane (etcd 3.6, kube-apiserver,
   controller-manager, scheduler, kubectl, kwok; built now if missing) and the
   operator's tour (``demo_cluster``).  None of the kind-only pieces.

Why this order: on a fresh machine the first appended entry is seconds after
``make deps``, while MinIO and the control plane take minutes to build; each
build says what it builds and how long the last build here took.
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
from typing import Any

import yaml

import logstore
from logstore import EARLIEST
from logstore.dev.etcd import start_etcd

from . import build
from .logstores import start_logstores, wait_registered
from .s3 import start_s3

STEPS = ("wal", "s3", "operator")
#: Components each step needs built (names or groups of build.py); "wal" needs none.
NEEDS = {"wal": [], "s3": ["minio"], "operator": ["cluster", "minio"]}
T0 = time.monotonic()


class DemoError(Exception):
    """A step could not run (a build failed, a benchmark failed); the message says why."""


def _say(text: str) -> None:
    print(f"\n== [{time.monotonic() - T0:5.1f}s] {text}", flush=True)


def _missing(step: str) -> list[build.Component]:
    v = build.read_versions()
    return [c for c in build.select(NEEDS[step]) if not c.binary(v).exists()] if NEEDS[step] else []


def _plan(steps: list[str]) -> None:
    for step in steps:
        todo = _missing(step)
        what = ", ".join(f"{c.name} ({_last(c.name)})" for c in todo) if todo else "nothing"
        print(f"   {step:<9} builds {what}")


def _last(name: str) -> str:
    s = build.last_build_seconds(name)
    return f"last build here {s:.0f}s" if s else "no earlier build here"


def _ensure(step: str) -> None:
    """Build what ``step`` needs and is not built yet (with progress)."""
    todo = _missing(step)
    if not todo:
        return
    _say(f"step {step} needs {', '.join(c.name for c in todo)}: building now (Ctrl-C stops the demo here)")
    try:
        build.main([arg for c in todo for arg in ("--only", c.name)])
    except (subprocess.SubprocessError, RuntimeError, OSError) as e:
        raise DemoError(f"building {', '.join(c.name for c in todo)} failed: {e}") from e


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
                if batch == 0:
                    print(f"first entries acknowledged {time.monotonic() - T0:.1f}s after the demo started")
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


def _config(base: dict[str, Any], kind: str, work: Path) -> tuple[logstore.Config, Path]:
    cfg = logstore.Config({**base, "woodpecker.storage.type": kind, "etcd.rootPath": f"demo-{kind}"})
    path = work / f"woodpecker-{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(nested=True)))
    return cfg, path


def _bench(cfg_path: Path, kind: str, extra: list[str], work: Path) -> None:
    _say(f"benchmark: {kind} {' '.join(extra)} (2 s, raw limit measured in the same run)")
    out = subprocess.run([sys.executable, "-m", "logstore.cli.main", "--config", str(cfg_path), "bench",
                          "append", "--backend", kind, "--seconds", "2", "--dir", str(work / "bench"), *extra],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise DemoError(f"picchio bench failed: {out.stderr.strip()}")
    d = json.loads(out.stdout)
    p, r = d["picchio"], d["raw"]
    print(f"picchio {p['mb_per_s']} MB/s, {p['entries_per_s']} entries/s, ack p50 {p['ack_p50_ms']} ms "
          f"p99 {p['ack_p99_ms']} ms | raw ({r['what']}): {r['mb_per_s']} MB/s | ratio {d['ratio']}")


def _wal_steps(steps: list[str], work: Path, started: list[Any]) -> None:
    """Steps ``wal`` and ``s3`` on one etcd (whatever etcd is at hand)."""
    etcd = start_etcd(work)
    started.append(etcd)
    print(f"etcd {etcd.endpoint} ({Path(etcd.binary).name}, {etcd.binary})")
    base: dict[str, Any] = {"etcd.endpoints": [etcd.endpoint], "woodpecker.storage.rootPath": str(work / "wal"),
                            "woodpecker.client.segmentRollingPolicy.maxBlocks": 4}
    if "wal" in steps:
        cfg, path = _config(base, "local", work)
        _say(f"embedded mode on local storage (config {path})")
        asyncio.run(_tour(cfg, path))
        _bench(path, "local", ["--entry-size", "4Ki", "--concurrency", "1"], work)
        _bench(path, "local", ["--entry-size", "1Mi", "--concurrency", "16"], work)
    if "s3" not in steps:
        return
    _ensure("s3")
    s3 = start_s3(work)
    started.append(s3)
    _say(f"MinIO {s3.endpoint}: embedded mode on object storage")
    base.update({"minio.address": s3.host, "minio.port": s3.port, "minio.accessKeyID": s3.access_key,
                 "minio.secretAccessKey": s3.secret_key, "minio.bucketName": "picchio-demo",
                 "minio.createBucket": True})
    cfg, path = _config(base, "minio", work)
    asyncio.run(_tour(cfg, path))
    cfg, spath = _config(base, "service", work)
    stores = start_logstores(work / "logstores", cfg.to_dict(), 3)
    started.extend(stores)
    wait_registered(cfg.meta_prefix, etcd.endpoint, 3)
    _say(f"service mode: 3 LogStores ({', '.join(s.endpoint for s in stores)}), ack quorum 2 (config {spath})")
    asyncio.run(_tour(cfg, spath))
    _bench(path, "minio", ["--entry-size", "1Mi", "--concurrency", "16", "--block-size", "2MB"], work)


def main(argv: list[str] | None = None) -> int:
    steps = list(sys.argv[1:] if argv is None else argv) or list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="picchio-demo-"))
    _say(f"picchio demo: steps {', '.join(steps)} (work dir {work})")
    _plan(steps)
    started: list[Any] = []
    try:
        if "wal" in steps or "s3" in steps:
            _wal_steps(steps, work, started)
        for thing in reversed(started):
            thing.stop()
        started.clear()
        if "operator" in steps:
            _ensure("operator")
            from . import demo_cluster

            if demo_cluster.main() != 0:
                raise DemoError("the operator tour failed (see above)")
    except (DemoError, logstore.LogstoreError, RuntimeError, TimeoutError) as e:  # one line, no traceback
        print(f"\ndemo failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for thing in reversed(started):
            thing.stop()
        shutil.rmtree(work, ignore_errors=True)
    _say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
