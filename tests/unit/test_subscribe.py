"""server/subscribe.py against a real LogStoreService (no network): what a
tail subscriber is sent, and that it is woken only when the LAC it may see moves."""
from __future__ import annotations

import asyncio

from logstore import Config
from logstore.rpc import (AddEntriesRequest, Code, CompleteSegmentRequest, LogEntry, SubscribeEntriesRequest,
                          UpdateLastAddConfirmedRequest)
from logstore.server.metrics import Metrics
from logstore.server.service import LogStoreService

B, R, LOG, SEG = "bkt", "root", 7, 0


def _svc(tmp_path) -> LogStoreService:
    return LogStoreService(Config.from_dict({"woodpecker.storage.rootPath": str(tmp_path)}), Metrics())


async def _append(svc: LogStoreService, first: int, n: int) -> None:
    req = AddEntriesRequest(B, R, LOG, [LogEntry(SEG, first + k, b"v%d" % (first + k)) for k in range(n)])
    async for _ in svc.AddEntries(req):
        pass


async def _lac(svc: LogStoreService, lac: int) -> None:
    await svc.subs.wrap("UpdateLastAddConfirmed", svc.UpdateLastAddConfirmed)(
        UpdateLastAddConfirmedRequest(B, R, LOG, SEG, lac))


def _wakeups(svc: LogStoreService) -> float:
    return svc.metrics.counters["picchio_logstore_subscription_wakeups_total"][()]


async def _until(cond, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def _next(stream, timeout: float = 2.0):
    return await asyncio.wait_for(stream.__anext__(), timeout)


async def test_only_entries_up_to_the_lac_in_order(tmp_path) -> None:
    svc = _svc(tmp_path)
    await _append(svc, 0, 3)
    stream = svc.SubscribeEntries(SubscribeEntriesRequest(B, R, LOG, SEG, from_entry_id=0))
    first = await _next(stream)  # live at once, nothing visible: entries durable here, no LAC yet
    assert first.status.code == Code.OK and first.entries == [] and first.lac == -1
    await _lac(svc, 1)
    f = await _next(stream)
    assert [(e.entryId, e.values) for e in f.entries] == [(0, b"v0"), (1, b"v1")] and f.lac == 1
    await _lac(svc, 4)  # the LAC runs ahead of this replica (it has up to 2): only what is durable here
    f = await _next(stream)
    assert [e.entryId for e in f.entries] == [2]
    pending = asyncio.ensure_future(_next(stream, 3))
    await _until(lambda: svc.subs._waiting)  # asleep: entry 3 is not here yet
    assert not pending.done()
    await _append(svc, 3, 3)  # durable here now, entries 3 and 4 under the LAC, 5 above it
    f = await pending if pending.done() else await asyncio.wait_for(pending, 2)
    assert [e.entryId for e in f.entries] == [3, 4]
    await svc.subs.wrap("CompleteSegment", svc.CompleteSegment)(CompleteSegmentRequest(B, R, LOG, SEG, 4))
    end = await _next(stream)
    assert end.status.code == Code.END_OF_FILE and end.entries == []
    await stream.aclose()
    await svc.close()


async def test_subscribers_wake_only_when_the_lac_moves(tmp_path) -> None:
    svc = _svc(tmp_path)
    await _append(svc, 0, 1)
    streams = [svc.SubscribeEntries(SubscribeEntriesRequest(B, R, LOG, SEG, from_entry_id=0)) for _ in range(50)]
    for s in streams:
        assert (await _next(s)).entries == []
    waits = [asyncio.ensure_future(_next(s, 5)) for s in streams]
    await _until(lambda: svc.subs._waiting)  # subscribers asleep on the segment's one future
    assert len(svc.subs._waiting) == 1 and svc.subs.open == 50
    for _ in range(20):  # LAC pushes that move nothing, appends above the LAC: nobody wakes
        await _lac(svc, -1)
    await _append(svc, 1, 1)
    assert _wakeups(svc) == 0 and not any(w.done() for w in waits)
    await _lac(svc, 1)
    frames = await asyncio.gather(*waits)
    assert _wakeups(svc) == 1 and all([e.entryId for e in f.entries] == [0, 1] for f in frames)
    for s in streams:
        await s.aclose()
    assert svc.subs.open == 0 and not svc.subs._waiting and not svc.subs._last
    await svc.close()


async def test_unknown_or_removed_segment_ends_the_stream(tmp_path) -> None:
    from logstore.rpc import CleanSegmentRequest
    svc = _svc(tmp_path)
    stream = svc.SubscribeEntries(SubscribeEntriesRequest(B, R, LOG, SEG, from_entry_id=0))
    assert (await _next(stream)).status.code == Code.NOT_FOUND
    await _append(svc, 0, 1)
    stream = svc.SubscribeEntries(SubscribeEntriesRequest(B, R, LOG, SEG, from_entry_id=0))
    assert (await _next(stream)).entries == []
    waiting = asyncio.ensure_future(_next(stream))
    await _until(lambda: svc.subs._waiting)
    await svc.subs.wrap("CleanSegment", svc.CleanSegment)(CleanSegmentRequest(B, R, LOG, SEG, 0))
    assert (await waiting).status.code == Code.NOT_FOUND
    await svc.close()


async def test_damaged_block_ends_the_stream_with_an_error_never_entries_or_eof(tmp_path) -> None:
    """A staged block whose bytes changed fails its CRC: the subscriber gets an
    error Status (its reader goes on from another replica or its ordinary
    read path) — neither the damaged entries nor an end of the segment."""
    svc = _svc(tmp_path)
    await _append(svc, 0, 2)
    await _lac(svc, 1)
    s = svc.segments[(B, R, LOG, SEG)]
    raw = bytearray(s.path.read_bytes())
    at = raw.rindex(b"v1")
    raw[at] ^= 0xFF
    with open(s.path, "r+b") as f:
        f.seek(at)
        f.write(bytes(raw[at:at + 1]))
    stream = svc.SubscribeEntries(SubscribeEntriesRequest(B, R, LOG, SEG, from_entry_id=0))
    f = await _next(stream)
    assert f.entries == [] and f.status.code not in (Code.OK, Code.END_OF_FILE), f
    assert "Corruption" in f.status.reason or "CRC" in f.status.reason.upper(), f.status.reason
    await stream.aclose()
    await svc.close()
