"""WriteBatch (rpc.WriteBatchRequest, storage/node.py): the writes of many
segments bound for one LogStore in one call, on real LogStores.  Each item must
be treated exactly as its own RPC would be — its own instance check, its own
failure — and many logs writing through it must lose nothing when a LogStore
dies under them."""
from __future__ import annotations

import asyncio

import pytest

import logstore
from logstore import EARLIEST
from logstore.rpc import (AddEntriesRequest, AddEntryState, Code, GetBatchEntriesAdvRequest, LogEntry,
                          UpdateLastAddConfirmedRequest)
from logstore.storage.node import Node, NodeError


async def test_items_of_one_call_succeed_and_fail_alone(service_cluster):
    cl = service_cluster(1)
    node = Node(cl.logstores[0].endpoint, cl.config)
    try:
        first = await node.call("AddEntries", AddEntriesRequest("b", "r", 1, [LogEntry(0, 0, b"a0")]), 10)
        me = first.instance
        # one turn of the event loop: three requests, one call
        a = node.write("AddEntries", AddEntriesRequest("b", "r", 1, [LogEntry(0, 1, b"a1")]), 10, me, (1, 0))
        b = node.write("AddEntries", AddEntriesRequest("b", "r", 2, [LogEntry(0, 0, b"b0")]), 10, "not-" + me, (2, 0))
        lac = node.write("UpdateLastAddConfirmed", UpdateLastAddConfirmedRequest("b", "r", 1, 0, 1), 10, me, (1, 0))
        got = await asyncio.gather(a, b, lac, return_exceptions=True)
        assert (node.batches, node.batched) == (1, 3), "the three requests should have gone as one WriteBatch"
        assert not isinstance(got[0], BaseException) and got[0].state == AddEntryState.SYNCED, got[0]
        assert isinstance(got[1], NodeError) and got[1].code == Code.WRONG_INSTANCE, got[1]
        assert not isinstance(got[2], BaseException), got[2]
        read = await node.call("GetBatchEntriesAdv", GetBatchEntriesAdvRequest("b", "r", 1, 0, 0, 10), 10, me)
        assert [bytes(e.values) for e in read.result.entries] == [b"a0", b"a1"], "both entries, LAC 1, in order"
        with pytest.raises(NodeError) as e:  # the refused item must have written nothing, not even a segment
            await node.call("GetBatchEntriesAdv", GetBatchEntriesAdvRequest("b", "r", 2, 0, 0, 10), 10)
        assert e.value.code == Code.NOT_FOUND, e.value
    finally:
        await node.close()


async def test_many_logs_through_write_batch_lose_nothing_when_a_logstore_dies(service_cluster):
    cl = service_cluster(4)  # a fourth LogStore: segments re-placed after the kill still get three replicas
    logs, rounds = 12, 30
    async with logstore.Client(cl.config) as c:
        handles = [await c.create_log(f"wb{i}") for i in range(logs)]
        writers = [await h.open_writer() for h in handles]
        acked: list[list] = [[] for _ in range(logs)]

        async def one(i: int, r: int) -> None:
            acked[i].append((r, await writers[i].append(b"%d:%d" % (i, r))))

        for r in range(rounds):
            if r == rounds // 3:
                cl.logstores[0].kill()  # SIGKILL, mid-stream: its replicas' in-flight items fail with it
            await asyncio.gather(*(one(i, r) for i in range(logs)))
        nodes = c.backend._nodes.values()  # type: ignore[attr-defined]
        assert sum(n.batches for n in nodes) > 0 and sum(n.batched for n in nodes) > sum(n.batches for n in nodes), \
            "the writes of different logs should have shared WriteBatch calls"
        for w in writers:
            await w.close()
        for i, h in enumerate(handles):
            rd = await h.open_reader(EARLIEST)
            got = [await rd.read_next(timeout=20) for _ in range(rounds)]
            await rd.close()
            assert [m.payload for m in got] == [b"%d:%d" % (i, r) for r in range(rounds)]
            assert [m.id for m in got] == [mid for _, mid in sorted(acked[i])]
