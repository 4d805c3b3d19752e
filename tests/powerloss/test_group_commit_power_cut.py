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
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST

pytestmark = pytest.mark.slow

WRITER = Path(__file__).parent / "group_writer.py"
LOGS = 24


def _run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr.strip()}"
    return r.stdout.strip()


class Ext4Disk:
    """An ext4 file system in an image file on its own loop device."""

    def __init__(self, image: Path, mnt: Path) -> None:
        self.image, self.mnt, self.dev = image, mnt, ""

    def mount(self, image: Path | None = None) -> None:
        self.dev = _run("losetup", "--find", "--show", str(image or self.image))
        _run("mount", "-t", "ext4", self.dev, str(self.mnt))

    def unmount(self) -> None:
        if self.dev:
            subprocess.run(["umount", "-l", str(self.mnt)], check=False)
            subprocess.run(["losetup", "-d", self.dev], check=False)
            self.dev = ""

    def writes(self) -> tuple[int, int]:
        """(writes completed, I/Os in flight) of the loop device, from sysfs."""
        f = Path(f"/sys/block/{Path(self.dev).name}/stat").read_text().split()
        return int(f[4]), int(f[8])

    def snapshot(self, to: Path, deadline: float = 20.0) -> None:
        """Copy the image while the device is quiet, and again if it was not."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            before = self.writes()
            if before[1] == 0:
                shutil.copyfile(self.image, to)
                if self.writes() == before:
                    return
            time.sleep(0.02)
        raise AssertionError("the loop device never went quiet for a copy")


@pytest.fixture
def ext4_disk(tmp_path):
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(96 << 20)
    _run("mkfs.ext4", "-q", "-F", str(image))
    disk = Ext4Disk(image, mnt)
    disk.mount()
    yield disk
    disk.unmount()


def _payload(log: int, seq: int) -> bytes:
    sys.path.insert(0, str(WRITER.parent))
    from group_writer import payload
    return payload(log, seq)


async def test_group_commit_loses_nothing_acknowledged_at_a_power_cut(make_config, ext4_disk, tmp_path):
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(ext4_disk.mnt / "wal")})
    async with logstore.Client(cfg) as c:
        assert c.backend.group is not None, "ext4 should take the group-commit path"

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, str(WRITER), json.dumps(cfg.to_dict()), "g", str(LOGS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    lines: list[str] = []

    def pump() -> None:
        assert child.stdout is not None
        for ln in child.stdout:
            lines.append(ln)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while sum(1 for ln in lines if ln.startswith("ack")) < 3000:
            assert child.poll() is None, f"writer exited: {child.stderr.read() if child.stderr else ''}"
            assert time.monotonic() < deadline, "the writer acknowledged too little in 60 s"
            await asyncio.sleep(0.02)
        child.send_signal(signal.SIGSTOP)
        seen = list(lines)  # every ack printed before the freeze: durable before the copy begins
        await asyncio.to_thread(ext4_disk.snapshot, tmp_path / "cut.img")
    finally:
        child.kill()
        child.wait(timeout=30)
        t.join(timeout=10)
    ext4_disk.unmount()
    ext4_disk.mount(tmp_path / "cut.img")

    acked: dict[int, list[tuple[int, str]]] = {}
    groups = blocks = 0
    for ln in seen:
        p = ln.split()
        if len(p) == 4 and p[0] == "ack":
            acked.setdefault(int(p[1]), []).append((int(p[2]), p[3]))
        elif len(p) == 3 and p[0] == "group":
            groups, blocks = int(p[1]), int(p[2])
    assert groups > 0 and blocks / groups > 2, \
        f"the writer's blocks should have been synced in groups: {blocks} blocks in {groups} syncfs calls"

    async with logstore.Client(cfg) as c:
        for i, acks in sorted(acked.items()):
            log = await c.open_log(f"g{i}")
            async with await log.open_writer():  # fence and recover the crashed segment, as a new writer would
                pass
            reader = await log.open_reader(EARLIEST)
            got = []
            while True:
                try:
                    got.append(await reader.read_next(timeout=0.5))
                except TimeoutError:
                    break
            await reader.close()
            seqs = [int(m.payload.split(b":", 2)[1]) for m in got]
            assert seqs == list(range(len(seqs))), f"log g{i}: not a gap-free prefix in order: {seqs[:20]}"
            for m, s in zip(got, seqs):
                assert m.payload == _payload(i, s), f"log g{i} entry {s} is not byte-exact"
            ids = {s: str(m.id) for m, s in zip(got, seqs)}
            for s, mid in acks:
                assert s in ids, f"log g{i}: acknowledged entry {s} ({mid}) lost at the power cut"
                assert ids[s] == mid, f"log g{i}: entry {s} acknowledged as {mid}, read back as {ids[s]}"
