"""A LogStore's staged-bytes total is kept as segments change (server/service.py
``_staged``), so each append's disk check is O(1) rather than a sum over every
segment it holds (found by ``picchio bench scale``: O(logs) work per append).
The total must stay equal to that sum through writes, footers, compaction and
removal — the disk budget's soft and hard limits are read from it."""
import asyncio

from logstore import Config
from logstore.server.metrics import Metrics
from logstore.server.service import LogStoreService


def _recount(svc: LogStoreService) -> int:
    return sum(s.bytes for s in svc.segments.values() if not s.compacted) + sum(svc._on_disk.values())


def test_the_total_follows_writes_footers_compaction_and_removal(tmp_path):
    async def go() -> None:
        cfg = Config({"woodpecker.storage.rootPath": str(tmp_path), "woodpecker.logstore.disk.maxBytes": "1G"})
        svc = LogStoreService(cfg, Metrics())
        keys = [("b", "r", log_id, 0) for log_id in range(5)]
        for i, k in enumerate(keys):
            s = svc.segment(k)
            await s.append(0, [b"x" * (1000 * (i + 1))])
            await s.append(1, [b"y" * 500, b"z" * 700])
        assert svc._staged_total == _recount(svc) > 5 * 1700
        assert abs(svc.disk_usage() - _recount(svc) / svc.max_bytes) < 1e-12

        await asyncio.to_thread(svc.segments[keys[0]]._write_footer, 2)  # a footer adds its bytes
        assert svc._staged_total == _recount(svc)

        compacted = svc.segments[keys[1]]
        await asyncio.to_thread(compacted.mark_compacted)  # its data left for object storage
        assert compacted.bytes > 0 and svc._staged_total == _recount(svc)

        svc._drop(keys[2]).close()  # removed (CleanSegment / MarkLogDeleted)
        svc._drop(keys[1]).close()  # a compacted one removed: nothing more to subtract
        assert svc._staged_total == _recount(svc)
        assert svc._staged_total == sum(svc.segments[k].bytes for k in (keys[0], keys[3], keys[4]))
        assert svc.usage_ratio() == svc.disk_usage()  # nothing accepted and unwritten
        for s in list(svc.segments.values()):
            s.close()

    asyncio.run(go())


def test_segments_found_on_disk_count_until_opened(tmp_path):
    """Segments staged by an earlier process count from the start; opening one
    moves its bytes from the on-disk scan to the running total, once."""
    async def go() -> None:
        cfg = Config({"woodpecker.storage.rootPath": str(tmp_path), "woodpecker.logstore.disk.maxBytes": "1G"})
        first = LogStoreService(cfg, Metrics())
        for log_id in range(3):
            s = first.segment(("b", "r", log_id, 0))
            await s.append(0, [b"q" * 4000])
            s.close()
        before = _recount(first)
        again = LogStoreService(cfg, Metrics())
        assert again._on_disk_bytes == before and again._staged_total == 0
        assert again.disk_usage() == before / again.max_bytes
        again.segment(("b", "r", 1, 0))
        assert again._staged_total + again._on_disk_bytes == before == _recount(again)
        for s in list(again.segments.values()):
            s.close()

    asyncio.run(go())
