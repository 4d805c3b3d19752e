"""One segment staged on a LogStore's local disk:
``{storage.rootPath}/{bucket}/{root_path}/{logId}/{segId}/data.log``.

Entries arrive with their ids (the client assigns them); they must be
contiguous.  Requests that arrive out of order wait (boundedly) for the gap
to fill; an entry already held is an idempotent retry.  Everything accepted
while a sync runs goes into the next block (group commit); an append is
answered only after its block is fdatasync'd.  Readers see entries up to the
LAC the writer pushed (or the footer's, once completed).  ``write.fence``
makes fencing survive a restart; ``data.compacted`` marks a segment whose data
is safely in object storage (its local file is then dropped).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..codec import BlockBuilder, BlockHeader, DecodedBlock, Footer, merge_blocks
from ..errors import LogstoreError
from ..storage.base import BlockRef
from ..storage.groupsync import GroupSync, Write
from ..storage.segfile import SegmentFile, fsync_dir, makedirs_durable, read_block, read_layout
from ..rpc import Code

_GAP_WAIT = 5.0


class StagedError(LogstoreError):
    def __init__(self, code: int, message: str, retriable: bool = False) -> None:
        super().__init__(message)
        self.code, self.retriable = code, retriable


@dataclass
class _Pending:
    first: int
    values: list[bytes]
    future: asyncio.Future


def _no_check() -> None:
    """Staged segments have no lock file or fence check under it: the LogStore is
    their only writer and fences them itself (``fence`` below)."""


class StagedSegment:
    def __init__(self, directory: Path, log_id: int, seg_id: int, sync_wait: float) -> None:
        self.dir, self.log_id, self.seg_id, self.sync_wait = directory, log_id, seg_id, sync_wait
        self.path = directory / "data.log"
        self.blocks: list[BlockRef] = []
        self.last_entry = -1      # last durable entry
        self.next_expected = 0    # next id to accept (durable + buffered)
        self.lac = -1             # what readers may see
        self.writer_lac = -1      # the LAC the writer completed the segment with (≥ lac on a lagging replica)
        self._appending = 0       # append calls accepted and not yet answered
        self.fenced = False
        self.footer: Footer | None = None
        # told (segment, staged bytes or 0 once compacted) whenever those change, from whichever
        # thread changed them: the LogStore keeps its total in O(1) per append (service.py) instead
        # of summing every segment it holds on each append's disk check
        self.listener: Callable[["StagedSegment", int], None] | None = None
        self._compacted = False
        self._bytes = 0
        self.file = SegmentFile(self.path)
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()  # serializes fence/complete/compact against flushes
        #: the LogStore's group commit (storage/groupsync.py): blocks of many segments, one syncfs
        self.group: GroupSync | None = None

    @property
    def bytes(self) -> int:
        """Bytes of data.log (0 before it exists)."""
        return self._bytes

    @bytes.setter
    def bytes(self, v: int) -> None:
        self._bytes = v
        if self.listener is not None:
            self.listener(self, 0 if self._compacted else v)

    @property
    def compacted(self) -> bool:
        """data.compacted is there: the data is in object storage, not staged here."""
        return self._compacted

    @compacted.setter
    def compacted(self, v: bool) -> None:
        self._compacted = v
        if self.listener is not None:
            self.listener(self, 0 if v else self._bytes)

    # -- loading -------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, log_id: int, seg_id: int, sync_wait: float,
             group: GroupSync | None = None) -> "StagedSegment":
        s = cls(directory, log_id, seg_id, sync_wait)
        s.group = group
        s.fenced = (directory / "write.fence").exists()
        s.compacted = (directory / "data.compacted").exists()
        if s.path.exists():
            s._recover()
        return s

    def _recover(self) -> None:
        fd = os.open(self.path, os.O_RDWR)
        try:
            self.footer, self.blocks, end = read_layout(fd, self.log_id, self.seg_id)
            if self.footer is None:
                os.ftruncate(fd, end)  # drop a torn tail: it was never acknowledged
        except BaseException:
            os.close(fd)
            raise
        self.file.fd, self.file.pos = fd, end
        self.last_entry = self.blocks[-1].last_entry_id if self.blocks else -1
        self.next_expected = self.last_entry + 1
        self.bytes = end
        if self.footer is not None:
            self.lac = self.footer.lac if self.footer.has_lac else self.last_entry

    # -- appending ---------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.compacted or self.footer is not None:
            raise StagedError(Code.COMPLETED, f"segment {self.log_id}/{self.seg_id} is completed")
        if self.fenced:
            raise StagedError(Code.FENCED, f"segment {self.log_id}/{self.seg_id} is fenced")

    async def append(self, first: int, values: list[bytes]) -> None:
        """Returns once entries first … first+len−1 are durable here."""
        self._appending += 1
        try:
            await self._append(first, values)
        finally:
            self._appending -= 1
            self._changed.set()

    async def _append(self, first: int, values: list[bytes]) -> None:
        self._check_writable()
        last = first + len(values) - 1
        if last <= self.last_entry:
            return  # a retry of something already durable
        deadline = time.monotonic() + _GAP_WAIT
        while first > self.next_expected:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StagedError(Code.OUT_OF_ORDER, f"segment {self.log_id}/{self.seg_id}: entry {first} arrived "
                                  f"but {self.next_expected} is missing", retriable=True)
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            self._check_writable()
        if first < self.next_expected:  # partly a retry of buffered entries: wait for those, keep the rest
            skip = self.next_expected - first
            values, first = values[skip:], self.next_expected
            if not values:
                await self._wait_durable(last)
                return
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(first, values, fut))
        self.next_expected = first + len(values)
        self._changed.set()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_loop())
        await fut

    async def _wait_durable(self, last: int) -> None:
        while self.last_entry < last:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), _GAP_WAIT)

    async def _flush_loop(self) -> None:
        while self._pending:
            if self.sync_wait > 0 and len(self._pending) == 1:
                await asyncio.sleep(0)  # let concurrently arriving requests join the block
            batch, self._pending = self._pending, []
            async with self._lock:
                try:
                    if self.group is not None:
                        await self._group_write(batch)
                    else:
                        await asyncio.to_thread(self._write, batch)
                except BaseException as e:  # noqa: BLE001 - every waiter learns of the failure
                    err = e if isinstance(e, StagedError) else StagedError(
                        Code.DISK_FULL if isinstance(e, OSError) and e.errno == 28 else Code.INTERNAL,
                        f"segment {self.log_id}/{self.seg_id}: write failed: {e}", retriable=True)
                    for p in batch + self._pending:
                        if not p.future.done():
                            p.future.set_exception(err)
                    self._pending = []
                    self.next_expected = self.last_entry + 1
                    self._changed.set()
                    return
            for p in batch:
                if not p.future.done():
                    p.future.set_result(None)
            self._changed.set()

    def _create(self) -> None:
        if self.file.fd < 0:
            makedirs_durable(self.dir)
            self.file.create()

    def _block(self, batch: list[_Pending]) -> tuple[BlockHeader, list]:
        bb = BlockBuilder()
        for p in batch:
            for v in p.values:
                bb.add_raw(v)
        return bb.header(len(self.blocks), batch[0].first), bb.pieces

    def _write(self, batch: list[_Pending]) -> None:
        self._create()
        header, pieces = self._block(batch)
        self._written(self.file.append_block(header, pieces))

    async def _group_write(self, batch: list[_Pending]) -> None:
        """The block through the group commit: written in its thread, synced with
        the blocks other segments wrote at the same moment (one syncfs)."""
        if self.file.fd < 0:
            await asyncio.to_thread(self._create)
        header, pieces = self._block(batch)
        f = self.file
        self._written(await self.group.submit(Write(  # type: ignore[union-attr]
            f.fd, -1, header.block_length, _no_check, lambda: f.write_block(header, pieces), f.cut,
            lambda start: f.block_written(header, start))))

    def _written(self, ref: BlockRef) -> None:
        self.blocks.append(ref)
        self.bytes = self.file.pos
        self.last_entry = ref.last_entry_id

    # -- control -------------------------------------------------------------------------
    async def drain(self) -> None:
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    async def fence(self) -> int:
        if not self.fenced:
            self.fenced = True
            await asyncio.to_thread(self._write_fence)
        for p in self._pending:  # accepted but not yet written: refuse them, they were never acked
            if not p.future.done():
                p.future.set_exception(StagedError(Code.FENCED, "segment fenced"))
        self._pending = []
        await self.drain()
        self.next_expected = self.last_entry + 1
        self._changed.set()
        return self.last_entry

    def _write_fence(self) -> None:
        makedirs_durable(self.dir)
        with open(self.dir / "write.fence", "w") as f:
            f.write(f"logId={self.log_id}\nsegmentId={self.seg_id}\npid={os.getpid()}\n"
                    f"timestamp={int(time.time())}\nreason=fence\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.dir)

    def update_lac(self, lac: int) -> None:
        """The writer's LAC; it may run ahead of what this replica has synced
        (readers see ``visible()``, never more than is durable here)."""
        if self.footer is None and lac > self.lac:
            self.lac = lac
            self._changed.set()

    async def complete(self, lac: int) -> int:
        """Index + footer with the writer's LAC (entries above it stay unread).  Entries up to
        it that this replica accepted but has not written yet (an append waiting for a gap to
        fill) are waited for, up to the gap deadline, as Woodpecker's LogStore syncs what it
        buffered before it finalizes."""
        self.writer_lac = max(self.writer_lac, lac)
        deadline = time.monotonic() + _GAP_WAIT
        while self.footer is None and self.last_entry < lac and self._appending and time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
        await self.drain()
        async with self._lock:
            if self.footer is not None or self.compacted:
                return self.lac
            self.fenced = True
            lac = min(lac, self.last_entry)
            await asyncio.to_thread(self._write_footer, lac)
            self.lac = lac
            self._changed.set()
            return lac

    def _write_footer(self, lac: int) -> None:
        if self.file.fd < 0:
            makedirs_durable(self.dir)
            self.file.create()
        self.footer, self.bytes = self.file.write_footer(self.blocks, lac)
        fsync_dir(self.dir)

    # -- reading -----------------------------------------------------------------------------
    def visible(self) -> int:
        return self.lac if self.footer is not None else min(self.lac, self.last_entry)

    def read(self, from_entry: int, max_entries: int, max_bytes: int = 4 << 20) -> list[tuple[int, bytes]]:
        """Entries ≥ from_entry and ≤ the LAC, from local blocks."""
        limit = self.visible()
        out: list[tuple[int, bytes]] = []
        if from_entry > limit or not self.path.exists():
            return out
        used = 0
        rfd = os.open(self.path, os.O_RDONLY)
        try:
            for b in self.blocks:
                if b.last_entry_id < from_entry:
                    continue
                if b.first_entry_id > limit or len(out) >= max_entries or (out and used >= max_bytes):
                    break
                blk = read_block(rfd, b.offset, b.size, self.log_id, self.seg_id, b.number)
                for k, rec in enumerate(blk.records):
                    eid = b.first_entry_id + k
                    if from_entry <= eid <= limit and len(out) < max_entries:
                        out.append((eid, bytes(rec)))
                        used += len(rec)
        finally:
            os.close(rfd)
        return out

    def merged_object(self, rfd: int, blocks: list[BlockRef], start: int, upto: int, target: int,
                      number: int) -> tuple[bytes, int, int, int] | None:
        """Compaction, one object at a time: ``m_{number}.blk`` merged from the
        blocks from index ``start`` on, trimmed to entries ≤ ``upto``, taking
        blocks until their records reach ``target`` bytes → (body, first entry,
        last entry, index of the next block); None when no block is left.
        Reading a group at a time (not the whole segment, then merging) keeps a
        2 MB working set instead of the segment twice over (256 MB segments:
        512 MB of fresh, page-faulted memory per compaction), and runs the merge's
        copy off the event loop (bytes.join releases the GIL for large joins).
        ``rfd`` and ``blocks``: the file and block list as the compaction found
        them at its start (a concurrent compaction may drop both meanwhile)."""
        group: list[DecodedBlock] = []
        acc, i = 0, start
        while i < len(blocks) and acc < target:
            b = blocks[i]
            if b.first_entry_id > upto:
                break
            blk = read_block(rfd, b.offset, b.size, self.log_id, self.seg_id, b.number)
            if b.last_entry_id > upto:
                keep = upto - b.first_entry_id + 1
                blk = DecodedBlock(BlockHeader(b.number, b.first_entry_id, upto, 0, 0), blk.records[:keep], 0,
                                   blk.framed(keep))
            group.append(blk)
            acc += sum(len(r) for r in blk.records)
            i += 1
        if not group:
            return None
        body = merge_blocks(group, number, with_header=(number == 0))
        return body, group[0].header.first_entry_id, group[-1].header.last_entry_id, i

    def mark_compacted(self) -> None:
        """The footer is in object storage: keep a tombstone, drop the local data."""
        (self.dir / "data.compacted").touch()
        fsync_dir(self.dir)
        self.close()
        self.path.unlink(missing_ok=True)
        self.compacted = True
        self.blocks = []

    def close(self) -> None:
        self.file.close()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)

