"""A local disk that fills at the wrong moment — while a segment's index and
footer are written — gives a typed error, closes nothing twice, and leaves a
state the next writer recovers like a crash (issue 9, defects 3 and 4)."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of our own (we are root on these machines and in CI)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs for the disk-full test: {r.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


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
