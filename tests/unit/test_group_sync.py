"""The group commit across segment files (``logstore/storage/groupsync.py``) on
real files: blocks of many segments in one sync, a fenced segment failing
alone, a segment whose lock a fencer holds waiting without holding up the
others, and the file-system check that keeps FUSE and tmpfs on fdatasync."""
from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from logstore.codec import BlockBuilder
from logstore.errors import WriterFencedError
from logstore.storage.groupsync import GroupSync, fs_type, syncfs_safe
from logstore.storage.local import LocalSegmentWriter, _Paths
from logstore.storage.segfile import block_refs


def _writer(root: Path, seg: int, group: GroupSync) -> LocalSegmentWriter:
    d = root / "1" / str(seg)
    d.mkdir(parents=True)
    w = LocalSegmentWriter(_Paths(d), 1, seg, group)
    w.create()
    return w


def _block(number: int, first: int, payload: bytes):
    b = BlockBuilder()
    b.add(payload, None, 0)
    return b.header(number, first), b.pieces


@pytest.fixture
def group(tmp_path):
    g = GroupSync(tmp_path)
    yield g
    g.close()


async def test_blocks_of_many_segments_share_syncs_and_land_in_order(tmp_path, group):
    ws = [_writer(tmp_path, s, group) for s in range(16)]
    for n in range(5):
        refs = await asyncio.gather(*(w.write_block(*_block(n, n, b"%d:%d" % (w.seg_id, n))) for w in ws))
        assert [r.number for r in refs] == [n] * 16
    assert group.blocks > group.groups > 0, "blocks of different segments should have shared a syncfs"
    for w in ws:
        rfd = os.open(w.paths.data, os.O_RDONLY)
        try:
            assert [r.number for r in block_refs(rfd)] == list(range(5))
        finally:
            os.close(rfd)
        assert w.file.pos == os.fstat(w.file.fd).st_size  # the durable end is the file's end
        await w.close()


async def test_a_fenced_segment_fails_alone(tmp_path, group):
    ws = [_writer(tmp_path, s, group) for s in range(4)]
    ws[2].paths.fence.write_text("fenced")
    got = await asyncio.gather(*(w.write_block(*_block(0, 0, b"x")) for w in ws), return_exceptions=True)
    assert isinstance(got[2], WriterFencedError)
    assert all(not isinstance(g, BaseException) for k, g in enumerate(got) if k != 2), got
    assert ws[2].file.pos == 0 and os.fstat(ws[2].file.fd).st_size == 0, "nothing may be added under a fence"
    for w in ws:
        await w.close()


async def test_a_segment_locked_by_a_fencer_waits_without_holding_up_the_others(tmp_path, group):
    a, b = _writer(tmp_path, 0, group), _writer(tmp_path, 1, group)
    fencer = os.open(a.paths.lock, os.O_RDWR)
    fcntl.flock(fencer, fcntl.LOCK_EX)
    try:
        ta = asyncio.create_task(a.write_block(*_block(0, 0, b"a")))
        ref = await asyncio.wait_for(b.write_block(*_block(0, 0, b"b")), 5)
        assert ref.number == 0
        assert not ta.done(), "a block must not be written while another process holds the segment's lock"
    finally:
        fcntl.flock(fencer, fcntl.LOCK_UN)
        os.close(fencer)
    assert (await asyncio.wait_for(ta, 5)).number == 0
    for w in (a, b):
        await w.close()


def test_fs_type_agrees_with_findmnt(tmp_path):
    want = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp_path)],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert fs_type(tmp_path) == want


def test_tmpfs_keeps_one_fdatasync_per_block(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs: {r.stderr}"
    try:
        assert fs_type(mnt / "a" / "b") == "tmpfs"
        assert not syncfs_safe(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
