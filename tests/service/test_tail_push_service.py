"""Tail push in service mode: the writer bumps the log's etcd tail key once the
LAC reached the LogStores, and a reader in another process — polling only every
5 s — gets the entry within 1 s (see tests/integration/test_tail_push.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "tail_push_child", Path(__file__).parents[1] / "integration" / "tail_push_child.py")
assert _spec is not None and _spec.loader is not None
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)


async def test_reader_in_another_process_is_woken_service_mode(service_cluster):
    cluster = service_cluster(**{"woodpecker.client.reader.storagePollInterval": "5s",
                                 "woodpecker.client.tailPush.etcdNotify": True})
    took = await child.arrivals(cluster.config)
    assert max(took) < 1.0, f"entries reached the other process after {took}s (poll every 5 s)"


async def test_reader_follows_segment_rolls_service_mode(service_cluster):
    """Every entry in a new segment, metadata polled every 10 s: the reader
    learns of each segment from the push's ``seg:lac`` value, not the poll."""
    cluster = service_cluster(**{"woodpecker.client.reader.storagePollInterval": "5s",
                                 "woodpecker.client.tailPush.etcdNotify": True,
                                 "woodpecker.client.reader.metaPollInterval": "10s",
                                 "woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    took = await child.arrivals(cluster.config)
    assert max(took) < 1.0, f"entries in new segments reached the other process after {took}s"


async def test_bump_before_the_watch_exists_is_not_lost(service_cluster):
    """The writer rolls and appends before the reader's watch is made: the
    watch starts by reading the key's value, so the reader still learns of
    the new segment at once (not at the 10 s metadata poll)."""
    import logstore

    cluster = service_cluster(**{"woodpecker.client.reader.storagePollInterval": "5s",
                                 "woodpecker.client.tailPush.etcdNotify": True,
                                 "woodpecker.client.reader.metaPollInterval": "10s",
                                 "woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    async with logstore.Client(cluster.config) as wc, logstore.Client(cluster.config) as rc:
        w = await (await wc.create_log("early")).open_writer()
        await w.append(b"first")
        reader = await (await rc.open_log("early")).open_reader(logstore.LATEST)
        await w.append(b"second")  # a new segment, announced before the reader ever waited
        assert (await reader.read_next(timeout=2)).payload == b"second"
        await reader.close()
        await w.close()
