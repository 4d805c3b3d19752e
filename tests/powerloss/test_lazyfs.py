"""The power-loss file system itself: it keeps exactly what was synced, so
that the crash cycles on it can be believed."""
import os
import random

import pytest


def _fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_unsynced_data_and_sizes_are_dropped_synced_kept(lazyfs):
    fs = lazyfs()
    m = fs.mountpoint
    _fsync_dir(m)
    fd = os.open(m / "f", os.O_CREAT | os.O_RDWR, 0o644)
    _fsync_dir(m)
    os.write(fd, b"a" * 10_000)
    os.fdatasync(fd)
    os.write(fd, b"b" * 5_000)                      # appended, never synced
    os.pwrite(fd, b"c" * 100, 50)                   # overwrite inside the synced part, never synced
    assert os.pread(fd, 200, 0) == b"a" * 50 + b"c" * 100 + b"a" * 50, "reads see the volatile layer"
    s = fs.stats()
    assert s["dirty_files"] == 1 and s["unsynced_size_bytes"] == 5_000 and s["dirty_dirs"] == 0
    os.close(fd)
    fs.power_cut()
    fs.mount()
    assert (m / "f").read_bytes() == b"a" * 10_000


def test_truncate_then_extend_reads_zeros_until_synced(lazyfs):
    fs = lazyfs()
    m = fs.mountpoint
    fd = os.open(m / "f", os.O_CREAT | os.O_RDWR, 0o644)
    _fsync_dir(m)
    os.write(fd, b"x" * 9000)
    os.fsync(fd)
    os.ftruncate(fd, 100)
    os.ftruncate(fd, 9000)
    assert os.pread(fd, 9000, 0) == b"x" * 100 + bytes(8900)
    fs.power_cut()          # the truncate was not synced: the old content is back
    fs.mount()
    assert (m / "f").read_bytes() == b"x" * 9000
    fd = os.open(m / "f", os.O_RDWR)
    os.ftruncate(fd, 100)
    os.ftruncate(fd, 9000)
    os.fdatasync(fd)        # now it was
    os.close(fd)
    fs.power_cut()
    fs.mount()
    assert (m / "f").read_bytes() == b"x" * 100 + bytes(8900)


def test_directory_entries_need_the_directory_fsynced(lazyfs):
    fs = lazyfs()
    m = fs.mountpoint
    os.mkdir(m / "d")
    _fsync_dir(m)
    for name in ("kept", "lost"):
        fd = os.open(m / "d" / name, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, name.encode())
        os.fsync(fd)        # the file's data is synced, its name is not
        os.close(fd)
        if name == "kept":
            _fsync_dir(m / "d")
    os.rename(m / "d" / "kept", m / "d" / "renamed")  # not synced either
    os.mkdir(m / "newdir")                            # nor this
    fs.power_cut()
    fs.mount()
    assert sorted(os.listdir(m)) == ["d"]
    assert sorted(os.listdir(m / "d")) == ["kept"] and (m / "d" / "kept").read_bytes() == b"kept"
    os.rename(m / "d" / "kept", m / "d" / "renamed")
    os.unlink(m / "d" / "renamed")
    _fsync_dir(m / "d")
    fs.power_cut()
    fs.mount()
    assert os.listdir(m / "d") == []
    assert sorted(p.name for p in fs.backing.joinpath("blobs").iterdir()) == [], "unreachable inodes are collected"


def test_clean_unmount_keeps_everything(lazyfs):
    fs = lazyfs()
    m = fs.mountpoint
    os.makedirs(m / "a" / "b")
    (m / "a" / "b" / "f").write_bytes(b"hello")
    fs.unmount()
    fs.mount()
    assert (m / "a" / "b" / "f").read_bytes() == b"hello"


@pytest.mark.parametrize("seed", range(3))
def test_random_cut_keeps_synced_data_and_tears_only_unsynced(lazyfs, seed):
    fs = lazyfs()
    m = fs.mountpoint
    rng = random.Random(seed)
    synced = rng.randbytes(20_000)
    fd = os.open(m / "f", os.O_CREAT | os.O_RDWR, 0o644)
    _fsync_dir(m)
    os.write(fd, synced)
    os.fdatasync(fd)
    tail = rng.randbytes(40_000)
    os.write(fd, tail)
    os.close(fd)
    fs.power_cut("random", seed)
    fs.mount()
    got = (m / "f").read_bytes()
    assert got[:20_000] == synced and 20_000 <= len(got) <= 60_000
    for p in range(20_000 // 4096, -(-len(got) // 4096)):  # each unsynced part of a page: written or zeros
        lo, hi = max(20_000, p * 4096), min(len(got), (p + 1) * 4096)
        page, want = got[lo:hi], tail[lo - 20_000:hi - 20_000]
        assert page in (want, bytes(hi - lo)), f"page {p} is neither the write nor empty"
