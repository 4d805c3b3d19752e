"""Many logs open in one client (Milvus: one per channel, hundreds): what each
costs must not grow with the number of logs (issue 12; ``picchio bench scale``)."""
from __future__ import annotations

import asyncio
import errno
import time

import pytest

import logstore
from logstore.storage.segfile import SegmentFile


async def test_many_logs_created_at_once_on_one_client(make_config):
    """Log ids come from one CAS'd counter: 300 creations at once used to lose
    the race to each other until one gave up ("lost the log-id race 50 times")."""
    async with logstore.Client(make_config("local")) as c:
        handles = await asyncio.gather(*(c.create_log(f"ch-{i}") for i in range(300)))
        assert len({h.log_id for h in handles}) == 300


async def test_idle_writers_share_one_poll_and_still_see_deletion(make_config):
    """Idle writers are polled together: one etcd transaction a round for all
    of them, not one get (and a timer) per writer per metaPollInterval.  A log
    deleted — or deleted and made anew — by another client still stops its
    writer within about metaPollInterval; the others are untouched."""
    cfg = make_config("local", woodpecker__client__reader__metaPollInterval="100ms")
    async with logstore.Client(cfg) as c, logstore.Client(cfg) as other:
        handles = [await c.create_log(f"idle-{i}") for i in range(30)]
        writers = [await h.open_writer() for h in handles]
        calls: dict[str, int] = {}
        inner = c.meta._call

        async def counting(what, fn):
            calls[what] = calls.get(what, 0) + 1
            return await inner(what, fn)

        c.meta._call = counting
        await asyncio.sleep(1.0)
        polls = calls.get("get log", 0) + calls.get("get logs", 0)
        assert 3 <= polls <= 15, calls  # ~10 rounds of one request; per-writer polling made ~300
        await other.delete_log("idle-3")
        await other.delete_log("idle-7")
        await other.create_log("idle-7")  # same name, another log
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not (writers[3]._error and writers[7]._error):
            await asyncio.sleep(0.05)
        for i in (3, 7):
            with pytest.raises(logstore.LogNotFoundError):
                await writers[i].append(b"x")
        for i in (0, 29):
            await writers[i].append(b"still fine")
        for w in writers:
            await w.close()


async def test_blocks_sent_straight_from_append_keep_order_and_group_commit(make_config):
    """Many logs, one append in flight per log at a time: each block holds one
    entry and is sent by the append itself (writer.py ``_send_direct``), not by
    the flush loop.  Appends issued in one turn still share a block; every
    acknowledged entry reads back under its id, in call order, per log."""
    cfg = make_config("local")
    async with logstore.Client(cfg) as c:
        handles = [await c.create_log(f"direct-{i}") for i in range(24)]
        writers = [await h.open_writer() for h in handles]
        acked: list[list] = [[] for _ in writers]

        async def one_at_a_time(i: int) -> None:
            for k in range(15):
                acked[i].append((await writers[i].append(b"%d/%d" % (i, k)), b"%d/%d" % (i, k)))

        await asyncio.gather(*(one_at_a_time(i) for i in range(24)))
        # a burst in one turn: one block, as when the flush loop sent it
        burst = await asyncio.gather(*(writers[0].append(b"burst-%d" % k) for k in range(5)))
        assert len({m.segment_id for m in burst}) == 1
        assert [m.entry_id for m in burst] == list(range(burst[0].entry_id, burst[0].entry_id + 5))
        acked[0] += list(zip(burst, [b"burst-%d" % k for k in range(5)]))
        direct = sum(w.direct_blocks for w in writers)
        for w in writers:
            await w.close()
        assert direct >= 24 * 15 * 0.9, f"only {direct} of {24 * 15} one-entry blocks went straight from append"
        if c.backend.group is not None:
            assert c.backend.group.blocks > 0, "the direct blocks went through the group commit"
        for i, h in enumerate(handles):
            r = await h.open_reader(logstore.EARLIEST)
            got = [await r.read_next(timeout=5) for _ in acked[i]]
            assert [(m.id, m.payload) for m in got] == acked[i]
            with pytest.raises(TimeoutError):
                await r.read_next(timeout=0.2)


async def test_a_direct_block_whose_write_fails_once_is_retried_in_place(make_config, monkeypatch):
    """An I/O error on a block sent straight from append gets the flush path's
    retries (``maxFlushRetries``): the append succeeds once, in the same
    segment, and the entry is stored exactly once."""
    cfg = make_config("local", woodpecker__logstore__segmentSyncPolicy__retryInterval="10ms")
    async with logstore.Client(cfg) as c:
        h = await c.create_log("direct-eio")
        w = await h.open_writer()
        first = await w.append(b"first")
        real = SegmentFile.write_block
        failures = []

        def flaky(self, header, pieces):
            if not failures:
                failures.append(header.block_number)
                raise OSError(errno.EIO, "injected I/O error")
            return real(self, header, pieces)

        monkeypatch.setattr(SegmentFile, "write_block", flaky)
        before = w.direct_blocks
        second = await w.append(b"second")
        monkeypatch.setattr(SegmentFile, "write_block", real)
        third = await w.append(b"third")
        await w.close()
        assert failures == [1], failures
        if c.backend.group is not None:
            assert w.direct_blocks > before, "the failing block was meant to go straight from append"
        assert (second.segment_id, second.entry_id) == (first.segment_id, 1)
        r = await h.open_reader(logstore.EARLIEST)
        got = [await r.read_next(timeout=5) for _ in range(3)]
        assert [(m.id, m.payload) for m in got] == [(first, b"first"), (second, b"second"), (third, b"third")]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.2)
