"""Service mode (3 LogStores, ack quorum 2) under faults, on the fault lab
(own netns/veth topology, etcd, S3, toxiproxy): randomized schedules within
what the quorum tolerates, and explicit schedules beyond it."""
from __future__ import annotations

import random
import uuid

import pytest

from faultknobs import RUNS, SEED
from faultrun import Step, Workload, describe, read_back, run_schedule
from nemesis import diskfull_logstore, latency, partition_logstore, pause_logstore, wipe_logstore
from schedules import random_schedule

pytestmark = pytest.mark.faults


def _workload(lab, tmp_path, name: str, run: int = 1, **extra) -> Workload:
    return Workload(lab.client_config(**extra), name, run, tmp_path, lab=lab).start()


def _reader(lab, cfg, name, tmp_path, deadlines):
    # recovery is an open: bounded like one, plus the idle time that ends the read
    return lambda: read_back(cfg, name, tmp_path, lab, timeout=3 * max(deadlines.values()) + 60)


@pytest.mark.parametrize("index", range(RUNS))
def test_random_schedule(lab, nemeses, deadlines, tmp_path, index):
    """One randomized schedule: faults one LogStore at a time (plus S3/etcd
    hangs), heals each and waits for writing to resume, then crashes the
    writer, recovers and checks every ack.  Replay with PICCHIO_FAULT_SEED."""
    seed = SEED + index
    rng = random.Random(seed)
    name = f"rnd-{seed}-{uuid.uuid4().hex[:6]}"
    steps = random_schedule(lab, nemeses, rng, deadlines)
    wl = _workload(lab, tmp_path, name)
    res = run_schedule(wl, steps, deadlines, "quorum", rng, _reader(lab, wl.cfg, name, tmp_path, deadlines),
                       seed=seed, diagnose=lambda: f"registered in etcd now: {lab.registered()}")
    assert not res.verdict.problems, describe(res, seed)


def _beyond_quorum(lab, nemeses, deadlines, tmp_path, make, label, allow=("QuorumUnavailableError",)):
    rng = random.Random(SEED)
    a, b = rng.sample(lab.logstores, 2)
    name = f"{label}-{uuid.uuid4().hex[:6]}"
    step = Step([nemeses.add(make(a)), nemeses.add(make(b))], hold=3 * deadlines["quorum"] + 1,
                allow=allow, expect_error=True)
    wl = _workload(lab, tmp_path, name)
    res = run_schedule(wl, [step], deadlines, "quorum", rng, _reader(lab, wl.cfg, name, tmp_path, deadlines),
                       seed=f"{label}/{SEED}")
    assert not res.verdict.problems, describe(res, SEED)


def test_two_logstores_paused_typed_error_then_resume(lab, nemeses, deadlines, tmp_path):
    """Beyond the quorum: two of three LogStores stopped.  Appends fail with
    QuorumUnavailableError within 3 x quorum.requestTimeout (never a hang),
    the same writer appends again once they are back, nothing acked is lost."""
    _beyond_quorum(lab, nemeses, deadlines, tmp_path, pause_logstore, "pause2")


def test_two_logstores_partitioned_typed_error_then_resume(lab, nemeses, deadlines, tmp_path):
    """Beyond the quorum by network partition (veth down) of two LogStores."""
    _beyond_quorum(lab, nemeses, deadlines, tmp_path, lambda ls: partition_logstore(lab, ls), "part2")


def test_two_logstores_disk_full_typed_error_then_resume(lab, nemeses, deadlines, tmp_path):
    """Beyond the quorum by ENOSPC: the data dirs (small tmpfs) of two
    LogStores filled up.  They push back (StorageFullError) or the quorum is
    unavailable — typed, within the bound — and writing resumes once space is
    back."""
    _beyond_quorum(lab, nemeses, deadlines, tmp_path, diskfull_logstore, "full2",
                   allow=("QuorumUnavailableError", "StorageFullError", "StorageError"))


def test_lagging_replica_then_wiped_replica_after_writer_crash(lab, nemeses, deadlines, tmp_path):
    """Issue 9 defect 1, made deterministic: replica A misses deadlines (paused
    longer than quorum.requestTimeout) while the writer goes on with B and C;
    the writer crashes; B comes back on an empty data dir; C answers slowly
    (latency below the deadline), so the first two recovery replies come from
    A and B.  Recovery must not complete the segment at A's old position: every
    acked entry is read back, or recovery fails loudly (typed error)."""
    rng = random.Random(SEED)
    a, b, c = rng.sample(lab.logstores, 3)
    name = f"lagwipe-{uuid.uuid4().hex[:6]}"
    lag = nemeses.add(pause_logstore(a))
    wl = _workload(lab, tmp_path, name)
    wipe = nemeses.add(wipe_logstore(b))
    slow = nemeses.add(latency(lab, c, int(deadlines["quorum"] * 1000 * 0.6)))

    def crash_wipe_then_read():
        wipe.inject()
        wipe.heal()  # B restarted, empty
        slow.inject()
        try:
            rb = read_back(wl.cfg, name, tmp_path, lab, timeout=3 * max(deadlines.values()) + 60)
        finally:
            slow.heal()
        if rb.error:  # failing loudly is allowed (a typed error) ...
            loud.append(rb.error)
            rb = read_back(wl.cfg, name, tmp_path, lab, timeout=3 * max(deadlines.values()) + 60)
        return rb  # ... but what is read in the end must hold every ack

    loud: list[str] = []
    res = run_schedule(wl, [Step([lag], hold=2 * deadlines["quorum"] + 1)], deadlines, "quorum", rng,
                       crash_wipe_then_read, warmup_acks=30, resume_acks=300, seed=f"lagwipe/{SEED}")
    typed = ("QuorumUnavailableError", "StorageError", "MetadataError", "CorruptionError")
    for err in loud:
        if not any(t in err for t in typed):
            res.verdict.extra.append(f"first recovery failed without a typed error: {err}")
    assert not res.verdict.problems, describe(res, SEED) + f"\nfirst recovery: {loud}"
