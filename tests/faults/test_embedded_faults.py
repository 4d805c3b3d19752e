"""Embedded mode (local file system, S3/MinIO) under faults: SIGKILL cycles
of the writer per backend, ENOSPC on a small tmpfs, an S3 hang, and an etcd
hang while a log is opened."""
from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict

import pytest

from faultcheck import Window, check, parse_events
from faultenv import Tmpfs, wait_until
from faultknobs import CYCLES, SEED
from faultrun import REPORT, Step, Workload, describe, read_back, run_schedule, ScheduleResult
from nemesis import DiskFull, hang_etcd, hang_s3

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("backend", ["local", "minio"])
def test_sigkill_cycles(make_config, deadlines, tmp_path, backend):
    """PICCHIO_FAULT_CYCLES writer processes, each SIGKILLed at a random moment
    while appending (several in flight); each new writer recovers the last
    one's segment.  Then one read-back: every ack exactly once, in order,
    byte-exact, under its id."""
    seed = SEED
    rng = random.Random(seed)
    cfg = make_config(backend, **{"etcd.requestTimeout": f"{deadlines['etcd']}s",
                                  "minio.requestTimeoutMs": f"{deadlines['s3']}s"}).to_dict()
    name = f"kill-{backend}-{uuid.uuid4().hex[:6]}"
    killed: dict[int, float] = {}
    t0 = time.monotonic()
    for cycle in range(CYCLES):
        wl = Workload(cfg, name, cycle, tmp_path, concurrency=16).start()
        time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the crash, not a wait for a condition
        wl.kill()
        killed.update(wl.killed_at)
    rb = read_back(cfg, name, tmp_path, None, timeout=120)
    events = parse_events([tmp_path / f"acks-{name}.txt"], killed)
    base = "disk" if backend == "local" else "s3"
    v = check(events, rb, [], deadlines, base, max(killed.values()))
    kind = f"sigkill-writer[{backend}]"
    REPORT.add({kind: [Window(kind, kind, base, (), t0, None)] * CYCLES}, v, events, deadlines, seed)
    res = ScheduleResult(v, events, [], [f"{CYCLES} cycles in {time.monotonic() - t0:.1f}s"])
    assert v.acks > 0, "the writers acknowledged nothing: the cycles tested nothing"
    assert not v.problems, describe(res, seed)


@pytest.fixture
def small_tmpfs(tmp_path):
    fs = Tmpfs(tmp_path / "wal", "24M").mount()
    yield fs
    fs.unmount()


def test_enospc_local_typed_error_then_resume(make_config, deadlines, tmp_path, small_tmpfs, nemeses):
    """The local root fills up (ENOSPC at any point: block, footer, index):
    appends fail with StorageError, never another exception; when space comes
    back the same log takes appends again, and no acked entry is lost."""
    rng = random.Random(SEED)
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(small_tmpfs.path),
                                  "etcd.requestTimeout": f"{deadlines['etcd']}s",
                                  "woodpecker.client.segmentRollingPolicy.maxSize": "2M"}).to_dict()
    name = f"enospc-{uuid.uuid4().hex[:6]}"
    full = nemeses.add(DiskFull("diskfull-local", "wal", "disk", False, ("StorageError", "StorageFullError"),
                                fs=small_tmpfs, keep=0))
    wl = Workload(cfg, name, 1, tmp_path).start()
    res = run_schedule(wl, [Step([full], hold=2.0, allow=("StorageError", "StorageFullError"), expect_error=True)],
                       deadlines, "disk", rng, lambda: read_back(cfg, name, tmp_path, None, timeout=120),
                       seed=f"enospc/{SEED}")
    assert not res.verdict.problems, describe(res, SEED)


def test_s3_hang_embedded_typed_error_then_resume(lab, nemeses, deadlines, tmp_path):
    """Embedded mode on S3 (the lab's own MinIO, which is SIGSTOPped): appends
    fail with StorageError within 3 x minio.requestTimeoutMs — not minutes — and
    the same writer appends again once S3 answers."""
    rng = random.Random(SEED)
    cfg = lab.client_config(storage="minio")
    name = f"s3hang-{uuid.uuid4().hex[:6]}"
    hang = nemeses.add(hang_s3(lab))
    wl = Workload(cfg, name, 1, tmp_path, lab=lab).start()
    res = run_schedule(wl, [Step([hang], hold=3 * deadlines["s3"] + 1, allow=("StorageError",), expect_error=True)],
                       deadlines, "s3", rng, lambda: read_back(cfg, name, tmp_path, lab, timeout=120),
                       seed=f"s3hang/{SEED}")
    assert not res.verdict.problems, describe(res, SEED)


@pytest.mark.parametrize("storage", ["service", "minio"])
def test_etcd_hang_open_typed_error_then_resume(lab, nemeses, deadlines, tmp_path, storage):
    """etcd hung (SIGSTOP) while a writer opens a log: open fails with
    MetadataError within 3 x etcd.requestTimeout, and succeeds (and appends)
    once etcd answers again."""
    cfg = lab.client_config(storage=storage)
    name = f"etcdhang-{storage}-{uuid.uuid4().hex[:6]}"
    hang = nemeses.add(hang_etcd(lab))
    hang.inject()
    wl = Workload(cfg, name, 1, tmp_path, lab=lab).start(wait_open=False)
    bound = 3 * deadlines["etcd"]
    problems: list[str] = []
    try:
        wait_until(f"a failed open within {bound + 5:.0f}s of the etcd hang",
                   lambda: any(c.kind == "open" and not c.ok for c in wl.events().calls), bound + 5)
    except AssertionError as e:
        problems.append(str(e))
    hold_until = hang.t_inject + bound + 1
    while time.monotonic() < hold_until and wl.alive():
        time.sleep(0.1)
    hang.heal()
    try:
        wl.wait_acks("appends after etcd came back", 20, bound + 30, since=hang.t_heal)
    except AssertionError as e:
        problems.append(str(e))
    wl.kill()
    rb = read_back(cfg, name, tmp_path, lab, timeout=120)
    events = wl.events()
    windows = [Window(hang.kind, hang.label, "etcd", ("MetadataError",), hang.t_inject, hang.t_heal)]
    v = check(events, rb, windows, deadlines, "quorum" if storage == "service" else "s3",
              max(wl.killed_at.values(), default=time.monotonic()))
    v.extra += problems
    if not any(c.kind == "open" and c.error == "MetadataError" for c in events.errors):
        v.extra.append("no MetadataError from open_log/open_writer while etcd was hung")
    kinds = defaultdict(list)
    kinds[f"etcd-hang-open[{storage}]"] = windows
    REPORT.add(kinds, v, events, deadlines, f"etcdhang/{SEED}")
    assert not v.problems, describe(ScheduleResult(v, events, windows, []), SEED)
