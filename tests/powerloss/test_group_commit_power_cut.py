"""The group commit across logs (``logstore/storage/groupsync.py``: many
segments' blocks, one ``syncfs``) under a power cut, on a real ext4.

LazyFS is FUSE, where the group commit stays off (a FUSE ``syncfs`` need not
flush), so this test brings its own disk: ext4 in an image file, loop-mounted.
A writer process keeps many logs busy; the writer is frozen (SIGSTOP), and once
the loop device has been quiet for a moment the image is copied — the disk as a
power cut would leave it: what the file system sent to the device, no page
cache.  The copy is mounted where the original was (ext4 replays its journal,
as after a crash) and every entry acknowledged before the copy began must be
there exactly once, in order, byte-exact, under its id.

Checked by hand that the test can fail: with ``syncfs`` replaced by a no-op in
the writer, the copy lacked most acknowledged entries.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import logstore
from crashcheck import read_all
from ext4disk import Ext4Disk
from logstore.dev.logstores import start_logstores, wait_registered

pytestmark = pytest.mark.slow

WRITER = Path(__file__).parent / "group_writer.py"
LOGS = 24


@pytest.fixture
def ext4_disk(tmp_path):
    disk = Ext4Disk.make(tmp_path / "disk.img", tmp_path / "disk")
    yield disk
    disk.unmount()


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


def _payload(log: int, seq: int) -> bytes:
    """The writer's payload (group_writer.py sits beside this file, on sys.path already:
    pytest puts a test's directory there; adding it again per call grew sys.path — and
    with it the PYTHONPATH later tests hand their subprocesses — past the kernel's limit)."""
    from group_writer import payload
    return payload(log, seq)


def _start_writer(cfg: logstore.Config, prefix: str, logs: int) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, str(WRITER), json.dumps(cfg.to_dict()), prefix, str(logs)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    lines: list[str] = []

    def pump() -> None:
        assert child.stdout is not None
        for ln in child.stdout:
            lines.append(ln)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return child, lines, t


async def _until_acked(child: subprocess.Popen, lines: list[str], n: int) -> None:
    deadline = time.monotonic() + 90
    while sum(1 for ln in lines if ln.startswith("ack")) < n:
        assert child.poll() is None, f"writer exited: {child.stderr.read() if child.stderr else ''}"
        assert time.monotonic() < deadline, f"the writer acknowledged fewer than {n} entries in 90 s"
        await asyncio.sleep(0.02)


def _parse(seen: list[str]) -> tuple[dict[int, list[tuple[int, str]]], int, int]:
    acked: dict[int, list[tuple[int, str]]] = {}
    groups = blocks = 0
    for ln in seen:
        p = ln.split()
        if len(p) == 4 and p[0] == "ack":
            acked.setdefault(int(p[1]), []).append((int(p[2]), p[3]))
        elif len(p) == 3 and p[0] == "group":
            groups, blocks = int(p[1]), int(p[2])
    return acked, groups, blocks


async def _check_read_back(cfg: logstore.Config, prefix: str, acked: dict[int, list[tuple[int, str]]]) -> None:
    """Each log, recovered by a new writer, holds a gap-free prefix of what was
    written, byte-exact, and every acknowledged entry under its id."""
    async with logstore.Client(cfg) as c:
        for i, acks in sorted(acked.items()):
            log = await c.open_log(f"{prefix}{i}")
            async with await log.open_writer():  # fence and recover the crashed segment, as a new writer would
                pass
            got = await read_all(log, idle=0.5)
            seqs = [int(m.payload.split(b":", 2)[1]) for m in got]
            assert seqs == list(range(len(seqs))), f"log {prefix}{i}: not a gap-free prefix in order: {seqs[:20]}"
            for m, s in zip(got, seqs):
                assert m.payload == _payload(i, s), f"log {prefix}{i} entry {s} is not byte-exact"
            ids = {s: str(m.id) for m, s in zip(got, seqs)}
            for s, mid in acks:
                assert s in ids, f"log {prefix}{i}: acknowledged entry {s} ({mid}) lost at the power cut"
                assert ids[s] == mid, f"log {prefix}{i}: entry {s} acknowledged as {mid}, read back as {ids[s]}"


async def test_group_commit_loses_nothing_acknowledged_at_a_power_cut(make_config, ext4_disk, tmp_path):
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(ext4_disk.mnt / "wal")})
    async with logstore.Client(cfg) as c:
        assert c.backend.group is not None, "ext4 should take the group-commit path"
    child, lines, t = _start_writer(cfg, "g", LOGS)
    try:
        await _until_acked(child, lines, 3000)
        child.send_signal(signal.SIGSTOP)
        seen = list(lines)  # every ack printed before the freeze: durable before the copy begins
        await asyncio.to_thread(ext4_disk.snapshot, tmp_path / "cut.img")
    finally:
        child.kill()
        child.wait(timeout=30)
        t.join(timeout=10)
    ext4_disk.unmount()
    ext4_disk.mount(tmp_path / "cut.img")
    acked, groups, blocks = _parse(seen)
    assert groups > 0 and blocks / groups > 2, \
        f"the writer's blocks should have been synced in groups: {blocks} blocks in {groups} syncfs calls"
    await _check_read_back(cfg, "g", acked)


@pytest.mark.cluster
async def test_logstores_group_commit_loses_nothing_when_all_lose_power(make_config, etcd, tmp_path):
    """Service mode, the whole ensemble at once (one power feed for a rack):
    three LogStores, each on its own ext4, group their blocks' syncs; the
    writer and all three are frozen, the three disks copied as the cut leaves
    them, and the LogStores restarted on the copies.  Every entry acknowledged
    before the cut was on two disks: it must all be there."""
    cfg = make_config("minio").with_values({"woodpecker.storage.type": "service"})
    work = tmp_path / "ls"
    disks = [Ext4Disk.make(tmp_path / f"ls{i}.img", work / f"logstore-{i}") for i in range(3)]
    stores = []
    try:
        stores = start_logstores(work, cfg.to_dict(), 3)
        wait_registered(cfg.meta_prefix, etcd.endpoint, 3)
        child, lines, t = _start_writer(cfg, "s", 16)
        try:
            await _until_acked(child, lines, 1500)
            child.send_signal(signal.SIGSTOP)
            seen = list(lines)
            syncs = [_counter(ls.http_port, "picchio_logstore_group_syncs_total") for ls in stores]
            blocks = [_counter(ls.http_port, "picchio_logstore_group_blocks_total") for ls in stores]
            for ls in stores:
                ls.pause()
            for i, d in enumerate(disks):
                await asyncio.to_thread(d.snapshot, tmp_path / f"cut{i}.img")
        finally:
            child.kill()
            child.wait(timeout=30)
            t.join(timeout=10)
        assert all(s > 0 for s in syncs) and sum(blocks) > 2 * sum(syncs), \
            f"each LogStore should have synced blocks in groups: {blocks} blocks in {syncs} syncfs calls"
        for ls, d, i in zip(stores, disks, range(3)):
            ls.kill()
            d.unmount()
            d.mount(tmp_path / f"cut{i}.img")
            ls.start()
        acked, _, _ = _parse(seen)
        assert sum(len(a) for a in acked.values()) >= 1500
        await _check_read_back(cfg, "s", acked)
    finally:
        for ls in stores:
            ls.stop()
        for d in disks:
            d.unmount()


def _counter(port: int, name: str) -> float:
    for ln in http_get(port, "/metrics")[1].splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return 0.0
