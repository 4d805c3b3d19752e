"""Object-storage backend (S3, MinIO): one object per block, Woodpecker's keys.

``{rootPath}/{logId}/{segId}/{n}.blk``  block n (block 0 starts with the segment header)
``…/footer.blk``                         index + footer once the segment is completed
``…/m_{k}.blk``                          merged blocks after compaction (footer flag bit 0)

Durability: a block is acknowledged once its PUT with ``If-None-Match: *``
succeeded.  Fencing: the fencer PUTs a one-byte object with metadata
``fenced: true`` at the next free block number; the old writer's PUT there then
fails its precondition, a HEAD shows the fence, and it stops.  Blocks are
contiguous from 0, so a reader stops at the first missing or fenced number.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..codec import (BLOCK_HEADER_RECORD_SIZE, HEADER_RECORD_SIZE, BlockHeader, DecodedBlock, Footer,
                     HeaderRecord, FLAG_COMPACTED, RecordType, decode_block, decode_index, decode_record,
                     encode_index_and_footer, merge_blocks, parse_footer, split_header)
from ..config import Config
from ..errors import CorruptionError, StorageError, WriterFencedError
from .base import Backend, BlockRef, Recovered, ScanResult, SegmentWriter, index_records
from .s3 import S3, NotFound, PreconditionFailed

_PROBE_WINDOW = 16
_READ_PARALLEL = 8


def _is_fence(meta: dict[str, str]) -> bool:
    return meta.get("fenced", "").lower() == "true"


class ObjectSegmentWriter(SegmentWriter):
    def __init__(self, backend: "ObjectBackend", log_id: int, seg_id: int, parallel: int) -> None:
        self.b, self.log_id, self.seg_id, self._parallel = backend, log_id, seg_id, parallel

    @property
    def parallel(self) -> int:
        return self._parallel

    async def write_block(self, header: BlockHeader, pieces: list, entries: list | None = None,
                          times: list | None = None) -> BlockRef:
        head = HeaderRecord(header.first_entry_id).encode() if header.block_number == 0 else b""
        body = b"".join([head, header.encode(), *pieces])
        key = self.b.key(self.log_id, self.seg_id, f"{header.block_number}.blk")
        try:
            await self.b.s3.put(key, body, if_absent=True)
        except PreconditionFailed:
            _, meta = await self.b.s3.head(key)
            if _is_fence(meta):
                raise WriterFencedError(f"segment {self.log_id}/{self.seg_id} was fenced at block "
                                        f"{header.block_number} by another writer") from None
            # our own earlier attempt landed (a retried PUT): idempotent success
        return BlockRef(header.block_number, header.first_entry_id, header.last_entry_id, len(body))

    async def finalize(self, blocks: list[BlockRef], lac: int) -> int:
        return await self.b.put_footer(self.log_id, self.seg_id, blocks, lac)

    async def close(self) -> None:
        pass


@dataclass
class ObjectCursor:
    next_block: int = 0     # probing mode: the next block number to GET
    next_entry: int = 0     # the first entry id not yet returned
    index: list | None = None
    compacted: bool = False
    footer_checked: bool = False
    lac: int = -1


class ObjectBackend(Backend):
    kind = "minio"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config["minio.rootPath"].strip("/")
        self.parallel = config["woodpecker.logstore.segmentSyncPolicy.maxFlushThreads"]
        self.s3 = S3(config, pool_size=self.parallel + _READ_PARALLEL + 8)

    def key(self, log_id: int, seg_id: int, name: str) -> str:
        return f"{self.root}/{log_id}/{seg_id}/{name}" if self.root else f"{log_id}/{seg_id}/{name}"

    @property
    def root_prefix(self) -> str:
        """Where every log of this keyspace lives in the bucket."""
        return f"{self.root}/" if self.root else ""

    def _log_prefix(self, log_id: int) -> str:
        return f"{self.root_prefix}{log_id}/"

    async def start(self) -> None:
        await self.s3.ensure_bucket(self.config["minio.createBucket"])

    async def close(self) -> None:
        await self.s3.close()

    async def create_segment(self, log_id: int, seg_id: int, quorum=None) -> SegmentWriter:
        return ObjectSegmentWriter(self, log_id, seg_id, self.parallel)

    # -- footer ----------------------------------------------------------------
    async def put_footer(self, log_id: int, seg_id: int, blocks: list[BlockRef], lac: int,
                         flags: int = 0, overwrite: bool = False) -> int:
        index = index_records(blocks, local=False)
        total = sum(b.size for b in blocks)
        footer = Footer(len(blocks), len(blocks), total, 0, len(index) * 41, lac, flags)
        key = self.key(log_id, seg_id, "footer.blk")
        try:
            await self.s3.put(key, encode_index_and_footer(index, footer), if_absent=not overwrite)
        except PreconditionFailed:
            pass  # finalized already (by a fencer or an earlier attempt): same blocks, same footer
        return total

    async def read_footer(self, log_id: int, seg_id: int) -> tuple[Footer, list] | None:
        try:
            raw, _ = await self.s3.get(self.key(log_id, seg_id, "footer.blk"))
        except NotFound:
            return None
        footer = parse_footer(raw)
        if footer is None:
            raise CorruptionError("footer.blk does not end with a valid footer record", log=str(log_id),
                                  segment=seg_id, block="footer")
        try:
            index = decode_index(raw, footer.total_blocks, len(raw) - footer.record_size - footer.total_blocks * 41)
        except CorruptionError as e:
            raise CorruptionError(f"footer.blk index: {e}", log=str(log_id), segment=seg_id, block="footer") from e
        return footer, index

    # -- probing ---------------------------------------------------------------
    async def _probe_one(self, log_id: int, seg_id: int, n: int) -> BlockHeader | str:
        """Block n's header, or 'missing' / 'fenced'."""
        key = self.key(log_id, seg_id, f"{n}.blk")
        length = HEADER_RECORD_SIZE + BLOCK_HEADER_RECORD_SIZE if n == 0 else BLOCK_HEADER_RECORD_SIZE
        try:
            raw, meta = await self.s3.get(key, (0, length - 1))
        except NotFound:
            return "missing"
        if _is_fence(meta):
            return "fenced"
        off = split_header(raw)[1] if n == 0 else 0
        rec = decode_record(raw, off)
        if rec is None or rec[0] != RecordType.BLOCK_HEADER:
            raise CorruptionError("object does not start with a block header", log=str(log_id), segment=seg_id, block=n)
        return BlockHeader.decode_payload(rec[1])

    async def _probe(self, log_id: int, seg_id: int, start: int = 0) -> tuple[list[BlockRef], int, bool]:
        """Headers of blocks start, start+1, … until a gap or fence → (blocks, next number, fenced)."""
        blocks: list[BlockRef] = []
        n = start
        while True:
            window = await asyncio.gather(*(self._probe_one(log_id, seg_id, i) for i in range(n, n + _PROBE_WINDOW)))
            for h in window:
                if isinstance(h, str):
                    return blocks, n, h == "fenced"
                size = (h.block_length + BLOCK_HEADER_RECORD_SIZE + (HEADER_RECORD_SIZE if n == 0 else 0))
                blocks.append(BlockRef(n, h.first_entry_id, h.last_entry_id, size))
                n += 1

    async def fence_and_recover(self, log_id: int, seg_id: int, quorum=None) -> Recovered:
        for _ in range(100):
            found = await self.read_footer(log_id, seg_id)
            if found is not None:
                footer, index = found
                blocks = [BlockRef(i.block_number, i.first_entry_id, i.last_entry_id, i.block_size) for i in index]
                last = blocks[-1].last_entry_id if blocks else -1
                return Recovered(blocks, footer.lac if footer.has_lac else last, footer.total_size, True)
            blocks, nxt, fenced = await self._probe(log_id, seg_id)
            if not fenced:
                try:
                    await self.s3.put(self.key(log_id, seg_id, f"{nxt}.blk"), b"F", if_absent=True,
                                      metadata={"fenced": "true"})
                except PreconditionFailed:
                    continue  # the old writer got block nxt in first: probe again
            last = blocks[-1].last_entry_id if blocks else -1
            size = await self.put_footer(log_id, seg_id, blocks, last)
            return Recovered(blocks, last, size, False)
        raise StorageError(f"could not fence segment {log_id}/{seg_id}: another writer kept adding blocks")

    async def last_entry(self, log_id: int, seg_id: int, quorum=None) -> int:
        found = await self.read_footer(log_id, seg_id)
        if found is not None:
            footer, index = found
            return footer.lac if footer.has_lac else (index[-1].last_entry_id if index else -1)
        blocks, _, _ = await self._probe(log_id, seg_id)
        return blocks[-1].last_entry_id if blocks else -1

    # -- reading -----------------------------------------------------------------
    async def _get_block(self, log_id: int, seg_id: int, name: str, number: int) -> DecodedBlock:
        raw, meta = await self.s3.get(self.key(log_id, seg_id, name))
        if _is_fence(meta):
            raise NotFound(name)
        try:
            off = split_header(raw)[1] if (number == 0 or name.startswith("m_0")) else 0
            b = decode_block(raw, off)
        except CorruptionError as e:
            raise CorruptionError(str(e), log=str(log_id), segment=seg_id, block=name) from e
        if b is None or b.end != len(raw):
            raise CorruptionError("block object is truncated or has trailing bytes", log=str(log_id),
                                  segment=seg_id, block=name)
        return b

    async def scan(self, log_id: int, seg_id: int, cursor: ObjectCursor | None, max_bytes: int,
                   quorum=None, sealed_last=None) -> ScanResult:
        cur = cursor or ObjectCursor()
        if cur.index is None and not cur.footer_checked:
            cur.footer_checked = True
            await self._load_footer(log_id, seg_id, cur)
        if cur.index is None and sealed_last is not None and not await self._load_footer(log_id, seg_id, cur):
            # completed in metadata, and completion PUTs footer.blk first: it was lost
            raise CorruptionError(f"segment is completed (last entry {sealed_last}) but footer.blk is missing",
                                  log=str(log_id), segment=seg_id, block="footer")
        if cur.index is not None:
            if sealed_last is not None and cur.lac < sealed_last:
                raise CorruptionError(f"footer.blk ends at entry {cur.lac} but the segment's metadata says "
                                      f"{sealed_last}", log=str(log_id), segment=seg_id, block="footer")
            return await self._scan_indexed(log_id, seg_id, cur, max_bytes)
        try:
            b = await self._get_block(log_id, seg_id, f"{cur.next_block}.blk", cur.next_block)
        except NotFound:
            # nothing new — unless the segment was completed meanwhile
            if await self._load_footer(log_id, seg_id, cur):
                return await self._scan_indexed(log_id, seg_id, cur, max_bytes)
            return ScanResult([], cur, False)
        cur.next_block += 1
        cur.next_entry = b.header.last_entry_id + 1
        return ScanResult([b], cur, False)

    async def _load_footer(self, log_id: int, seg_id: int, cur: ObjectCursor) -> bool:
        found = await self.read_footer(log_id, seg_id)
        if found is None:
            return False
        footer, index = found
        cur.index, cur.compacted = index, footer.compacted
        cur.lac = footer.lac if footer.has_lac else (index[-1].last_entry_id if index else -1)
        return True

    async def _scan_indexed(self, log_id: int, seg_id: int, cur: ObjectCursor, max_bytes: int) -> ScanResult:
        assert cur.index is not None
        todo, used = [], 0
        for ir in cur.index:
            if ir.last_entry_id < cur.next_entry:
                continue
            if todo and used >= max_bytes:
                break
            todo.append(ir)
            used += ir.block_size
        if not todo:
            return ScanResult([], cur, True, cur.lac)
        prefix = "m_" if cur.compacted else ""
        sem = asyncio.Semaphore(_READ_PARALLEL)

        async def one(ir) -> DecodedBlock:
            async with sem:
                return await self._get_block(log_id, seg_id, f"{prefix}{ir.block_number}.blk", ir.block_number)

        try:
            blocks = await asyncio.gather(*(one(ir) for ir in todo))
        except NotFound:
            if not cur.compacted and await self._load_footer(log_id, seg_id, cur) and cur.compacted:
                return await self._scan_indexed(log_id, seg_id, cur, max_bytes)  # compacted meanwhile
            raise CorruptionError("a block listed in footer.blk is missing", log=str(log_id), segment=seg_id) from None
        cur.next_entry = blocks[-1].header.last_entry_id + 1
        done = all(ir.last_entry_id < cur.next_entry for ir in cur.index)
        return ScanResult(list(blocks), cur, done, cur.lac)

    # -- compaction --------------------------------------------------------------
    async def compact(self, log_id: int, seg_id: int, target_bytes: int, quorum=None,
                      last_entry=None) -> int | None:
        found = await self.read_footer(log_id, seg_id)
        if found is None:
            raise StorageError(f"segment {log_id}/{seg_id} has no footer: complete it before compacting")
        footer, index = found
        if footer.compacted:
            await self._delete_leftover_blocks(log_id, seg_id)
            return footer.total_size
        groups: list[list] = [[]]
        acc = 0
        for ir in index:
            groups[-1].append(ir)
            acc += ir.block_size
            if acc >= target_bytes:
                groups.append([])
                acc = 0
        groups = [g for g in groups if g]
        merged: list[BlockRef] = []
        for k, group in enumerate(groups):
            blocks = [await self._get_block(log_id, seg_id, f"{ir.block_number}.blk", ir.block_number) for ir in group]
            body = merge_blocks(blocks, k, with_header=(k == 0))
            await self.s3.put(self.key(log_id, seg_id, f"m_{k}.blk"), body)
            merged.append(BlockRef(k, blocks[0].header.first_entry_id, blocks[-1].header.last_entry_id, len(body)))
        size = await self.put_footer(log_id, seg_id, merged, footer.lac, footer.flags | FLAG_COMPACTED, overwrite=True)
        await self._delete_leftover_blocks(log_id, seg_id)
        return size

    async def _delete_leftover_blocks(self, log_id: int, seg_id: int) -> None:
        prefix = self.key(log_id, seg_id, "")
        objs = await self.s3.list(prefix)
        await self.s3.delete_many([o.key for o in objs if o.key[len(prefix):].split(".")[0].isdigit()])

    # -- deletion ------------------------------------------------------------------
    async def _delete_prefix(self, prefix: str) -> tuple[int, int]:
        objs = await self.s3.list(prefix)
        await self.s3.delete_many([o.key for o in objs])
        return len(objs), sum(o.size for o in objs)

    async def delete_segment(self, log_id: int, seg_id: int, quorum=None) -> tuple[int, int]:
        return await self._delete_prefix(self.key(log_id, seg_id, ""))

    async def delete_segments(self, log_id: int, seg_ids: list[int], quorums=None,
                              dry_run: bool = False) -> dict[int, tuple[int, int]]:
        """GC at the store's pace: one listing of the whole log, then batch
        deletes (1,000 keys a request, several in flight) — not a LIST and a
        DELETE per segment, which measured ~30x slower than the store."""
        prefix = self._log_prefix(log_id)
        doomed = set(seg_ids)
        found: dict[int, list] = {s: [] for s in seg_ids}
        for o in await self.s3.list(prefix):
            seg = o.key[len(prefix):].split("/", 1)[0]
            if seg.isdigit() and int(seg) in doomed:
                found[int(seg)].append(o)
        if not dry_run:
            await self.s3.delete_many([o.key for objs in found.values() for o in objs])
        return {s: (len(objs), sum(o.size for o in objs)) for s, objs in found.items()}

    async def delete_log(self, log_id: int) -> tuple[int, int]:
        return await self._delete_prefix(self._log_prefix(log_id))

    async def segment_ids(self, log_id: int) -> list[int]:
        prefix = self._log_prefix(log_id)
        dirs = await self.s3.list_dirs(prefix)
        return sorted(int(d[len(prefix):].strip("/")) for d in dirs if d[len(prefix):].strip("/").isdigit())



