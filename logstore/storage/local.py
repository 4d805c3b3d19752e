"""Local / shared file-system backend: ``{storage.rootPath}/{minio.rootPath}/{logId}/{segId}/data.log``.

Durability: a block is acknowledged after ``writev`` + ``fdatasync`` of
``data.log``; the file's directory entry is fsync'd when the segment is
created.  Fencing: ``write.fence`` beside ``data.log``.  Every writer operation
holds an exclusive ``flock`` on ``write.lock`` for its duration and checks the
fence under it, and the fencer takes the same lock after creating the fence —
so once fence-and-recover returns, no old writer can add a byte.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..codec import (BLOCK_HEADER_RECORD_SIZE, FOOTER_RECORD_SIZE, HEADER_RECORD_SIZE, INDEX_RECORD_SIZE,
                     BlockHeader, DecodedBlock, Footer, RecordType, decode_block, decode_index,
                     parse_footer, split_header)
from ..config import Config
from ..errors import CorruptionError, StorageError, StorageFullError, WriterFencedError
from .base import Backend, BlockRef, Recovered, ScanResult, SegmentWriter
from .groupsync import GroupSync, Write, syncfs_safe
from .segfile import (SegmentFile, check_index, claimed_length, fsync_dir, makedirs_durable, read_block,
                      read_layout, valid_block_after, walk_headers)

_LOCK_WAIT = 30.0


class _Lock:
    """Exclusive flock on ``write.lock``, taken for one operation at a time."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)

    def acquire(self, timeout: float = _LOCK_WAIT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageError(f"write.lock held for over {timeout}s by another process") from None
                time.sleep(0.0005)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Idempotent: a second close must never hit a descriptor number that
        the process has meanwhile reused for something else."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def storage_error(what: str, e: OSError) -> StorageError:
    """A disk error as the typed error users see (ENOSPC/EDQUOT: StorageFullError)."""
    kind = StorageFullError if e.errno in (errno.ENOSPC, errno.EDQUOT) else StorageError
    return kind(f"{what}: {e}")


@dataclass
class _Paths:
    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data.log"

    @property
    def lock(self) -> Path:
        return self.dir / "write.lock"

    @property
    def fence(self) -> Path:
        return self.dir / "write.fence"


def _announce(fd: int) -> None:
    """Set data.log's times after a block or footer is synced: the IN_ATTRIB
    this raises is what wakes readers in other processes (tailpush.py).  Not
    the write's own IN_MODIFY: that comes before the fdatasync, and a reader
    woken by it would read entries not yet durable.  A few µs; a failure only
    leaves readers to their poll."""
    try:
        os.utime(fd)
    except OSError:
        pass


class LocalSegmentWriter(SegmentWriter):
    def __init__(self, paths: _Paths, log_id: int, seg_id: int, group: GroupSync | None = None) -> None:
        self.paths, self.log_id, self.seg_id = paths, log_id, seg_id
        self.lock = _Lock(paths.lock)
        self.file = SegmentFile(paths.data)
        self.group = group
        self._fence = str(paths.fence)  # checked before every block: no Path objects on that path

    def _check_fence(self) -> None:
        if os.path.exists(self._fence):
            raise WriterFencedError(f"segment {self.log_id}/{self.seg_id} was fenced by another writer")
        if self.file.fd >= 0 and os.fstat(self.file.fd).st_nlink == 0:  # the log was deleted under us
            raise WriterFencedError(f"segment {self.log_id}/{self.seg_id} was deleted")

    def create(self) -> None:
        self.lock.acquire()
        try:
            self._check_fence()
            self.file.create()
        finally:
            self.lock.release()

    @property
    def parallel(self) -> int:
        return 1

    def _write_block(self, header: BlockHeader, pieces: list) -> BlockRef:
        self.lock.acquire()
        try:
            self._check_fence()
            ref = self.file.append_block(header, pieces)
            _announce(self.file.fd)
            return ref
        finally:
            self.lock.release()

    def _group_write(self, header: BlockHeader, pieces: list) -> Write:
        """This block as one write of the group commit (groupsync.py)."""
        f = self.file

        def done(start: int) -> BlockRef:
            ref = f.block_written(header, start)
            _announce(f.fd)
            return ref

        return Write(f.fd, self.lock.fd, header.block_length, self._check_fence,
                     lambda: f.write_block(header, pieces), f.cut, done)

    def start_block(self, header: BlockHeader, pieces: list) -> asyncio.Future | None:
        return None if self.group is None else self.group.submit_nowait(self._group_write(header, pieces))

    def block_error(self, header: BlockHeader, error: BaseException) -> BaseException:
        if isinstance(error, OSError):
            return storage_error(f"segment {self.log_id}/{self.seg_id}: writing block {header.block_number}", error)
        return error

    async def write_block(self, header: BlockHeader, pieces: list, entries: list | None = None,
                          times: list | None = None) -> BlockRef:
        try:
            if self.group is not None:
                return await self.group.submit(self._group_write(header, pieces))
            return await asyncio.to_thread(self._write_block, header, pieces)
        except OSError as e:
            raise self.block_error(header, e) from e

    def _finalize(self, blocks: list[BlockRef], lac: int) -> int:
        self.lock.acquire()
        try:
            self._check_fence()
            size = self.file.write_footer(blocks, lac)[1]
            _announce(self.file.fd)
            return size
        finally:
            self.lock.release()

    async def finalize(self, blocks: list[BlockRef], lac: int) -> int:
        try:
            return await asyncio.to_thread(self._finalize, blocks, lac)
        except OSError as e:
            raise storage_error(f"segment {self.log_id}/{self.seg_id}: writing the footer", e) from e

    async def close(self) -> None:
        self.file.close()
        self.lock.close()


@dataclass
class LocalCursor:
    offset: int = 0  # next byte to decode (0 = segment header not read yet)
    index: list | None = None  # IndexRecords once a footer is known
    next_index: int = 0
    next_entry: int = 0  # entries below this are skipped (a reader starting mid-segment)
    lac: int = -1
    suspect_since: float | None = field(default=None, repr=False)


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, config: Config) -> None:
        self.root = Path(config["woodpecker.storage.rootPath"]) / config["minio.rootPath"]
        self._group_mode = config["woodpecker.logstore.segmentSyncPolicy.groupSync"]
        #: the group commit shared by this backend's writers; None: one fdatasync per block
        self.group: GroupSync | None = None

    def _paths(self, log_id: int, seg_id: int) -> _Paths:
        return _Paths(self.root / str(log_id) / str(seg_id))

    async def start(self) -> None:
        try:
            await asyncio.to_thread(makedirs_durable, self.root)
            if self._group_mode == "auto" and self.group is None and await asyncio.to_thread(syncfs_safe, self.root):
                self.group = GroupSync(self.root)
        except OSError as e:
            raise StorageError(f"cannot create storage root {self.root}: {e}") from e

    async def close(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            await asyncio.to_thread(group.close)

    async def create_segment(self, log_id: int, seg_id: int, quorum=None) -> SegmentWriter:
        paths = self._paths(log_id, seg_id)

        def make() -> LocalSegmentWriter:
            makedirs_durable(paths.dir)
            w = LocalSegmentWriter(paths, log_id, seg_id, self.group)
            try:
                w.create()
            except BaseException:
                w.lock.close()
                raise
            return w

        try:
            return await asyncio.to_thread(make)
        except OSError as e:
            raise storage_error(f"segment {log_id}/{seg_id}: creating {paths.data}", e) from e

    # -- fence and recover ---------------------------------------------------
    def _recover(self, log_id: int, seg_id: int) -> Recovered:
        paths = self._paths(log_id, seg_id)
        makedirs_durable(paths.dir)
        if not paths.fence.exists():
            with open(paths.fence, "w") as f:
                f.write(f"logId={log_id}\nsegmentId={seg_id}\npid={os.getpid()}\n"
                        f"timestamp={int(time.time())}\nreason=fence\nhost={socket.gethostname()}\n")
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(paths.dir)
        lock = _Lock(paths.lock)
        try:
            lock.acquire()
            try:
                return self._recover_locked(paths, log_id, seg_id)
            finally:
                lock.release()
        finally:
            lock.close()

    def _recover_locked(self, paths: _Paths, log_id: int, seg_id: int) -> Recovered:
        f = SegmentFile(paths.data)
        f.fd = os.open(paths.data, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            footer, blocks, end = read_layout(f.fd, log_id, seg_id)
            last = blocks[-1].last_entry_id if blocks else -1
            if footer is not None:
                return Recovered(blocks, footer.lac if footer.has_lac else last, end, True)
            # drop the torn tail (a crash mid-write), then complete the segment
            os.ftruncate(f.fd, end)
            f.pos = end
            _, size = f.write_footer(blocks, last)
            fsync_dir(paths.dir)
            return Recovered(blocks, last, size, False)
        finally:
            f.close()

    async def fence_and_recover(self, log_id: int, seg_id: int, quorum=None) -> Recovered:
        try:
            return await asyncio.to_thread(self._recover, log_id, seg_id)
        except OSError as e:
            raise storage_error(f"segment {log_id}/{seg_id}: fence and recover", e) from e

    def _last_entry(self, log_id: int, seg_id: int) -> int:
        """Walk block headers (37 bytes each) without reading data; trust the footer if present."""
        try:
            fd = os.open(self._paths(log_id, seg_id).data, os.O_RDONLY)
        except FileNotFoundError:
            return -1
        try:
            size = os.fstat(fd).st_size
            footer = parse_footer(os.pread(fd, FOOTER_RECORD_SIZE, max(0, size - FOOTER_RECORD_SIZE)))
            if footer is not None and footer.has_lac:
                return footer.lac
            blocks = walk_headers(fd, size)
            return blocks[-1].last_entry_id if blocks else -1
        finally:
            os.close(fd)

    async def last_entry(self, log_id: int, seg_id: int, quorum=None) -> int:
        return await asyncio.to_thread(self._last_entry, log_id, seg_id)

    # -- reading ---------------------------------------------------------------
    def _scan(self, log_id: int, seg_id: int, cur: LocalCursor | None, max_bytes: int,
              sealed_last: int | None = None) -> ScanResult:
        cur = cur or LocalCursor()
        path = self._paths(log_id, seg_id).data
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if sealed_last is not None:
                raise CorruptionError(f"segment is completed in metadata but {path} is missing",
                                      log=str(log_id), segment=seg_id) from None
            return ScanResult([], cur, False)
        try:
            size = os.fstat(fd).st_size
            if cur.offset == 0:
                if size < HEADER_RECORD_SIZE:
                    if sealed_last is not None:
                        raise CorruptionError(f"segment is completed but data.log has only {size} bytes",
                                              log=str(log_id), segment=seg_id, block="header")
                    return ScanResult([], cur, False)
                split_header(os.pread(fd, HEADER_RECORD_SIZE, 0))
                cur.offset = HEADER_RECORD_SIZE
                tail = os.pread(fd, FOOTER_RECORD_SIZE, max(0, size - FOOTER_RECORD_SIZE))
                footer = parse_footer(tail)
                if footer is not None:
                    self._load_index(fd, size, footer, cur, log_id, seg_id)
            if cur.index is None and sealed_last is not None:
                # metadata says Completed, and completion writes the footer first:
                # a missing footer is a lost or torn tail, never the end of the log
                tail = os.pread(fd, FOOTER_RECORD_SIZE, max(0, size - FOOTER_RECORD_SIZE))
                footer = parse_footer(tail)
                if footer is None:
                    raise CorruptionError(f"segment is completed (last entry {sealed_last}) but data.log "
                                          f"({size} bytes) has no valid footer: its tail is lost or damaged",
                                          log=str(log_id), segment=seg_id, block="footer")
                self._load_index(fd, size, footer, cur, log_id, seg_id)
            if cur.index is not None:
                if sealed_last is not None and cur.lac < sealed_last:
                    raise CorruptionError(f"data.log ends at entry {cur.lac} but the segment's metadata says "
                                          f"{sealed_last}", log=str(log_id), segment=seg_id, block="footer")
                return self._scan_indexed(fd, cur, max_bytes, log_id, seg_id)
            return self._scan_sequential(fd, size, cur, max_bytes, log_id, seg_id)
        finally:
            os.close(fd)

    @staticmethod
    def _load_index(fd: int, size: int, footer: Footer, cur: LocalCursor, log_id: int, seg_id: int) -> None:
        idx_off = size - footer.record_size - footer.total_blocks * INDEX_RECORD_SIZE
        if idx_off < HEADER_RECORD_SIZE:
            raise CorruptionError(f"footer claims {footer.total_blocks} blocks, more than a {size}-byte file holds",
                                  log=str(log_id), segment=seg_id, block="index")
        try:
            cur.index = decode_index(os.pread(fd, footer.total_blocks * INDEX_RECORD_SIZE, idx_off),
                                     footer.total_blocks)
        except CorruptionError as e:
            raise CorruptionError(f"damaged index: {e}", log=str(log_id), segment=seg_id, block="index") from e
        check_index([BlockRef(i.block_number, i.first_entry_id, i.last_entry_id, i.block_size, i.start_offset)
                     for i in cur.index], idx_off, log_id, seg_id)
        cur.lac = footer.lac if footer.has_lac else (cur.index[-1].last_entry_id if cur.index else -1)
        # skip blocks already consumed sequentially or below the reader's start
        cur.next_index = sum(1 for i in cur.index
                             if i.start_offset < cur.offset and cur.offset > HEADER_RECORD_SIZE
                             or i.last_entry_id < cur.next_entry)

    def _scan_indexed(self, fd: int, cur: LocalCursor, max_bytes: int, log_id: int, seg_id: int) -> ScanResult:
        assert cur.index is not None
        out: list[DecodedBlock] = []
        used = 0
        while cur.next_index < len(cur.index) and (not out or used < max_bytes):
            ir = cur.index[cur.next_index]
            out.append(read_block(fd, ir.start_offset, ir.block_size, log_id, seg_id, ir.block_number))
            used += ir.block_size
            cur.next_index += 1
        return ScanResult(out, cur, cur.next_index >= len(cur.index), cur.lac)

    def _scan_sequential(self, fd: int, size: int, cur: LocalCursor, max_bytes: int, log_id: int, seg_id: int) -> ScanResult:
        out: list[DecodedBlock] = []
        used = 0
        while cur.offset < size and (not out or used < max_bytes):
            head = os.pread(fd, BLOCK_HEADER_RECORD_SIZE, cur.offset)
            if len(head) >= 5 and head[4] == RecordType.INDEX:
                # the writer finalized: switch to the index for anything left
                tail = os.pread(fd, FOOTER_RECORD_SIZE, max(0, size - FOOTER_RECORD_SIZE))
                footer = parse_footer(tail)
                if footer is None:
                    break  # footer still being written
                self._load_index(fd, size, footer, cur, log_id, seg_id)
                res = self._scan_indexed(fd, cur, max_bytes - used, log_id, seg_id)
                return ScanResult(out + res.blocks, cur, res.complete, cur.lac)
            want = claimed_length(head, 0)
            if want is None or cur.offset + want > size:
                break  # block still being written
            raw = os.pread(fd, want, cur.offset)
            try:
                b = decode_block(raw)
            except CorruptionError as e:
                # fully present yet wrong: re-read once (a concurrent writer may
                # have been mid-copy); then it is corruption if intact blocks
                # follow, else the torn last write of a crashed writer (never
                # acknowledged: the writer that recovers the segment cuts it)
                if cur.suspect_since is None:
                    cur.suspect_since = time.monotonic()
                    break
                if time.monotonic() - cur.suspect_since < 0.05:
                    break
                rest = os.pread(fd, size - cur.offset, cur.offset)
                if not valid_block_after(rest, 1, len(rest)):
                    break
                raise CorruptionError(str(e), log=str(log_id), segment=seg_id, block=len(out)) from e
            cur.suspect_since = None
            if b is None:
                break
            out.append(b)
            used += len(raw)
            cur.offset += len(raw)
        return ScanResult(out, cur, False, -1)

    async def scan(self, log_id: int, seg_id: int, cursor, max_bytes: int, quorum=None,
                   sealed_last=None) -> ScanResult:
        return await asyncio.to_thread(self._scan, log_id, seg_id, cursor, max_bytes, sealed_last)

    async def compact(self, log_id: int, seg_id: int, target_bytes: int, quorum=None,
                      last_entry=None) -> int | None:
        return None  # Woodpecker keeps local segments as they are

    # -- deletion --------------------------------------------------------------
    @staticmethod
    def _size(path: Path) -> tuple[int, int]:
        files = nbytes = 0
        for dirpath, _, names in os.walk(path):
            for n in names:
                try:
                    nbytes += os.path.getsize(os.path.join(dirpath, n))
                    files += 1
                except OSError:
                    pass
        return files, nbytes

    @classmethod
    def _rm(cls, path: Path) -> tuple[int, int]:
        if not path.exists():
            return 0, 0
        files, nbytes = cls._size(path)
        shutil.rmtree(path, ignore_errors=False, onerror=_ignore_missing)
        if path.parent.exists():
            fsync_dir(path.parent)
        return files, nbytes

    async def delete_segment(self, log_id: int, seg_id: int, quorum=None) -> tuple[int, int]:
        return await asyncio.to_thread(self._rm, self._paths(log_id, seg_id).dir)

    async def segment_size(self, log_id: int, seg_id: int) -> tuple[int, int]:
        return await asyncio.to_thread(self._size, self._paths(log_id, seg_id).dir)

    async def delete_log(self, log_id: int) -> tuple[int, int]:
        return await asyncio.to_thread(self._rm, self.root / str(log_id))

    async def segment_ids(self, log_id: int) -> list[int]:
        d = self.root / str(log_id)
        try:
            return sorted(int(n) for n in os.listdir(d) if n.isdigit())
        except FileNotFoundError:
            return []


def _ignore_missing(func, path, exc_info) -> None:
    if not (isinstance(exc_info[1], OSError) and exc_info[1].errno == errno.ENOENT):
        raise exc_info[1]
