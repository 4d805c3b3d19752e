"""A local disk that fills at the wrong moment — while a segment's index and
footer are written — gives a typed error, closes nothing twice, and leaves a
state the next writer recovers like a crash (issue 9, defects 3 and 4)."""
from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST
from logstore.storage.groupsync import fs_type


@pytest.fixture(params=["tmpfs", "ext4"])
def small_disk(tmp_path, request):
    """A small file system of our own (we are root on these machines and in CI):
    a 4 MiB tmpfs (one fdatasync per block), or an 8 MiB ext4 on a loop device,
    where blocks of many segments share one syncfs (storage/groupsync.py)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    dev = ""
    if request.param == "tmpfs":
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
        assert r.returncode == 0, f"cannot mount a tmpfs for the disk-full test: {r.stderr}"
    else:
        image = tmp_path / "disk.img"
        with open(image, "wb") as f:
            f.truncate(8 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
        r = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
        assert r.returncode == 0, f"cannot attach a loop device for the disk-full test: {r.stderr}"
        dev = r.stdout.strip()
        r = subprocess.run(["mount", "-t", "ext4", dev, str(mnt)], capture_output=True, text=True)
        assert r.returncode == 0, f"cannot mount ext4 for the disk-full test: {r.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
    if dev:
        subprocess.run(["losetup", "-d", dev], check=False)


def _fill(mnt: Path) -> Path:
    """Write a filler file until the file system says ENOSPC."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


async def test_enospc_while_completing_is_typed_and_recoverable(make_config, small_disk):
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(small_disk / "wal")})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("full")
        w = await log.open_writer()
        ids = [await w.append(b"entry-%04d" % i) for i in range(150)]  # 150 blocks: the index needs > 1 page
        filler = _fill(small_disk)
        with pytest.raises(logstore.StorageFullError) as e:
            await w.close()
        assert "footer" in str(e.value)
        # defect 4: a second close must not close a descriptor the application opened meanwhile
        mine = os.open(os.devnull, os.O_RDONLY)
        try:
            await w.close()
            os.fstat(mine)  # EBADF here means the writer closed our file
        finally:
            os.close(mine)
        # still full: opening a writer fails typed (it must complete the segment first)
        with pytest.raises(logstore.StorageFullError):
            await log.open_writer()
        filler.unlink()
        async with await log.open_writer() as w2:  # recovers segment 0 like a crash
            more = await w2.append(b"after")
        assert more.segment_id == 1
        r = await log.open_reader(EARLIEST)
        got = [(await r.read_next(timeout=5)) for _ in range(151)]
        assert [m.id for m in got] == ids + [more]
        assert [m.payload for m in got[:150]] == [b"entry-%04d" % i for i in range(150)]


async def test_enospc_on_append_is_typed_and_the_same_writer_resumes(make_config, small_disk):
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(small_disk / "wal")})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("full2")
        w = await log.open_writer()
        first = await w.append(b"a" * 1000)
        filler = _fill(small_disk)
        with pytest.raises(logstore.StorageFullError):
            await w.append(b"b" * 200_000)
        filler.unlink()
        again = await w.append(b"c" * 1000)  # the same writer: a new segment, nothing lost
        await w.close()
        assert again > first
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=5) for _ in range(2)]
        assert [m.id for m in got] == [first, again] and got[1].payload == b"c" * 1000
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.5)


async def test_enospc_under_many_writers_fails_typed_and_loses_nothing(make_config, small_disk):
    """Eight logs appending at once when the disk fills: on ext4 their blocks
    share a syncfs, so one block's ENOSPC must fail that append alone, typed,
    and after space is freed every writer goes on, with every acknowledged
    entry readable in order."""
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(small_disk / "wal")})
    async with logstore.Client(cfg) as c:
        logs = [await c.create_log(f"many{i}") for i in range(8)]
        ws = [await log.open_writer() for log in logs]
        acked: list[list] = [[] for _ in ws]

        async def burst(i: int, n: int, size: int) -> list:
            got = await asyncio.gather(*(ws[i].append(b"%d:" % i + b"x" * size) for _ in range(n)),
                                       return_exceptions=True)
            for g in got:
                if isinstance(g, BaseException):
                    assert isinstance(g, logstore.StorageFullError), repr(g)
                else:
                    acked[i].append(g)
            return got

        await asyncio.gather(*(burst(i, 4, 1000) for i in range(8)))
        filler = _fill(small_disk)
        failed = await asyncio.gather(*(burst(i, 4, 20_000) for i in range(8)))
        assert any(isinstance(g, logstore.StorageFullError) for got in failed for g in got), \
            "a full disk should fail some appends"
        filler.unlink()
        await asyncio.gather(*(burst(i, 4, 1000) for i in range(8)))
        if fs_type(small_disk) == "ext4":
            g = c.backend.group
            assert g is not None and g.blocks > g.groups, "on ext4 the blocks should have been synced in groups"
        for w in ws:
            await w.close()
        for i, log in enumerate(logs):
            r = await log.open_reader(EARLIEST)
            got = []
            while True:
                try:
                    got.append(await r.read_next(timeout=0.5))
                except TimeoutError:
                    break
            await r.close()
            assert [m.id for m in got] == sorted(acked[i]), f"log many{i}: acknowledged entries lost or reordered"
            assert all(m.payload.startswith(b"%d:" % i) for m in got)


@pytest.mark.parametrize("small_disk", ["ext4"], indirect=True)
async def test_no_inodes_for_the_next_segment_is_typed_and_the_same_writer_resumes(make_config, small_disk):
    """The file system runs out of inodes (not bytes) as a segment rolls: the
    new segment's entry is in etcd but its files cannot be made.  The append
    fails typed; once inodes are free the same writer finishes that segment
    and goes on — it must not take its own half-made segment for another
    writer's and stop as fenced."""
    cfg = make_config("local", **{"woodpecker.storage.rootPath": str(small_disk / "wal"),
                                  "woodpecker.client.segmentRollingPolicy.maxBlocks": 3})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("noinodes")
        w = await log.open_writer()
        acked = [await w.append(b"before-%d" % i) for i in range(3)]  # segment 0 is full: the next append rolls
        filler = small_disk / "inodes"
        filler.mkdir()
        n = 0
        while True:
            try:
                os.close(os.open(filler / str(n), os.O_CREAT | os.O_WRONLY, 0o644))
                n += 1
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        with pytest.raises(logstore.StorageFullError):
            await w.append(b"while-full")
        for i in range(n):
            os.unlink(filler / str(i))
        acked += [await w.append(b"after-%d" % i) for i in range(3)]
        await w.close()
        assert [m.segment_id for m in acked] == [0, 0, 0, 1, 1, 1]
        r = await log.open_reader(EARLIEST)
        got = [await r.read_next(timeout=5) for _ in range(6)]
        assert [m.id for m in got] == acked
        assert [m.payload for m in got] == [b"before-%d" % i for i in range(3)] + [b"after-%d" % i for i in range(3)]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.5)
