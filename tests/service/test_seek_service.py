"""Seek by time in service mode: segments already compacted into object
storage are searched by block, the active one on its LogStores entry by entry —
against the same layout and oracle as the embedded tests."""
import sys
from pathlib import Path

import logstore
from logstore import MessageId
from logstore.seek import position_at

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_seek_time import BASE, _build, _oracle  # noqa: E402  (one layout and one oracle for every mode)


async def test_seek_by_time_in_service_mode(service_cluster):
    cluster = service_cluster()
    async with logstore.Client(cluster.config) as c:
        log, writer, entries = await _build(c, "seek-svc")
        states = [s.state for s in await log.segments()]
        assert states == ["Sealed", "Sealed", "Active"], "both paths: object storage and the LogStores"
        for _, t in entries:
            for probe in (t - 1, t, t + 1):
                assert await position_at(log, probe) == (_oracle(entries, probe) or MessageId(2, 2)), probe
        r = await log.open_reader(at=BASE + 2005)
        assert (await r.read_next(timeout=5)).id == MessageId(2, 1)
        await r.close()
        ranges = [(s.first_time, s.last_time) for s in await log.segments(times=True)]
        assert ranges == [(BASE, BASE + 50), (BASE + 1000, BASE + 1020), (BASE + 2000, BASE + 2010)]
        await writer.close()
