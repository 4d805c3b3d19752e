"""Tail push (issue 12 item 4): a reader in another process is woken when the
writer appends — inotify for local storage, an etcd watch of the log's tail key
for MinIO and service mode — instead of at its next storage poll.

The poll interval is set to 5 s everywhere an arrival is timed, so an entry
that reaches the other process within 1 s can only have come by the push
(service mode: tests/service/test_tail_push_service.py).  Losing the push
(etcd restarted) leaves readers polling, with no error; closing readers (or
the client) leaves no task, etcd watch or inotify descriptor."""
from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import replace

import pytest

import logstore
from logstore import LATEST
from logstore.dev.etcd import start_etcd
from logstore.tailpush import _Inotify
from tail_push_child import arrivals

SLOW_POLL = {"woodpecker.client.reader.storagePollInterval": "5s",
             "woodpecker.client.tailPush.etcdNotify": True}  # minio: the writer's etcd bump is opt-in
DEADLINE = 1.0


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_reader_in_another_process_is_woken(make_config, kind):
    took = await arrivals(make_config(kind, **SLOW_POLL))
    assert max(took) < DEADLINE, f"entries reached the other process after {took}s (poll every 5 s)"


def _restart(server) -> None:
    """Stop etcd and start it again on the same ports and data directory."""
    server.proc.stop()
    server.proc = replace(server.proc, popen=None).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{server.endpoint}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(server.proc.tail())


async def test_lost_watch_falls_back_to_polling(make_config, tmp_path):
    """etcd restarts under a waiting reader: entries keep arriving by the poll,
    no error surfaces, and the watch comes back on its own."""
    own = start_etcd(tmp_path, name="tail-etcd")
    try:
        cfg = make_config("minio", **{"etcd.endpoints": [own.endpoint],
                                      "woodpecker.client.reader.storagePollInterval": "300ms",
                                      "woodpecker.client.tailPush.etcdNotify": True})
        async with logstore.Client(cfg) as wc, logstore.Client(cfg) as rc:
            log = await wc.create_log("restart")
            w = await log.open_writer()
            r = await (await rc.open_log("restart")).open_reader(LATEST)
            with pytest.raises(TimeoutError):
                await r.read_next(timeout=0.3)
            push = rc.hub_for(log.log_id).push
            assert push.watching and push.watches_made == 1
            await asyncio.to_thread(own.proc.stop)
            await w.append(b"during")  # block PUTs need no etcd
            assert (await r.read_next(timeout=5)).payload == b"during"
            assert not push.watching
            await asyncio.to_thread(_restart, own)
            await w.append(b"after")
            assert (await r.read_next(timeout=5)).payload == b"after"
            for _ in range(100):  # the watch is made again (its retry pause grows to at most 10 s)
                if push.watching:
                    break
                await asyncio.sleep(0.2)
            assert push.watching and push.watches_made >= 2
            await r.close()
            await w.close()
    finally:
        own.stop()


def _tail_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("picchio-tailpush") and not t.done()]


async def test_closing_readers_leaves_no_watch_or_task(make_config):
    cfg = make_config("minio")
    async with logstore.Client(cfg) as wc, logstore.Client(cfg) as rc:
        log = await wc.create_log("leaks")
        w = await log.open_writer()
        handle = await rc.open_log("leaks")
        readers = [await handle.open_reader(LATEST) for _ in range(3)]
        for r in readers:
            with pytest.raises(TimeoutError):
                await r.read_next(timeout=0.3)
        assert len(_tail_tasks()) == 1, "one watch per log and client, whatever the number of readers"
        assert len(rc.meta.client._watcher._callbacks) == 1
        for r in readers[:2]:
            await r.close()
        assert len(_tail_tasks()) == 1
        await readers[2].close()
        assert _tail_tasks() == [] and rc.meta.client._watcher._callbacks == {}
        # a reader left open ends with its client
        left = await handle.open_reader(LATEST)
        with pytest.raises(TimeoutError):
            await left.read_next(timeout=0.3)
        assert len(_tail_tasks()) == 1
        await w.close()
    assert _tail_tasks() == []


async def test_closing_local_readers_drops_inotify(make_config):
    cfg = make_config("local", **SLOW_POLL)
    async with logstore.Client(cfg) as wc, logstore.Client(cfg) as rc:
        log = await wc.create_log("local-leaks")
        w = await log.open_writer()
        await w.append(b"x")
        readers = [await (await rc.open_log("local-leaks")).open_reader(LATEST) for _ in range(2)]
        for r in readers:
            with pytest.raises(TimeoutError):
                await r.read_next(timeout=0.2)
        ino = _Inotify._loops.get(asyncio.get_running_loop())
        assert ino is not None and ino.subs, "waiting readers watch the log and segment directories"
        t = asyncio.create_task(readers[0].read_next(timeout=3))
        await asyncio.sleep(0.1)
        await w.append(b"y")
        assert (await asyncio.wait_for(t, DEADLINE)).payload == b"y"
        for r in readers:
            await r.close()
        assert asyncio.get_running_loop() not in _Inotify._loops and ino.ino.closed
        await w.close()
