"""A FUSE file system that loses what was not synced — a power-loss simulator
in the manner of Jepsen's LazyFS, in Python (``mfusepy`` over Debian's libfuse3).

Reads and writes go through to a backing directory, but only what a power
failure is *guaranteed* to keep reaches it:

* file data (written byte ranges, size changes, truncates) stays in a volatile
  per-file layer of dirty pages until ``fsync``/``fdatasync`` of that file;
* directory entries (create, mkdir, rename, unlink, rmdir) stay volatile until
  the directory itself is ``fsync``'d — fsyncing a file does not make its name
  durable, exactly as POSIX promises and no more.

A **power cut** (``LazyFS.power_cut()``) kills the daemon without writing
anything, and the next mount sees only the synced state.  ``mode="random"``
additionally lets a random subset of the unsynced dirty pages and a random size
between the synced and the current one reach the disk first — what kernel
writeback may have done before the power went (torn writes); ``mode="holes"``
keeps every unsynced page but each file's first (a hole where the write began).

Backing layout: ``blobs/<ino>`` holds each file's synced content;
``ns.json`` the synced namespace (directory inode → {name: inode}).  Inodes no
synced entry reaches are deleted at mount.

Run as a daemon: ``python -m picchio_harness.lazyfs BACKING MOUNTPOINT``
(foreground; ``fusermount3 -u`` unmounts it cleanly, which syncs everything).
A hidden control file ``/.lazyfs`` (not listed) reads back JSON statistics of
the volatile layer and accepts ``cut drop|holes`` / ``cut random SEED`` / ``arm write|fsync N MODE [SEED]``.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
CTL = "/.lazyfs"


@dataclass
class Node:
    ino: int
    is_dir: bool
    mode: int
    mtime: float = field(default_factory=time.time)
    children: dict = field(default_factory=dict)   # dirs: name -> Node (the volatile view)
    size: int = 0                                   # files: current size
    dsize: int = 0                                  # files: synced size (blob size)
    tmin: int = 0                                   # files: synced bytes at >= tmin are no longer visible
    pages: dict = field(default_factory=dict)       # files: page number -> bytearray(PAGE), unsynced


class State:
    """The file system's state: synced (backing dir) + volatile (memory)."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.blobs = backing / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.stats = {"fsync": 0, "fsyncdir": 0, "writes": 0, "mounts": 0}
        nsfile = backing / "ns.json"
        if nsfile.exists():
            ns = json.loads(nsfile.read_text())
        else:
            ns = {"next": 2, "dirs": {"1": {}}, "kinds": {"1": ["d", 0o755]}}
        self.next_ino = ns["next"]
        self.durable: dict[int, dict[str, int]] = {int(k): dict(v) for k, v in ns["dirs"].items()}
        self.kinds: dict[int, tuple[str, int]] = {int(k): (v[0], v[1]) for k, v in ns["kinds"].items()}
        self.nodes: dict[int, Node] = {}
        self.root = self._load(1)
        self._collect_garbage()
        self.stats["mounts"] += 1

    # -- synced state ------------------------------------------------------------------------------
    def _load(self, ino: int) -> Node:
        kind, mode = self.kinds[ino]
        if ino in self.nodes:
            return self.nodes[ino]
        if kind == "d":
            n = Node(ino, True, mode)
            self.nodes[ino] = n
            for name, child in self.durable.get(ino, {}).items():
                n.children[name] = self._load(child)
        else:
            blob = self.blobs / str(ino)
            size = blob.stat().st_size if blob.exists() else 0
            n = Node(ino, False, mode, size=size, dsize=size, tmin=size)
            self.nodes[ino] = n
        return n

    def _collect_garbage(self) -> None:
        for b in self.blobs.iterdir():
            if not b.name.isdigit() or int(b.name) not in self.nodes:
                b.unlink()
        self.durable = {i: d for i, d in self.durable.items() if i in self.nodes}
        self.kinds = {i: k for i, k in self.kinds.items() if i in self.nodes}
        self._save_ns()

    def _save_ns(self) -> None:
        tmp = self.backing / "ns.json.tmp"
        tmp.write_text(json.dumps({"next": self.next_ino, "dirs": {str(k): v for k, v in self.durable.items()},
                                   "kinds": {str(k): list(v) for k, v in self.kinds.items()}}))
        os.replace(tmp, self.backing / "ns.json")

    # -- file data -----------------------------------------------------------------------------------
    def _synced_bytes(self, n: Node, off: int, size: int) -> bytes:
        """Synced content still visible at [off, off+size), zero-filled beyond it."""
        visible = min(n.tmin, n.dsize)
        got = b""
        if off < visible:
            with open(self.blobs / str(n.ino), "rb") as f:
                f.seek(off)
                got = f.read(min(size, visible - off))
        return got + bytes(size - len(got))

    def _page(self, n: Node, p: int) -> bytes:
        if p in n.pages:
            return n.pages[p]
        return self._synced_bytes(n, p * PAGE, PAGE)

    def read(self, n: Node, size: int, off: int) -> bytes:
        end = min(off + size, n.size)
        if off >= end:
            return b""
        out = bytearray()
        p = off // PAGE
        while p * PAGE < end:
            lo, hi = max(off, p * PAGE), min(end, (p + 1) * PAGE)
            if p not in n.pages:  # a run of clean pages: one read of the blob
                q = p
                while (q + 1) * PAGE < end and (q + 1) not in n.pages:
                    q += 1
                hi = min(end, (q + 1) * PAGE)
                out += self._synced_bytes(n, lo, hi - lo)
                p = q + 1
                continue
            out += n.pages[p][lo - p * PAGE:hi - p * PAGE]
            p += 1
        return bytes(out)

    def write(self, n: Node, data: bytes, off: int) -> int:
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            p, o = divmod(off + pos, PAGE)
            page = n.pages.get(p)
            if page is None:
                page = n.pages[p] = bytearray(self._page(n, p))
            k = min(PAGE - o, len(mv) - pos)
            page[o:o + k] = mv[pos:pos + k]
            pos += k
        n.size = max(n.size, off + len(data))
        n.mtime = time.time()
        self.stats["writes"] += 1
        return len(data)

    def truncate(self, n: Node, length: int) -> None:
        if length < n.size:
            for p in [p for p in n.pages if p * PAGE >= length]:
                del n.pages[p]
            p, o = divmod(length, PAGE)
            if p in n.pages:
                n.pages[p][o:] = bytes(PAGE - o)
        n.tmin = min(n.tmin, length, n.size)
        n.size = length
        n.mtime = time.time()

    def sync_file(self, n: Node) -> None:
        self.stats["fsync"] += 1
        if n.is_dir:
            return
        blob = self.blobs / str(n.ino)
        fd = os.open(blob, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            if n.tmin < n.dsize:
                os.ftruncate(fd, n.tmin)
            os.ftruncate(fd, n.size)
            for p, page in sorted(n.pages.items()):
                if p * PAGE < n.size:
                    os.pwrite(fd, bytes(page[:n.size - p * PAGE]), p * PAGE)
        finally:
            os.close(fd)
        n.pages.clear()
        n.dsize = n.tmin = n.size

    # -- directory entries -----------------------------------------------------------------------------
    def sync_dir(self, d: Node) -> None:
        self.stats["fsyncdir"] += 1
        entries = {}
        for name, c in d.children.items():
            entries[name] = c.ino
            self.kinds[c.ino] = ("d" if c.is_dir else "f", c.mode)
            if c.is_dir:
                self.durable.setdefault(c.ino, {})
            elif not (self.blobs / str(c.ino)).exists():
                (self.blobs / str(c.ino)).touch()  # a durable name for a file never synced: empty
        self.durable[d.ino] = entries
        self.kinds[d.ino] = ("d", d.mode)
        self._save_ns()

    def new_node(self, is_dir: bool, mode: int) -> Node:
        n = Node(self.next_ino, is_dir, mode)
        self.next_ino += 1
        self.nodes[n.ino] = n
        return n

    # -- power --------------------------------------------------------------------------------------------
    def volatile_stats(self) -> dict:
        dirty_files = [n for n in self.nodes.values() if not n.is_dir and (n.pages or n.size != n.dsize or n.tmin < n.dsize)]
        dirs = [n for n in self.nodes.values() if n.is_dir
                and {k: c.ino for k, c in n.children.items()} != self.durable.get(n.ino)]
        return dict(self.stats, dirty_files=len(dirty_files), dirty_bytes=sum(len(n.pages) * PAGE for n in dirty_files),
                    unsynced_size_bytes=sum(max(0, n.size - n.dsize) for n in dirty_files),
                    dirty_dirs=len(dirs))

    def persist_holes(self) -> dict:
        """The worst torn write: every unsynced page but the first of each file
        reaches the disk, with the full size — a hole (zeros) where the write began."""
        kept = 0
        for n in list(self.nodes.values()):
            if n.is_dir or len(n.pages) < 2 or not (self.blobs / str(n.ino)).exists():
                continue
            del n.pages[min(n.pages)]
            kept += len(n.pages)
            self.sync_file(n)
        return {"kept_pages": kept}

    def persist_random(self, seed: int) -> dict:
        """Torn writes: a random subset of each file's dirty pages and a size
        between the synced and current one reach the disk (no names do)."""
        rng = random.Random(seed)
        kept = 0
        for n in list(self.nodes.values()):
            if n.is_dir or not (n.pages or n.size != n.dsize):
                continue
            if not (self.blobs / str(n.ino)).exists():
                continue  # no synced name can reach it anyway
            keep = {p: pg for p, pg in n.pages.items() if rng.random() < 0.5}
            kept += len(keep)
            lo, hi = sorted((min(n.tmin, n.dsize), n.size))
            n.pages, n.size = keep, rng.randint(lo, hi)
            self.sync_file(n)
        return {"kept_pages": kept}


def _node(st: State, path: str | None, fh: int | None = None, handles: dict | None = None) -> Node:
    if fh is not None and handles is not None and fh in handles:
        return handles[fh]
    if path is None:
        raise OSError(errno.EBADF, "no path")
    n = st.root
    for part in path.strip("/").split("/"):
        if not part:
            continue
        if not n.is_dir:
            raise OSError(errno.ENOTDIR, path)
        n = n.children.get(part)
        if n is None:
            raise OSError(errno.ENOENT, path)
    return n


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name


def operations(st: State):
    import mfusepy

    class LazyOps(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self.handles: dict[int, Node] = {}
            self.next_fh = 10
            self.ctl_out: dict[int, bytes] = {}
            self.armed: dict[str, list] = {}  # op -> [remaining, cut words]

        def init_with_config(self, conn, config) -> None:
            if config is not None:
                config.hard_remove = 1  # unlink of an open file: no .fuse_hidden renames
                config.use_ino = 1

        def _fh(self, n: Node) -> int:
            self.next_fh += 1
            self.handles[self.next_fh] = n
            return self.next_fh

        def _attrs(self, n: Node) -> dict:
            ns = int(n.mtime * 1e9)
            kind = stat.S_IFDIR if n.is_dir else stat.S_IFREG
            return {"st_mode": kind | (n.mode & 0o7777), "st_nlink": 2 if n.is_dir else 1, "st_size": n.size,
                    "st_ino": n.ino, "st_uid": os.getuid(), "st_gid": os.getgid(), "st_blocks": (n.size + 511) // 512,
                    "st_atime": ns, "st_mtime": ns, "st_ctime": ns}

        # -- control file --------------------------------------------------------------------------
        def _ctl_attrs(self) -> dict:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 1 << 20, "st_ino": 1 << 40}

        def _ctl(self, cmd: str) -> None:
            words = cmd.split()
            if words[:1] == ["cut"]:
                self._cut(words[1:])
            elif words[:1] == ["arm"]:  # arm write|fsync N drop|random SEED: cut as the Nth such op arrives
                self.armed[words[1]] = [int(words[2]), words[3:]]
            else:
                raise OSError(errno.EINVAL, cmd)

        def _cut(self, how: list) -> None:
            with st.lock:
                if how[:1] == ["random"]:
                    st.persist_random(int(how[1]))
                elif how[:1] == ["holes"]:
                    st.persist_holes()
                os._exit(0)  # power gone: nothing else reaches the disk

        def _tick(self, op: str) -> None:
            a = self.armed.get(op)
            if a is not None:
                a[0] -= 1
                if a[0] <= 0:
                    self._cut(a[1])  # before this op takes effect

        # -- attributes ----------------------------------------------------------------------------
        def getattr(self, path, fh=None):
            if path == CTL:
                return self._ctl_attrs()
            with st.lock:
                return self._attrs(_node(st, path, fh, self.handles))

        def access(self, path, amode):
            if path != CTL:
                with st.lock:
                    _node(st, path)
            return 0

        def chmod(self, path, mode):
            with st.lock:
                n = _node(st, path)
                n.mode = mode & 0o7777
            return 0

        def chown(self, path, uid, gid):
            return 0

        def utimens(self, path, times=None):
            with st.lock:
                n = _node(st, path)
                n.mtime = (times[1] / 1e9) if times else time.time()
            return 0

        def statfs(self, path):
            v = os.statvfs(st.backing)
            return {k: getattr(v, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                                                "f_ffree", "f_favail", "f_flag", "f_namemax")}

        # -- namespace -------------------------------------------------------------------------------
        def readdir(self, path, fh):
            with st.lock:
                n = _node(st, path)
                return [(".", {"st_mode": stat.S_IFDIR, "st_ino": n.ino}, 0),
                        ("..", {"st_mode": stat.S_IFDIR, "st_ino": 1}, 0),
                        *((name, {"st_mode": stat.S_IFDIR if c.is_dir else stat.S_IFREG, "st_ino": c.ino}, 0)
                          for name, c in n.children.items())]

        def opendir(self, path):
            with st.lock:
                return self._fh(_node(st, path))

        def releasedir(self, path, fh):
            self.handles.pop(fh, None)
            return 0

        def _add(self, path: str, node: Node) -> None:
            parent, name = _split(path)
            d = _node(st, parent)
            if not d.is_dir:
                raise OSError(errno.ENOTDIR, parent)
            if name in d.children:
                raise OSError(errno.EEXIST, path)
            d.children[name] = node
            d.mtime = time.time()

        def mkdir(self, path, mode):
            with st.lock:
                self._add(path, st.new_node(True, mode))
            return 0

        def create(self, path, mode, fi=None):
            with st.lock:
                n = st.new_node(False, mode)
                self._add(path, n)
                return self._fh(n)

        def unlink(self, path):
            with st.lock:
                parent, name = _split(path)
                d = _node(st, parent)
                n = d.children.get(name)
                if n is None:
                    raise OSError(errno.ENOENT, path)
                if n.is_dir:
                    raise OSError(errno.EISDIR, path)
                del d.children[name]
            return 0

        def rmdir(self, path):
            with st.lock:
                parent, name = _split(path)
                d = _node(st, parent)
                n = d.children.get(name)
                if n is None:
                    raise OSError(errno.ENOENT, path)
                if not n.is_dir:
                    raise OSError(errno.ENOTDIR, path)
                if n.children:
                    raise OSError(errno.ENOTEMPTY, path)
                del d.children[name]
            return 0

        def rename(self, old, new):
            with st.lock:
                op, oname = _split(old)
                np_, nname = _split(new)
                od, nd = _node(st, op), _node(st, np_)
                n = od.children.get(oname)
                if n is None:
                    raise OSError(errno.ENOENT, old)
                tgt = nd.children.get(nname)
                if tgt is not None and tgt.is_dir and tgt.children:
                    raise OSError(errno.ENOTEMPTY, new)
                del od.children[oname]
                nd.children[nname] = n
            return 0

        # -- files -------------------------------------------------------------------------------------
        def open(self, path, flags):
            if path == CTL:
                self.next_fh += 1
                self.ctl_out[self.next_fh] = json.dumps(st.volatile_stats()).encode()
                return self.next_fh
            with st.lock:
                n = _node(st, path)
                if flags & os.O_TRUNC:
                    st.truncate(n, 0)
                return self._fh(n)

        def read(self, path, size, offset, fh):
            if fh in self.ctl_out:
                return self.ctl_out[fh][offset:offset + size]
            with st.lock:
                return st.read(_node(st, path, fh, self.handles), size, offset)

        def write(self, path, data, offset, fh):
            if fh in self.ctl_out:
                self._ctl(bytes(data).decode())
                return len(data)
            self._tick("write")
            with st.lock:
                return st.write(_node(st, path, fh, self.handles), bytes(data), offset)

        def truncate(self, path, length, fh=None):
            with st.lock:
                st.truncate(_node(st, path, fh, self.handles), length)
            return 0

        def fsync(self, path, datasync, fh):
            if fh in self.ctl_out:
                return 0
            self._tick("fsync")
            with st.lock:
                st.sync_file(_node(st, path, fh, self.handles))
            return 0

        def fsyncdir(self, path, datasync, fh):
            with st.lock:
                st.sync_dir(_node(st, path, fh, self.handles))
            return 0

        def flush(self, path, fh):
            return 0

        def release(self, path, fh):
            self.handles.pop(fh, None)
            self.ctl_out.pop(fh, None)
            return 0

        def destroy(self, path):
            # a clean unmount is a clean shutdown: everything reaches the disk
            with st.lock:
                for n in list(st.nodes.values()):
                    if not n.is_dir:
                        st.sync_file(n)
                for n in list(st.nodes.values()):
                    if n.is_dir:
                        st.sync_dir(n)

    return LazyOps()


def serve(backing: Path, mountpoint: Path) -> None:
    import logging
    import warnings

    import mfusepy

    logging.getLogger("mfusepy").setLevel(logging.CRITICAL)  # ENOENT lookups are routine
    warnings.simplefilter("ignore", DeprecationWarning)
    st = State(backing)
    mfusepy.FUSE(operations(st), str(mountpoint), foreground=True, nothreads=True, fsname="lazyfs",
                 default_permissions=True)


# -- the test side ----------------------------------------------------------------------------------------
def _mounted(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target and "fuse" in line.split()[2] for line in f)


class LazyFS:
    """One mount of the power-loss file system, started as a daemon process."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path | None = None) -> None:
        self.backing, self.mountpoint = Path(backing), Path(mountpoint)
        self.log = log or self.backing.parent / f"{self.mountpoint.name}.lazyfs.log"
        self.proc: subprocess.Popen | None = None
        self.cuts = 0

    def mount(self, timeout: float = 20.0) -> "LazyFS":
        if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
            raise RuntimeError("FUSE is not available: needs /dev/fuse and Debian's fuse3 (`make deps` installs it)")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "picchio_harness.lazyfs", str(self.backing),
                                          str(self.mountpoint)], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while not _mounted(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"lazyfs exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"lazyfs not mounted at {self.mountpoint} after {timeout}s")
            time.sleep(0.02)
        return self

    def stats(self) -> dict:
        with open(self.mountpoint / CTL.lstrip("/"), "rb") as f:
            return json.loads(f.read())

    def _control(self, cmd: str) -> None:
        fd = os.open(self.mountpoint / CTL.lstrip("/"), os.O_WRONLY)
        try:
            os.write(fd, cmd.encode())
        finally:
            os.close(fd)

    def arm(self, op: str, n: int, mode: str = "drop", seed: int = 0) -> None:
        """Cut the power as the ``n``-th ``op`` (write|fsync) from now arrives,
        before it takes effect — a power failure at an exact point of the I/O."""
        self._control(f"arm {op} {n} {mode} {seed}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP the daemon: every I/O on the mount waits (a disk that hangs)
        until :meth:`resume` — so a test can hold a flush in progress."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if getattr(self, "paused", False) and self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def power_cut(self, mode: str = "drop", seed: int = 0) -> None:
        """Everything not synced is gone (``random``: a random part of it made
        it to the disk first).  Processes still using the mount get ENOTCONN:
        kill them before."""
        assert self.proc is not None
        try:
            self._control(f"cut {mode} {seed}")
        except OSError:
            pass  # the daemon died mid-request (or already, at an armed point): that is the cut
        self.proc.wait(10)
        self.proc = None
        self._unmount(lazy=True)
        self.cuts += 1

    def unmount(self) -> None:
        """A clean shutdown: everything is synced, then unmounted."""
        if self.proc is None:
            return
        self._unmount(lazy=False)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def _unmount(self, lazy: bool) -> None:
        if _mounted(self.mountpoint):
            r = subprocess.run(["fusermount3", "-u", *(["-z"] if lazy else []), str(self.mountpoint)],
                               capture_output=True, text=True)
            if r.returncode != 0 and _mounted(self.mountpoint):
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
