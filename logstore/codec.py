"""Woodpecker's record codec (format version 6), pure: bytes ⇄ small dataclasses.

Every record is ``crc:u32 | type:u8 | length:u32 | payload`` (little-endian);
the CRC-32/IEEE covers type, length and payload.  A segment is::

    HeaderRecord                     (once, before block 0)
    BlockHeaderRecord DataRecord*    (per block; the header carries the entry-id
                                      range, the data length and a CRC of the data)
    IndexRecord* FooterRecord        (once the segment is completed)

Entry ids are never stored per record: the k-th DataRecord of a block has id
``BlockHeader.first_entry_id + k``.  Decoding distinguishes *incomplete* bytes
(a tail still being written: ``None``) from *damaged* bytes (a CRC or framing
mismatch: :class:`CorruptionError`), so damage never reads as end-of-log.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import CorruptionError

try:  # ISA-L's CRC-32/IEEE: the same checksum as zlib's, ~10× faster (SIMD); zlib where it is missing
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a declared dependency
    from zlib import crc32
from .proto import encode_properties, layout_prefix

FORMAT_VERSION = 6
HEADER_MAGIC = b"HDR\x01"
FOOTER_MAGIC = b"FTR\x01"
FLAG_COMPACTED = 0x0001

RECORD_HEADER_SIZE = 9
_REC = struct.Struct("<IBI")  # crc, type, length
_TL = struct.Struct("<BI")


class RecordType(IntEnum):
    HEADER = 1
    DATA = 2
    INDEX = 3
    FOOTER = 4
    BLOCK_HEADER = 5


_HEADER = struct.Struct("<HHq4s")          # 16
_BLOCK_HEADER = struct.Struct("<iqqII")    # 28
_INDEX = struct.Struct("<iqIqq")           # 32
_FOOTER_V6 = struct.Struct("<iIQQIHH4sq")  # 44
_FOOTER_V5 = struct.Struct("<iIQQIHH4s")   # 36

HEADER_RECORD_SIZE = RECORD_HEADER_SIZE + _HEADER.size              # 25
BLOCK_HEADER_RECORD_SIZE = RECORD_HEADER_SIZE + _BLOCK_HEADER.size  # 37
INDEX_RECORD_SIZE = RECORD_HEADER_SIZE + _INDEX.size                # 41
FOOTER_RECORD_SIZE = RECORD_HEADER_SIZE + _FOOTER_V6.size           # 53
FOOTER_V5_RECORD_SIZE = RECORD_HEADER_SIZE + _FOOTER_V5.size        # 45


def encode_record(rtype: int, payload: bytes) -> bytes:
    tl = _TL.pack(rtype, len(payload))
    return struct.pack("<I", crc32(payload, crc32(tl))) + tl + payload


def decode_record(buf: bytes | memoryview, off: int = 0) -> tuple[int, memoryview, int] | None:
    """One record at ``off`` → (type, payload, next offset); ``None`` if the
    bytes end before the record does.  A CRC mismatch or unknown type raises."""
    mv = memoryview(buf)
    if off + RECORD_HEADER_SIZE > len(mv):
        return None
    crc, rtype, length = _REC.unpack_from(mv, off)
    end = off + RECORD_HEADER_SIZE + length
    if end > len(mv):
        return None
    if crc32(mv[off + 4:end]) != crc:
        raise CorruptionError(f"record CRC mismatch at byte {off}")
    if rtype not in RecordType._value2member_map_:
        raise CorruptionError(f"unknown record type {rtype} at byte {off}")
    return rtype, mv[off + RECORD_HEADER_SIZE:end], end


def _expect(buf: bytes | memoryview, off: int, rtype: RecordType, what: str) -> tuple[memoryview, int]:
    rec = decode_record(buf, off)
    if rec is None:
        raise CorruptionError(f"{what}: truncated at byte {off}")
    if rec[0] != rtype:
        raise CorruptionError(f"{what}: expected record type {int(rtype)}, found {rec[0]} at byte {off}")
    return rec[1], rec[2]


@dataclass(frozen=True)
class HeaderRecord:
    first_entry_id: int = 0
    flags: int = 0
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        return encode_record(RecordType.HEADER, _HEADER.pack(self.version, self.flags, self.first_entry_id, HEADER_MAGIC))

    @classmethod
    def decode_payload(cls, p: memoryview) -> "HeaderRecord":
        if len(p) != _HEADER.size:
            raise CorruptionError(f"header record payload is {len(p)} bytes, want {_HEADER.size}")
        version, flags, first, magic = _HEADER.unpack(p)
        if version not in (5, 6) or magic != HEADER_MAGIC:
            raise CorruptionError(f"bad header record (version {version}, magic {magic!r})")
        return cls(first, flags, version)


@dataclass(frozen=True)
class BlockHeader:
    block_number: int
    first_entry_id: int
    last_entry_id: int
    block_length: int
    block_crc: int

    def encode(self) -> bytes:
        return encode_record(RecordType.BLOCK_HEADER, _BLOCK_HEADER.pack(
            self.block_number, self.first_entry_id, self.last_entry_id, self.block_length, self.block_crc))

    @classmethod
    def decode_payload(cls, p: memoryview) -> "BlockHeader":
        if len(p) != _BLOCK_HEADER.size:
            raise CorruptionError(f"block header payload is {len(p)} bytes, want {_BLOCK_HEADER.size}")
        return cls(*_BLOCK_HEADER.unpack(p))

    @property
    def entry_count(self) -> int:
        return self.last_entry_id - self.first_entry_id + 1


@dataclass(frozen=True)
class IndexRecord:
    block_number: int
    start_offset: int
    block_size: int
    first_entry_id: int
    last_entry_id: int

    def encode(self) -> bytes:
        return encode_record(RecordType.INDEX, _INDEX.pack(
            self.block_number, self.start_offset, self.block_size, self.first_entry_id, self.last_entry_id))

    @classmethod
    def decode_payload(cls, p: memoryview) -> "IndexRecord":
        if len(p) < _INDEX.size:
            raise CorruptionError(f"index record payload is {len(p)} bytes, want ≥ {_INDEX.size}")
        return cls(*_INDEX.unpack_from(p))


@dataclass(frozen=True)
class Footer:
    total_blocks: int
    total_records: int
    total_size: int
    index_offset: int
    index_length: int
    lac: int = -1
    flags: int = 0
    version: int = FORMAT_VERSION

    @property
    def compacted(self) -> bool:
        return bool(self.flags & FLAG_COMPACTED)

    @property
    def has_lac(self) -> bool:
        return self.version >= 6 and self.lac >= 0

    @property
    def record_size(self) -> int:
        return FOOTER_RECORD_SIZE if self.version >= 6 else FOOTER_V5_RECORD_SIZE

    def encode(self) -> bytes:
        return encode_record(RecordType.FOOTER, _FOOTER_V6.pack(
            self.total_blocks, self.total_records, self.total_size, self.index_offset, self.index_length,
            FORMAT_VERSION, self.flags, FOOTER_MAGIC, self.lac))

    @classmethod
    def decode_payload(cls, p: memoryview) -> "Footer":
        if len(p) < _FOOTER_V5.size:
            raise CorruptionError(f"footer payload is {len(p)} bytes, want ≥ {_FOOTER_V5.size}")
        tb, tr, ts, io, il, ver, flags, magic = _FOOTER_V5.unpack_from(p)
        if ver not in (5, 6) or magic != FOOTER_MAGIC:
            raise CorruptionError(f"bad footer (version {ver}, magic {magic!r})")
        lac = _FOOTER_V6.unpack_from(p)[8] if ver >= 6 and len(p) >= _FOOTER_V6.size else -1
        return cls(tb, tr, ts, io, il, lac, flags, ver)


def parse_footer(tail: bytes | memoryview) -> Footer | None:
    """The footer at the end of ``tail`` (v6 first, then v5), or ``None`` when
    the bytes do not end with a valid footer record."""
    mv = memoryview(tail)
    for size in (FOOTER_RECORD_SIZE, FOOTER_V5_RECORD_SIZE):
        if len(mv) < size:
            continue
        try:
            rec = decode_record(mv, len(mv) - size)
        except CorruptionError:
            continue
        if rec and rec[0] == RecordType.FOOTER and rec[2] == len(mv):
            try:
                return Footer.decode_payload(rec[1])
            except CorruptionError:
                continue
    return None


def decode_index(buf: bytes | memoryview, count: int, off: int = 0) -> list[IndexRecord]:
    out = []
    for _ in range(count):
        p, off = _expect(buf, off, RecordType.INDEX, "index section")
        out.append(IndexRecord.decode_payload(p))
    return out


def encode_index_and_footer(index: list[IndexRecord], footer: Footer) -> bytes:
    return b"".join(r.encode() for r in index) + footer.encode()


@dataclass
class BlockBuilder:
    """Accumulates DataRecords for one block without copying payloads: it keeps
    the pieces (record header, layout prefix, payload, properties) and a running
    CRC of the block's data, so the flush only writes what is already framed."""

    pieces: list[bytes | memoryview] = field(default_factory=list)
    length: int = 0
    crc: int = 0
    count: int = 0
    payload_bytes: int = 0
    times: list[int | None] = field(default_factory=list)  # append times (service mode ships them per entry)

    def add(self, payload: bytes | memoryview, properties: dict[str, str] | None = None,
            time_ms: int | None = None) -> int:
        """Frame one entry (with its append time, if given); returns the encoded
        record size."""
        prefix = layout_prefix(len(payload), time_ms)
        self.times.append(time_ms)
        props = encode_properties(properties)
        body_len = len(prefix) + len(payload) + len(props)
        tl = _TL.pack(RecordType.DATA, body_len)
        rcrc = crc32(props, crc32(payload, crc32(prefix, crc32(tl))))
        head = struct.pack("<I", rcrc) + tl + prefix
        self.crc = crc32(props, crc32(payload, crc32(head, self.crc)))
        self.pieces.append(head)
        self.pieces.append(payload)
        if props:
            self.pieces.append(props)
        size = RECORD_HEADER_SIZE + body_len
        self.length += size
        self.count += 1
        self.payload_bytes += len(payload)
        return size

    def add_raw(self, layout: bytes) -> int:
        """Frame an entry already encoded as ``LogMessageLayout`` bytes (service mode)."""
        tl = _TL.pack(RecordType.DATA, len(layout))
        head = struct.pack("<I", crc32(layout, crc32(tl))) + tl
        self.crc = crc32(layout, crc32(head, self.crc))
        self.pieces.append(head)
        self.pieces.append(layout)
        size = RECORD_HEADER_SIZE + len(layout)
        self.length += size
        self.count += 1
        self.payload_bytes += len(layout)
        return size

    def header(self, block_number: int, first_entry_id: int) -> BlockHeader:
        return BlockHeader(block_number, first_entry_id, first_entry_id + self.count - 1, self.length, self.crc)

    def data(self) -> bytes:
        return b"".join(self.pieces)


@dataclass(frozen=True)
class DecodedBlock:
    header: BlockHeader
    records: list[memoryview]  # LogMessageLayout bytes of each entry, in id order
    end: int  # offset just past the block in the buffer it was decoded from
    # the block's data records as framed in that buffer (CRC-checked, each one): compaction
    # concatenates these instead of re-framing every record (None: re-frame from ``records``)
    data: memoryview | None = None

    def framed(self, count: int | None = None) -> memoryview | None:
        """The data records of the first ``count`` entries (all by default) as
        framed in the buffer, or None when the block was not decoded from one."""
        if self.data is None:
            return None
        if count is None or count >= len(self.records):
            return self.data
        return self.data[:sum(RECORD_HEADER_SIZE + len(r) for r in self.records[:count])]


def decode_block(buf: bytes | memoryview, off: int = 0) -> DecodedBlock | None:
    """A BlockHeaderRecord and its data at ``off``.  ``None`` if the bytes end
    first (a tail being written); :class:`CorruptionError` if anything that is
    fully present fails its CRC or framing."""
    mv = memoryview(buf)
    rec = decode_record(mv, off)
    if rec is None:
        return None
    rtype, p, data_off = rec
    if rtype != RecordType.BLOCK_HEADER:
        raise CorruptionError(f"expected a block header at byte {off}, found record type {rtype}")
    hdr = BlockHeader.decode_payload(p)
    end = data_off + hdr.block_length
    if end > len(mv):
        return None
    data = mv[data_off:end]
    if crc32(data) != hdr.block_crc:
        raise CorruptionError(f"block {hdr.block_number} data CRC mismatch")
    records: list[memoryview] = []
    i = 0
    while i < len(data):
        r = decode_record(data, i)
        if r is None:
            raise CorruptionError(f"block {hdr.block_number}: data record truncated inside the block")
        if r[0] != RecordType.DATA:
            raise CorruptionError(f"block {hdr.block_number}: unexpected record type {r[0]} among data")
        records.append(r[1])
        i = r[2]
    if len(records) != hdr.entry_count:
        raise CorruptionError(f"block {hdr.block_number}: header says {hdr.entry_count} entries, found {len(records)}")
    return DecodedBlock(hdr, records, end, data)


def split_header(buf: bytes | memoryview) -> tuple[HeaderRecord, int]:
    """Decode the segment's HeaderRecord at offset 0 → (header, offset after it)."""
    p, off = _expect(buf, 0, RecordType.HEADER, "segment header")
    return HeaderRecord.decode_payload(p), off


def merge_blocks(blocks: list[DecodedBlock], block_number: int, with_header: bool) -> bytes:
    """Compaction: one merged ``m_k.blk`` from consecutive blocks (their data
    records concatenated under a fresh block header; the compacted segment
    header only on ``m_0``).

    A block decoded from a buffer (``DecodedBlock.data``) contributes its data
    records as they were framed there — the same bytes re-framing would give,
    every record's CRC already checked by ``decode_block`` — so the merged
    object is one join: re-framing copied each payload three more times and
    CRC'd it once more (the LogStore compacts every byte it stages, on the same
    cores that take the appends; at 1 MiB × 16 that merge was 11% of a
    LogStore's samples, the largest item after idle waits)."""
    parts: list = []
    crc = length = 0
    for b in blocks:
        framed = b.framed(len(b.records))
        for piece in ([framed] if framed is not None else _raw_records(b)):
            crc = crc32(piece, crc)
            length += len(piece)
            parts.append(piece)
    first, last = blocks[0].header.first_entry_id, blocks[-1].header.last_entry_id
    hdr = BlockHeader(block_number, first, last, length, crc)
    head = HeaderRecord(first, FLAG_COMPACTED).encode() if with_header else b""
    return b"".join([head, hdr.encode(), *parts])


def _raw_records(b: DecodedBlock) -> list[bytes]:
    out = []
    for payload in b.records:
        tl = _TL.pack(RecordType.DATA, len(payload))
        out.append(struct.pack("<I", crc32(payload, crc32(tl))) + tl + bytes(payload))
    return out
