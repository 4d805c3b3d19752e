"""Power cuts, not just SIGKILLs: the writer's files live on a file system
that forgets everything not fsync'd (``picchio_harness.lazyfs``), so an
acknowledgement given before the data was really synced shows up as a lost
entry — the one failure a SIGKILL cannot show, because the page cache
survives a killed process.

Each cycle: a writer process appends (several in flight) and prints every
ack; the power is cut at a random moment, or exactly as the N-th write or
fsync reaches the disk (``LazyFS.arm``), and the writer is SIGKILLed; the
volatile layer is dropped — everything, or (``random``) a random part of it
reached the disk first, torn (``holes``: all but the first page of the
unsynced write) — and the file system is mounted again.  At the end every
acknowledged entry is read back exactly once, in order, byte-exact, under its
acknowledged id, and what each writer left is a gap-free prefix of what it
wrote (an unacknowledged entry may survive only if everything before it did).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

import logstore
from crashcheck import WRITER, check_exactly_once, kill_and_drain, parse_acks, read_back, start_writer

pytestmark = pytest.mark.slow


def check_prefixes(got: list[logstore.Message], acked: list[tuple[int, int, str]]) -> None:
    """Per writer (cycle), the entries that survived are seq 0..k with no gap."""
    by_cycle: dict[int, list[int]] = defaultdict(list)
    for m in got:
        cyc, seq = (int(x) for x in m.payload.split(b":", 2)[:2])
        by_cycle[cyc].append(seq)
    for cyc, seqs in by_cycle.items():
        assert seqs == list(range(len(seqs))), f"writer {cyc}: survivors are not a gap-free prefix: {seqs[:20]}…"
    for cyc, seq, _ in acked:
        assert seq < len(by_cycle[cyc])


CUT_MODES = ["drop", "random"]


def wait_until(cond, what: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def power_cycle(fs, cfg: dict, name: str, cycle: int, rng: random.Random, mode: str) -> tuple[list, str]:
    """One writer on ``fs``; the power goes either at a random moment or
    exactly as the N-th write or fsync arrives → (acks, how the cut came)."""
    child = start_writer(cfg, name, cycle)
    how = rng.choice(["time", "write", "fsync"])
    if how == "time":
        time.sleep(rng.uniform(0.05, 0.6))  # the random moment of the cut (not a wait for a condition)
    else:
        fs.arm(how, rng.randint(1, 150), mode, seed=cycle)
        if not wait_until(lambda: not fs.alive() or child.poll() is not None, f"armed cut at the {how}", timeout=5):
            how += " never came"  # (a writer that stopped syncing); the cut comes now
    acks = parse_acks(kill_and_drain(child)[0])
    dirty = fs.stats() if fs.alive() else None  # what a timed cut is about to drop
    fs.power_cut(mode, seed=cycle)
    fs.mount()
    return acks, how if dirty is None else f"time dirty={dirty['dirty_bytes']}"


@pytest.mark.parametrize("mode", CUT_MODES)
async def test_power_cuts_lose_nothing_acknowledged_local(make_config, lazyfs, mode):
    fs = lazyfs("wal")
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(fs.mountpoint),
                                  "woodpecker.client.segmentRollingPolicy.maxSize": 60_000,
                                  "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 8_000})
    flat = cfg.to_dict()
    async with logstore.Client(cfg) as c:
        await c.create_log("powered")
    rng = random.Random(f"power-{mode}")
    acked: list[tuple[int, int, str]] = []
    cuts = []
    cycles = 12
    for cycle in range(cycles):
        got, how = await asyncio.to_thread(power_cycle, fs, flat, "powered", cycle, rng, mode)
        acked += got
        cuts.append(how)
    print("cuts:", cuts)
    assert len(acked) > cycles * 5, "the writers acknowledged a meaningful number of entries"
    assert sum(1 for h in cuts if h in ("write", "fsync")) >= cycles // 3, \
        f"most cuts should land between a write and its fsync, else the test proves little: {cuts}"
    got = await read_back(cfg, "powered", idle=1.0)
    check_exactly_once(got, acked)
    check_prefixes(got, acked)


@pytest.mark.parametrize("mode", ["drop", "holes"])
async def test_torn_unsynced_block_is_cut_on_recovery(make_config, lazyfs, mode):
    """The power fails while a block is written but not yet fdatasync'd.
    ``holes``: the disk kept all of the block but its first page (zeros there,
    data after — what writeback may leave).  Recovery must cut that tail, not
    call the log corrupt: nothing in it was ever acknowledged."""
    fs = lazyfs("wal")
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(fs.mountpoint),
                                  "woodpecker.logstore.segmentSyncPolicy.maxFlushRetries": 1})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("torn")
        w = await log.open_writer()
        acked = [await w.append(b"small %d" % i) for i in range(5)]
        fs.arm("fsync", 1, mode)
        with pytest.raises(logstore.LogstoreError) as err:
            await w.append(random.Random(7).randbytes(40_000))  # ~10 pages, the power goes before its fdatasync
        deadline = time.monotonic() + 10  # the daemon may still be exiting when the aborted call returns
        while fs.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not fs.alive(), f"the power cut came at the block's fdatasync (the append failed with {err.value!r})"
        try:
            await w.close()
        except logstore.LogstoreError:
            pass
    fs.power_cut()
    fs.mount()
    got = await read_back(cfg, "torn", idle=0.5)
    assert [m.id for m in got] == acked and [m.payload for m in got] == [b"small %d" % i for i in range(5)]


@pytest.mark.cluster  # LogStores compact into MinIO
@pytest.mark.parametrize("mode", CUT_MODES)
async def test_power_cuts_one_logstore_at_a_time(make_config, lazyfs, tmp_path, mode):
    """Service mode: each LogStore's data dir is its own power-loss file
    system.  While writer processes append (and get SIGKILLed), the power of
    one LogStore at a time is cut — at a random moment or exactly before one
    of its fdatasyncs — and it comes back on what its disk kept.  At the end
    every LogStore in turn loses its power once more (never two at once), so
    an entry acknowledged before two replicas really synced it is lost."""
    import yaml

    from picchio_harness.logstores import LogStoreProc, logstore_config, wait_registered
    from picchio_harness.procs import free_port

    base = make_config("minio", **{"woodpecker.client.segmentRollingPolicy.maxSize": 200_000})
    flat = base.to_dict()
    stores: list[tuple[LogStoreProc, object]] = []
    try:
        for i in range(3):
            fs = lazyfs(f"ls{i}")
            port, http_port = free_port(), free_port()
            cfg = logstore_config(flat, fs.mountpoint, port, http_port)
            path = tmp_path / f"logstore-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            ls = LogStoreProc(f"logstore-{i}", port, http_port, fs.mountpoint, path, tmp_path / f"logstore-{i}.log")
            stores.append((ls.start(), fs))
        wait_registered(base.meta_prefix, flat["etcd.endpoints"][0], 3)
        client = base.with_values({"woodpecker.storage.type": "service"})
        cflat = client.to_dict()
        async with logstore.Client(client) as c:
            await c.create_log("powered")

        def cut_one(i: int, rng: random.Random, cycle: int) -> str:
            ls, fs = stores[i]
            how = rng.choice(["time", "fsync"])
            if how == "fsync":
                fs.arm("fsync", rng.randint(1, 40), mode, seed=cycle)
                if not wait_until(lambda: not fs.alive(), "armed cut", timeout=5):
                    how = "fsync never came"
            ls.kill()
            fs.power_cut(mode, seed=cycle)
            fs.mount()
            ls.start()
            return f"ls{i}:{how}"

        def cycle_with_cut(cycle: int, rng: random.Random) -> tuple[list, str]:
            child = start_writer(cflat, "powered", cycle)
            time.sleep(rng.uniform(0.1, 0.8))  # the random moment of the cut
            how = cut_one(cycle % 3, rng, cycle)
            time.sleep(rng.uniform(0.1, 0.5))   # the writer goes on with the other two, then crashes too
            return parse_acks(kill_and_drain(child)[0]), how

        rng = random.Random(f"service-power-{mode}")
        acked, cuts = [], []
        for cycle in range(6):
            got, how = await asyncio.to_thread(cycle_with_cut, cycle, rng)
            acked += got
            cuts.append(how)
        def last_writer(cycle: int, want: int) -> list:
            """A writer that runs until ``want`` acks are out, then crashes:
            its active segment holds acknowledged entries on the LogStores."""
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            child = subprocess.Popen([sys.executable, str(WRITER), json.dumps(cflat), "powered", str(cycle)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
            assert child.stdout is not None
            guard = threading.Timer(60, child.kill)  # the deadline of the condition below
            guard.start()
            acks = []
            try:
                for ln in child.stdout:
                    p = ln.split()
                    if len(p) == 4 and p[0] == "ack":
                        acks.append((int(p[1]), int(p[2]), p[3]))
                    if len(acks) >= want:
                        break
            finally:
                guard.cancel()
            acks += parse_acks(kill_and_drain(child)[0])
            assert len(acks) >= want, f"the last writer acknowledged only {len(acks)} entries"
            return acks

        acked += await asyncio.to_thread(last_writer, 6, 40)
        for i in range(3):  # a rolling power loss: each LogStore once more, one at a time
            ls, fs = stores[i]
            ls.kill()
            cuts.append(f"final ls{i}: dirty {fs.stats()['dirty_bytes']}")
            fs.power_cut(mode, seed=100 + i)
            fs.mount()
            ls.start()
        print("cuts:", cuts)
        assert len(acked) > 30, f"the writers acknowledged a meaningful number of entries ({len(acked)})"
        wait_registered(base.meta_prefix, flat["etcd.endpoints"][0], 3)
        got = await read_back(client, "powered", idle=2.0)
        check_exactly_once(got, acked)
        check_prefixes(got, acked)
    finally:
        for ls, _ in stores:
            ls.stop()
