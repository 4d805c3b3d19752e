"""Exactly-once appends (idempotent producers) in service mode: three real
LogStores, real etcd and MinIO — the same scenarios as the embedded backends,
plus a LogStore killed mid-stream (the batches re-sent to a fresh ensemble
must not be stored twice)."""
import asyncio
import sys
from pathlib import Path

import pytest

import logstore

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
import producer_scenarios as sc  # noqa: E402
from crash_producer import crash_cycles  # noqa: E402
from test_producer import ROLL  # noqa: E402


async def test_producer_scenarios_in_service_mode(service_cluster):
    cluster = service_cluster()
    for scenario in (sc.retries_return_original_ids, sc.crashed_or_fenced_predecessor,
                     sc.state_crosses_plain_writers_and_expiry):
        await scenario(cluster.config)
    await sc.rollover_keeps_ids(cluster.client_config(**ROLL))


async def test_producer_survives_a_logstore_loss(service_cluster):
    cluster = service_cluster(4)
    async with logstore.Client(cluster.config) as c:
        log = await c.create_log("loss")
        w = await log.open_writer(producer_id="svc")
        first = await asyncio.gather(*(w.append(b"a%d" % s, sequence=s) for s in range(50)))
        nodes = (await c.meta.segments("loss"))[-1].value.quorum.nodes
        next(s for s in cluster.logstores if s.endpoint in nodes).kill()  # one of the segment's own replicas
        second = await asyncio.gather(*(w.append(b"a%d" % s, sequence=s) for s in range(40, 100)))
        assert second[:10] == first[40:]
        await w.close()
        w = await log.open_writer(producer_id="svc")
        assert w.last_sequence == 99
        await w.close()
        got = await sc.read_all(log, idle=2.0)
        assert sc.stamps(got) == [("svc", s) for s in range(100)]


@pytest.mark.slow
async def test_producer_sigkill_cycles_in_service_mode(service_cluster):
    await crash_cycles(service_cluster().config, cycles=6, seed=99)
