"""Many logs open in one client (Milvus: one per channel, hundreds): what each
costs must not grow with the number of logs (issue 12; ``picchio bench scale``)."""
from __future__ import annotations

import asyncio
import time

import pytest

import logstore


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
