"""Segments laid out by hand exactly as Woodpecker writes them (facts from
shared/woodpecker-format.md, bytes packed here with struct — not with our
encoder) are read back by picchio's reader."""
import struct
import time
import zlib
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST
from logstore.proto import SegmentMetadata, SegmentState


def rec(rtype: int, payload: bytes) -> bytes:
    tl = struct.pack("<BI", rtype, len(payload))
    return struct.pack("<I", zlib.crc32(tl + payload)) + tl + payload


def layout(payload: bytes) -> bytes:  # LogMessageLayout{payload=1}
    assert len(payload) < 128
    return b"\x0a" + bytes([len(payload)]) + payload


def header(first: int = 0, flags: int = 0) -> bytes:
    return rec(1, struct.pack("<HHq4s", 6, flags, first, b"HDR\x01"))


def block(number: int, first: int, entries: list[bytes]) -> bytes:
    data = b"".join(rec(2, layout(e)) for e in entries)
    return rec(5, struct.pack("<iqqII", number, first, first + len(entries) - 1, len(data), zlib.crc32(data))) + data


def index(number: int, start: int, size: int, first: int, last: int) -> bytes:
    return rec(3, struct.pack("<iqIqq", number, start, size, first, last))


def footer_v6(blocks: int, records: int, total: int, ioff: int, ilen: int, lac: int, flags: int = 0) -> bytes:
    return rec(4, struct.pack("<iIQQIHH4sq", blocks, records, total, ioff, ilen, 6, flags, b"FTR\x01", lac))


def footer_v5(blocks: int, records: int, total: int, ioff: int, ilen: int) -> bytes:
    return rec(4, struct.pack("<iIQQIHH4s", blocks, records, total, ioff, ilen, 5, 0, b"FTR\x01"))


ENTRIES = [[b"a0", b"a1", b"a2"], [b"b3", b"b4"]]


async def _register(c, name: str, last: int, size: int, state=SegmentState.COMPLETED):
    h = await c.create_log(name)
    ok = await c.meta.create_segment(name, SegmentMetadata(seg_no=0, create_time=int(time.time() * 1000),
                                                           state=state, last_entry_id=last, size=size))
    assert ok
    return h


async def _read_all(h, n):
    r = await h.open_reader(EARLIEST)
    return [(str(m.id), m.payload) for m in [await r.read_next(timeout=3) for _ in range(n)]]


WANT = [("0:0", b"a0"), ("0:1", b"a1"), ("0:2", b"a2"), ("0:3", b"b3"), ("0:4", b"b4")]


@pytest.mark.parametrize("variant", ["v6", "v5", "garbage-before-index"])
async def test_local_data_log_as_woodpecker_writes_it(make_config, variant):
    cfg = make_config("local")
    async with logstore.Client(cfg) as c:
        h = await _register(c, f"wp-{variant}", 4, 0)
        b0, b1 = block(0, 0, ENTRIES[0]), block(1, 3, ENTRIES[1])
        body = header(0) + b0
        off1 = len(body)
        body += b1
        if variant == "garbage-before-index":
            body += b"\x00garbage left by a recovered writer\x00"  # Woodpecker does not cut it
        ioff = len(body)
        idx = index(0, 25, len(b0), 0, 2) + index(1, off1, len(b1), 3, 4)
        total = ioff + len(idx)
        foot = footer_v5(2, 2, total, ioff, len(idx)) if variant == "v5" else footer_v6(2, 2, total, ioff, len(idx), 4)
        d = Path(cfg["woodpecker.storage.rootPath"]) / cfg["minio.rootPath"] / str(h.log_id) / "0"
        d.mkdir(parents=True)
        (d / "data.log").write_bytes(body + idx + foot)
        assert await _read_all(h, 5) == WANT
        assert await h.last_id() == logstore.MessageId(0, 4)


@pytest.mark.parametrize("compacted", [False, True])
async def test_objects_as_woodpecker_writes_them(make_config, compacted):
    cfg = make_config("minio")
    async with logstore.Client(cfg) as c:
        h = await _register(c, f"wp-obj-{compacted}", 4, 0,
                            SegmentState.SEALED if compacted else SegmentState.COMPLETED)
        s3, key = c.backend.s3, lambda n: c.backend.key(h.log_id, 0, n)
        if compacted:
            m0 = header(0, flags=1) + block(0, 0, ENTRIES[0] + ENTRIES[1])
            await s3.put(key("m_0.blk"), m0)
            idx = index(0, 0, len(m0), 0, 4)
            await s3.put(key("footer.blk"), idx + footer_v6(1, 2, len(m0), 0, len(idx), 4, flags=1))
        else:
            o0, o1 = header(0) + block(0, 0, ENTRIES[0]), block(1, 3, ENTRIES[1])
            await s3.put(key("0.blk"), o0)
            await s3.put(key("1.blk"), o1)
            # object footers: StartOffset holds the block id, TotalSize the sum of object sizes
            idx = index(0, 0, len(o0), 0, 2) + index(1, 1, len(o1), 3, 4)
            await s3.put(key("footer.blk"), idx + footer_v6(2, 2, len(o0) + len(o1), 0, len(idx), 4))
        assert await _read_all(h, 5) == WANT


async def test_active_object_segment_with_fence_object(make_config):
    """No footer yet: blocks are probed from 0.blk and a fence object ends them."""
    cfg = make_config("minio")
    async with logstore.Client(cfg) as c:
        h = await _register(c, "wp-active", -1, 0, SegmentState.ACTIVE)
        s3, key = c.backend.s3, lambda n: c.backend.key(h.log_id, 0, n)
        await s3.put(key("0.blk"), header(0) + block(0, 0, ENTRIES[0]))
        await s3.put(key("1.blk"), b"F", metadata={"Fenced": "true"})
        await s3.put(key("2.blk"), block(2, 3, ENTRIES[1]))  # beyond the fence: never read
        assert await h.last_id() == logstore.MessageId(0, 2)
        r = await h.open_reader(EARLIEST)
        got = [(await r.read_next(timeout=3)).payload for _ in range(3)]
        assert got == ENTRIES[0]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.3)
        # a writer takes over: recovery finds the fence, completes the segment with LAC 2
        async with await h.open_writer() as w:
            mid = await w.append(b"next")
        assert mid == logstore.MessageId(1, 0)
        segs = await h.segments()
        assert segs[0].last_entry_id == 2 and segs[0].state in ("Completed", "Sealed")
