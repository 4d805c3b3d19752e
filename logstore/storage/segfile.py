"""``data.log``: one segment as one file — the piece shared by the local
backend's writer and the LogStore's staged segments.

Appends a block with ``pwritev`` + ``fdatasync`` (cutting any torn bytes on
failure, so a retry rewrites at the same offset), and completes the file with
index + footer.  Also the few durable-filesystem helpers both need.
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from ..codec import (BLOCK_HEADER_RECORD_SIZE, FOOTER_RECORD_SIZE, HEADER_RECORD_SIZE, INDEX_RECORD_SIZE,
                     BlockHeader, DecodedBlock, Footer, HeaderRecord, RecordType, decode_block, decode_index,
                     decode_record, encode_index_and_footer, parse_footer, split_header)
from ..errors import CorruptionError
from .base import BlockRef, index_records

_IOV_MAX = 1000
_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry we created."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
        fsync_dir(d.parent)


def writev_all(fd: int, pieces: list, offset: int) -> None:
    """Write every piece at ``offset``, coping with partial writes.  Sequential
    ``writev`` calls of about 1 MiB each: measured here, single huge writes
    (16 MiB in one call) copy into the page cache at half the speed."""
    bufs = [memoryview(p) for p in pieces if len(p)]
    i = 0
    while i < len(bufs):
        chunk, size = [], 0
        while i + len(chunk) < len(bufs) and len(chunk) < _IOV_MAX and size < _CHUNK:
            b = bufs[i + len(chunk)]
            chunk.append(b)
            size += len(b)
        n = os.pwritev(fd, chunk, offset)
        offset += n
        while n:
            if n >= len(bufs[i]):
                n -= len(bufs[i])
                i += 1
            else:
                bufs[i] = bufs[i][n:]
                n = 0


class SegmentFile:
    """An open ``data.log`` being appended to.  ``pos`` is the end of the last
    durable block (0 before the segment header is written)."""

    def __init__(self, path: Path, pos: int = 0) -> None:
        self.path = path
        self.fd = -1
        self.pos = pos

    def create(self) -> None:
        """Create (truncate) the file and make its directory entry durable."""
        self.fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.fsync(self.fd)
        fsync_dir(self.path.parent)

    def append_block(self, header: BlockHeader, pieces: list) -> BlockRef:
        start = self.write_block(header, pieces)
        try:
            os.fdatasync(self.fd)
        except OSError:
            self.cut(start)
            raise
        return self.block_written(header, start)

    def write_block(self, header: BlockHeader, pieces: list) -> int:
        """Write a block after the last one, not yet synced → where it starts
        (for :meth:`cut` or :meth:`block_written`).  A failed write is cut off."""
        start = self.pos
        prefix = [HeaderRecord(0).encode()] if start == 0 else []
        try:
            writev_all(self.fd, [*prefix, header.encode(), *pieces], start)
        except OSError:
            self.cut(start)
            raise
        return start

    def cut(self, start: int) -> None:
        """Remove a block that was written but not made durable (a retry rewrites it at ``start``)."""
        try:
            os.ftruncate(self.fd, start)
        except OSError:
            pass

    def block_written(self, header: BlockHeader, start: int) -> BlockRef:
        """The block written at ``start`` is durable: it becomes the file's end."""
        offset = start + (HEADER_RECORD_SIZE if start == 0 else 0)
        size = BLOCK_HEADER_RECORD_SIZE + header.block_length
        self.pos = offset + size
        return BlockRef(header.block_number, header.first_entry_id, header.last_entry_id, size, offset)

    def write_footer(self, blocks: list[BlockRef], lac: int) -> tuple[Footer, int]:
        """Index + footer after the last block → (footer, file size)."""
        if self.pos == 0:
            writev_all(self.fd, [HeaderRecord(0).encode()], 0)
            self.pos = HEADER_RECORD_SIZE
        index = index_records(blocks, local=True)
        footer = Footer(len(blocks), len(blocks), self.pos + len(index) * INDEX_RECORD_SIZE, self.pos,
                        len(index) * INDEX_RECORD_SIZE, lac)
        tail = encode_index_and_footer(index, footer)
        try:
            writev_all(self.fd, [tail], self.pos)
            os.fdatasync(self.fd)
        except OSError:
            # ENOSPC/EIO half-way through: cut the torn index so the file is a
            # plain active segment again, which the next writer recovers
            try:
                os.ftruncate(self.fd, self.pos)
            except OSError:
                pass
            raise
        return footer, self.pos + len(tail)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_block(fd: int, offset: int, size: int, log_id: int, seg_id: int, number: int) -> DecodedBlock:
    """The block of ``size`` bytes at ``offset``, CRC-checked; damage or a short
    read raises CorruptionError naming log, segment and block."""
    raw = os.pread(fd, size, offset)
    try:
        blk = decode_block(raw)
    except CorruptionError as e:
        raise CorruptionError(str(e), log=str(log_id), segment=seg_id, block=number) from e
    if blk is None:
        raise CorruptionError("block is truncated", log=str(log_id), segment=seg_id, block=number)
    return blk


def read_layout(fd: int, log_id: int, seg_id: int) -> tuple[Footer | None, list[BlockRef], int]:
    """What a ``data.log`` holds: its footer and indexed blocks when completed
    (end = file size), else the valid blocks from the start and the end of the
    last one (a torn tail after it is not counted)."""
    size = os.fstat(fd).st_size
    if not size:
        return None, [], 0
    buf = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    try:
        footer = parse_footer(buf[max(0, size - FOOTER_RECORD_SIZE):])
        if footer is not None:
            return footer, indexed_blocks(buf, size, footer, log_id, seg_id), size
        blocks, end = scan_valid(buf, size, log_id, seg_id)
        return None, blocks, end
    finally:
        try:
            buf.close()
        except BufferError:
            pass  # a memoryview is still held by a raised error's frames; the GC unmaps it


def indexed_blocks(buf, size: int, footer: Footer, log_id: int, seg_id: int) -> list[BlockRef]:
    """The footer's index, checked against the file: every block lies between
    the segment header and the index, in order and without overlap — so a
    completed segment that lost or garbled bytes raises instead of reading short."""
    idx_off = size - footer.record_size - footer.total_blocks * INDEX_RECORD_SIZE
    if idx_off < HEADER_RECORD_SIZE:
        raise CorruptionError(f"footer claims {footer.total_blocks} blocks, more than a {size}-byte file holds",
                              log=str(log_id), segment=seg_id, block="index")
    try:
        index = decode_index(buf, footer.total_blocks, idx_off)
    except CorruptionError as e:
        raise CorruptionError(f"damaged index: {e}", log=str(log_id), segment=seg_id, block="index") from e
    blocks = [BlockRef(i.block_number, i.first_entry_id, i.last_entry_id, i.block_size, i.start_offset) for i in index]
    check_index(blocks, idx_off, log_id, seg_id)
    return blocks


def check_index(blocks: list[BlockRef], end: int, log_id: int, seg_id: int) -> None:
    """Blocks are contiguous from the segment header and end by ``end``, and
    their entry ids follow on; anything else is damage (never a shorter segment)."""
    off, entry = HEADER_RECORD_SIZE, None
    for b in blocks:
        if b.offset != off or b.size < BLOCK_HEADER_RECORD_SIZE or (entry is not None and b.first_entry_id != entry):
            raise CorruptionError(f"index entry {b.number} (offset {b.offset}, size {b.size}) does not follow "
                                  f"the previous block (expected offset {off})", log=str(log_id), segment=seg_id,
                                  block=b.number)
        off, entry = b.offset + b.size, b.last_entry_id + 1
    if off > end:  # (fewer is allowed: Woodpecker leaves a recovered writer's garbage before the index)
        raise CorruptionError(f"blocks end at byte {off}, past the index at {end}", log=str(log_id),
                              segment=seg_id, block="index")


def scan_valid(buf, size: int, log_id: int, seg_id: int) -> tuple[list[BlockRef], int]:
        """Durable blocks from the start; a damaged block that reaches the end of
        the file is a torn tail (dropped), one followed by more bytes is corruption."""
        if size < HEADER_RECORD_SIZE:
            return [], 0
        try:
            _, off = split_header(buf)
        except CorruptionError:
            # the header goes out with the first block, in the same unsynced write: a damaged
            # header with no intact block after it is that write torn by a power cut (nothing
            # in the file was ever acknowledged); with one after it, it is damage
            if size <= HEADER_RECORD_SIZE or not valid_block_after(buf, 1, size):
                return [], 0
            raise
        blocks: list[BlockRef] = []
        while off < size:
            if buf[off + 4:off + 5] == bytes([RecordType.INDEX]):
                break  # an index whose footer never landed (a crash or ENOSPC mid-completion): torn tail
            try:
                b = decode_block(buf, off)
            except CorruptionError as e:
                if valid_block_after(buf, off + 1, size):
                    raise CorruptionError(f"damaged block followed by valid blocks: {e}", log=str(log_id),
                                          segment=seg_id, block=len(blocks)) from e
                break  # the last write, torn (a crash or power cut before its fdatasync): never acknowledged
            if b is None:
                break
            h = b.header
            blocks.append(BlockRef(h.block_number, h.first_entry_id, h.last_entry_id, b.end - off, off))
            off = b.end
        return blocks, off


_BLOCK_TL = struct.pack("<BI", RecordType.BLOCK_HEADER, BLOCK_HEADER_RECORD_SIZE - 9)


def valid_block_after(buf, start: int, size: int) -> bool:
    """Is there an intact block anywhere in ``buf[start:size]``?  Blocks are
    fdatasync'd one at a time, so a damaged block with only garbage after it is
    the last write, torn by a crash or power cut (its page-cache bytes partly
    reached the disk, maybe with holes); a damaged block with an intact one
    after it is damage in the middle of acknowledged data."""
    data = buf if hasattr(buf, "find") else bytes(buf)
    pos = start
    while (hit := data.find(_BLOCK_TL, pos + 4, size)) >= 0:
        try:
            if decode_block(memoryview(data)[:size], hit - 4) is not None:
                return True
        except CorruptionError:
            pass
        pos = hit - 3
    return False


def claimed_length(buf, off: int) -> int | None:
    """How many bytes a block at ``off`` claims (header record + its data), or
    None if even the header is incomplete."""
    mv = memoryview(buf)
    if off + BLOCK_HEADER_RECORD_SIZE > len(mv):
        return None
    _, rtype, length = struct.unpack_from("<IBI", mv, off)
    if rtype != RecordType.BLOCK_HEADER or length != BLOCK_HEADER_RECORD_SIZE - 9:
        return BLOCK_HEADER_RECORD_SIZE  # not a block header: claims only its own size
    block_length = struct.unpack_from("<I", mv, off + 9 + 20)[0]
    return BLOCK_HEADER_RECORD_SIZE + block_length


def walk_headers(fd: int, size: int) -> list[BlockRef]:
    """The complete blocks of a ``data.log`` still being written, from their
    37-byte headers alone (one pread per block, no data read): how the last
    entry and the blocks of an active local segment are found without an index."""
    blocks: list[BlockRef] = []
    off = HEADER_RECORD_SIZE
    while off + BLOCK_HEADER_RECORD_SIZE <= size:
        head = os.pread(fd, BLOCK_HEADER_RECORD_SIZE, off)
        if head[4] != RecordType.BLOCK_HEADER:
            break
        rec = decode_record(head)
        if rec is None:
            break
        h = BlockHeader.decode_payload(rec[1])
        end = off + BLOCK_HEADER_RECORD_SIZE + h.block_length
        if end > size:
            break
        blocks.append(BlockRef(h.block_number, h.first_entry_id, h.last_entry_id, end - off, off))
        off = end
    return blocks


def block_refs(fd: int) -> list[BlockRef]:
    """Where every block of a ``data.log`` sits: the footer's index when the
    segment is completed (two preads), else its block headers walked."""
    size = os.fstat(fd).st_size
    footer = parse_footer(os.pread(fd, FOOTER_RECORD_SIZE, max(0, size - FOOTER_RECORD_SIZE)))
    if footer is None:
        return walk_headers(fd, size)
    idx_off = size - footer.record_size - footer.total_blocks * INDEX_RECORD_SIZE
    if idx_off < HEADER_RECORD_SIZE:
        raise CorruptionError(f"footer claims {footer.total_blocks} blocks, more than a {size}-byte file holds")
    index = decode_index(os.pread(fd, footer.total_blocks * INDEX_RECORD_SIZE, idx_off), footer.total_blocks)
    return [BlockRef(i.block_number, i.first_entry_id, i.last_entry_id, i.block_size, i.start_offset) for i in index]
