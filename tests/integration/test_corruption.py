"""Damaged bytes raise CorruptionError naming log, segment and block — they
never read as end-of-log and never hang a reader."""
import asyncio

import pytest

import logstore
from logstore import EARLIEST


async def _write(c, name, n=6, close=True, **_):
    log = await c.create_log(name)
    w = await log.open_writer()
    for i in range(n):
        await w.append(b"entry-%03d" % i * 20)
    if close:
        await w.close()
    return log, w


def _flip_local(cfg, log_id, seg_id, offset_from_start):
    from pathlib import Path
    p = Path(cfg["woodpecker.storage.rootPath"]) / cfg["minio.rootPath"] / str(log_id) / str(seg_id) / "data.log"
    raw = bytearray(p.read_bytes())
    raw[offset_from_start] ^= 0x5A
    p.write_bytes(bytes(raw))


@pytest.mark.parametrize("close", [True, False], ids=["completed", "active"])
async def test_local_flipped_byte_raises(make_config, close):
    cfg = make_config("local")
    async with logstore.Client(cfg) as c:
        log, w = await _write(c, "rot", close=close)
        _flip_local(cfg, log.log_id, 0, 25 + 37 + 30)  # inside block 0's data
        async with logstore.Client(cfg) as other:  # reads from storage, not from the writer's memory
            r = await (await other.open_log("rot")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError) as e:
                await r.read_next(timeout=5)
        msg = str(e.value)
        assert "segment=0" in msg and "block=" in msg and f"log={log.log_id}" in msg
        if not close:
            await w.close()


@pytest.mark.cluster
async def test_object_flipped_byte_and_truncated_object_raise(make_config):
    cfg = make_config("minio", **{"woodpecker.logstore.segmentCompactionPolicy.enabled": False})
    async with logstore.Client(cfg) as c:
        log, _ = await _write(c, "rot")
        s3 = c.backend.s3
        key = c.backend.key(log.log_id, 0, "0.blk")
        raw, _ = await s3.get(key)
        bad = bytearray(raw)
        bad[-3] ^= 0x01
        await s3.put(key, bytes(bad))
        async with logstore.Client(cfg) as other:
            r = await (await other.open_log("rot")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError) as e:
                await r.read_next(timeout=5)
            assert "segment=0" in str(e.value) and "0.blk" in str(e.value)
            await s3.put(key, raw[:-10])
            r = await (await other.open_log("rot")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError):
                await r.read_next(timeout=5)


@pytest.mark.cluster
async def test_object_corrupt_footer_raises(make_config):
    cfg = make_config("minio")
    async with logstore.Client(cfg) as c:
        log, _ = await _write(c, "rot")
        key = c.backend.key(log.log_id, 0, "footer.blk")
        raw, _ = await c.backend.s3.get(key)
        await c.backend.s3.put(key, raw[:-1] + bytes([raw[-1] ^ 0xFF]))
        async with logstore.Client(cfg) as other:
            r = await (await other.open_log("rot")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError) as e:
                await r.read_next(timeout=5)
            assert "footer" in str(e.value)


@pytest.mark.cluster
async def test_object_segment_readable_while_compacted_and_after(make_config):
    """A reader half-way through a completed segment, its cursor on the original
    block objects, while compaction replaces them with m_k.blk and deletes them:
    it goes on from where it was, nothing skipped or repeated."""
    cfg = make_config("minio", **{"woodpecker.logstore.segmentCompactionPolicy.enabled": False,
                                  "woodpecker.logstore.segmentCompactionPolicy.maxBytes": 3_000_000,
                                  "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 1})
    big = 1 << 20  # one entry a block, and a reader batch (4 MiB) holds only a few of them
    async with logstore.Client(cfg) as c, logstore.Client(cfg) as other:
        log = await c.create_log("compact")
        async with await log.open_writer() as w:
            ids = [await w.append(b"%04d" % i * (big // 4)) for i in range(12)]
        r = await (await other.open_log("compact")).open_reader(EARLIEST)
        first = [await r.read_next(timeout=10) for _ in range(2)]
        assert r._cursor is not None and not r._cursor.compacted and r._cursor.next_entry < 12, \
            "the reader still has original blocks to fetch"
        await log.compact_segment(0)  # merges into m_k.blk and deletes the originals under the reader
        keys = [o.key.rsplit("/", 1)[1] for o in await c.backend.s3.list(c.backend.key(log.log_id, 0, ""))]
        assert "footer.blk" in keys and any(k.startswith("m_") for k in keys)
        assert not any(k[0].isdigit() for k in keys), "original blocks deleted after compaction"
        assert (await log.segments())[0].state == "Sealed"
        rest = [await r.read_next(timeout=10) for _ in range(10)]
        assert [m.id for m in first + rest] == ids
        assert [m.payload for m in first + rest] == [b"%04d" % i * (big // 4) for i in range(12)]
        again = await (await other.open_log("compact")).open_reader(EARLIEST)  # and after, from the start
        assert [(await again.read_next(timeout=10)).id for _ in range(12)] == ids


def _data_log(cfg, log_id, seg_id):
    from pathlib import Path
    return Path(cfg["woodpecker.storage.rootPath"]) / cfg["minio.rootPath"] / str(log_id) / str(seg_id) / "data.log"


@pytest.mark.parametrize("cut", ["half", "last-300-bytes", "footer-only", "all"])
async def test_local_completed_segment_with_lost_tail_raises_and_later_segments_stay_readable(make_config, cut):
    """A completed segment's data.log that lost its tail (a torn copy, a bad
    restore) is CorruptionError — not 0 entries, not a reader waiting forever —
    and the intact segments after it can still be read."""
    cfg = make_config("local", **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 4})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("torn")
        async with await log.open_writer() as w:
            ids = [await w.append(b"entry-%03d" % i * 30) for i in range(12)]  # segments 0, 1, 2
        assert {i.segment_id for i in ids} == {0, 1, 2}
        p = _data_log(cfg, log.log_id, 1)
        raw = p.read_bytes()
        keep = {"half": len(raw) // 2, "last-300-bytes": len(raw) - 300, "footer-only": len(raw) - 20, "all": 0}[cut]
        p.write_bytes(raw[:keep])
        async with logstore.Client(cfg) as other:
            h = await other.open_log("torn")
            r = await h.open_reader(EARLIEST)
            got = [(await r.read_next(timeout=5)).id for _ in range(4)]
            assert got == ids[:4]
            with pytest.raises(logstore.CorruptionError) as e:
                await r.read_next(timeout=5)
            assert "segment=1" in str(e.value) and f"log={log.log_id}" in str(e.value)
            later = await h.open_reader(logstore.MessageId(2, 0))
            assert [(await later.read_next(timeout=5)).id for _ in range(4)] == ids[8:]
            # a tailing reader (no timeout) gets the error too, instead of waiting forever
            tail = await h.open_reader(logstore.MessageId(1, 0))
            with pytest.raises(logstore.CorruptionError):
                await asyncio.wait_for(tail.read_next(), 10)


async def test_local_completed_segment_with_damaged_index_raises(make_config):
    cfg = make_config("local")
    async with logstore.Client(cfg) as c:
        log, _ = await _write(c, "idx")
        p = _data_log(cfg, log.log_id, 0)
        raw = bytearray(p.read_bytes())
        raw[-70] ^= 0x21  # inside the index record just before the footer
        p.write_bytes(bytes(raw))
        async with logstore.Client(cfg) as other:
            r = await (await other.open_log("idx")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError) as e:
                await r.read_next(timeout=5)
            assert "segment=0" in str(e.value)


@pytest.mark.cluster
async def test_object_completed_segment_missing_footer_raises(make_config):
    cfg = make_config("minio", **{"woodpecker.logstore.segmentCompactionPolicy.enabled": False})
    async with logstore.Client(cfg) as c:
        log, _ = await _write(c, "nofoot")
        await c.backend.s3.delete_many([c.backend.key(log.log_id, 0, "footer.blk")])
        async with logstore.Client(cfg) as other:
            r = await (await other.open_log("nofoot")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError) as e:
                await asyncio.wait_for(r.read_next(), 10)
            assert "footer" in str(e.value) and f"log={log.log_id}" in str(e.value)


async def test_local_completed_segment_missing_its_file_raises(make_config):
    cfg = make_config("local")
    async with logstore.Client(cfg) as c:
        log, _ = await _write(c, "gone")
        _data_log(cfg, log.log_id, 0).unlink()
        async with logstore.Client(cfg) as other:
            r = await (await other.open_log("gone")).open_reader(EARLIEST)
            with pytest.raises(logstore.CorruptionError) as e:
                await asyncio.wait_for(r.read_next(), 10)
            assert "missing" in str(e.value) and "segment=0" in str(e.value)


@pytest.mark.cluster
async def test_object_block_missing_in_the_middle_raises(make_config):
    cfg = make_config("minio", **{"woodpecker.logstore.segmentCompactionPolicy.enabled": False,
                                  "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 1})
    async with logstore.Client(cfg) as c:
        log, _ = await _write(c, "hole")  # one block per entry
        await c.backend.s3.delete_many([c.backend.key(log.log_id, 0, "2.blk")])
        async with logstore.Client(cfg) as other:
            r = await (await other.open_log("hole")).open_reader(EARLIEST)
            got = []
            with pytest.raises(logstore.CorruptionError) as e:
                for _ in range(6):
                    got.append(await asyncio.wait_for(r.read_next(), 10))
            assert len(got) <= 2 and "missing" in str(e.value) and "segment=0" in str(e.value)
