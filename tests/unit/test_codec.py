"""Golden bytes: the codec is pinned to Woodpecker's documented layout
(shared/woodpecker-format.md §1).  Each golden string is also checked field by
field against the layout, so a wrong golden cannot hide a wrong encoder."""
import struct
import zlib

import pytest

from logstore.codec import (BlockBuilder, BlockHeader, Footer, HeaderRecord, IndexRecord, decode_block,
                            decode_record, merge_blocks, parse_footer, split_header)
from logstore.errors import CorruptionError
from logstore.proto import decode_layout, encode_layout

HEADER_GOLDEN = "5ade30bb011000000006000000000000000000000048445201"
BLOCK_HEADER_GOLDEN = "399cf6d9051c000000030000000a000000000000000c0000000000000064000000efbeadde"
INDEX_GOLDEN = "dc4c48890320000000030000001900000000000000890000000a000000000000000c00000000000000"
FOOTER_GOLDEN = ("4d6f1a9a042c0000000200000002000000f4010000000000009001000000000000"
                 "5200000006000000465452010c00000000000000")


def _frame(b: bytes) -> tuple[int, int, int, bytes]:
    crc, rtype, length = struct.unpack_from("<IBI", b)
    assert crc == zlib.crc32(b[4:]), "CRC covers type + length + payload"
    assert len(b) == 9 + length
    return crc, rtype, length, b[9:]


def test_header_record_golden():
    b = HeaderRecord(0).encode()
    assert b.hex() == HEADER_GOLDEN
    _, rtype, length, p = _frame(b)
    assert (rtype, length, len(b)) == (1, 16, 25)
    assert struct.unpack("<HHq4s", p) == (6, 0, 0, b"HDR\x01")


def test_block_header_golden():
    b = BlockHeader(3, 10, 12, 100, 0xDEADBEEF).encode()
    assert b.hex() == BLOCK_HEADER_GOLDEN
    _, rtype, length, p = _frame(b)
    assert (rtype, length, len(b)) == (5, 28, 37)
    assert struct.unpack("<iqqII", p) == (3, 10, 12, 100, 0xDEADBEEF)


def test_index_record_golden():
    b = IndexRecord(3, 25, 137, 10, 12).encode()
    assert b.hex() == INDEX_GOLDEN
    _, rtype, length, p = _frame(b)
    assert (rtype, length, len(b)) == (3, 32, 41)
    assert struct.unpack("<iqIqq", p) == (3, 25, 137, 10, 12)


def test_footer_v6_golden_and_v5_read():
    b = Footer(2, 2, 500, 400, 82, lac=12).encode()
    assert b.hex() == FOOTER_GOLDEN
    _, rtype, length, p = _frame(b)
    assert (rtype, length, len(b)) == (4, 44, 53)
    assert struct.unpack("<iIQQIHH4sq", p) == (2, 2, 500, 400, 82, 6, 0, b"FTR\x01", 12)
    f = parse_footer(b"junk" + b)
    assert f is not None and f.lac == 12 and f.has_lac and not f.compacted
    # a v5 footer (36-byte payload, no LAC) still parses, with LAC unset
    p5 = struct.pack("<iIQQIHH4s", 1, 1, 99, 0, 41, 5, 1, b"FTR\x01")
    tl = struct.pack("<BI", 4, len(p5))
    v5 = struct.pack("<I", zlib.crc32(tl + p5)) + tl + p5
    f5 = parse_footer(v5)
    assert f5 is not None and f5.version == 5 and f5.lac == -1 and not f5.has_lac and f5.compacted


def test_data_records_and_block_crc():
    bb = BlockBuilder()
    bb.add(b"hello", {"k": "v"})
    bb.add(b"world")
    data = bb.data()
    hdr = bb.header(0, 7)
    assert (hdr.first_entry_id, hdr.last_entry_id, hdr.block_length) == (7, 8, len(data))
    assert hdr.block_crc == zlib.crc32(data), "BlockCrc is the CRC of exactly the data records"
    # the first data record is a LogMessageLayout: field 1 payload, field 2 map entry
    _, rtype, length, p = _frame(data[:9 + data[5]])
    assert rtype == 2 and p.hex() == "0a0568656c6c6f12060a016b120176"
    blk = decode_block(hdr.encode() + data)
    assert blk is not None and blk.header == hdr
    assert [decode_layout(r) for r in blk.records] == [(b"hello", {"k": "v"}), (b"world", {})]


def test_layout_roundtrip_and_empty_payload():
    assert decode_layout(encode_layout(b"", {"only": "props"})) == (b"", {"only": "props"})
    assert encode_layout(b"x") == b"\x0a\x01x"


def test_incomplete_is_none_damage_raises():
    bb = BlockBuilder()
    bb.add(b"payload-bytes")
    raw = bb.header(0, 0).encode() + bb.data()
    assert decode_block(raw[:-1]) is None, "a tail still being written is not an error"
    assert decode_record(raw[:5]) is None
    damaged = bytearray(raw)
    damaged[-2] ^= 0xFF
    with pytest.raises(CorruptionError):
        decode_block(bytes(damaged))
    bad_header = bytearray(raw)
    bad_header[20] ^= 0x01
    with pytest.raises(CorruptionError):
        decode_block(bytes(bad_header))


def test_merge_blocks_sets_compacted_flag_and_keeps_entries():
    blocks = []
    first = 0
    for n in range(3):
        bb = BlockBuilder()
        for i in range(n + 1):
            bb.add(b"e%d-%d" % (n, i))
        blk = decode_block(bb.header(n, first).encode() + bb.data())
        blocks.append(blk)
        first += n + 1
    merged = merge_blocks(blocks, 0, with_header=True)
    hdr, off = split_header(merged)
    assert hdr.flags & 1 and hdr.first_entry_id == 0
    out = decode_block(merged, off)
    assert out.header.first_entry_id == 0 and out.header.last_entry_id == 5
    assert [decode_layout(r)[0] for r in out.records] == [b"e0-0", b"e1-0", b"e1-1", b"e2-0", b"e2-1", b"e2-2"]
