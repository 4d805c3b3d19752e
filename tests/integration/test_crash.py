"""SIGKILL a writer process at random moments, over many cycles: every
acknowledged entry is read back exactly once, in order, byte-exact — and an
idempotent producer that re-sends its unacknowledged appends after each
restart leaves every payload in the log exactly once."""
import asyncio
import random
import sys
from pathlib import Path

import pytest

import logstore

sys.path.insert(0, str(Path(__file__).parent))
from crash_producer import crash_cycles  # noqa: E402
from crashcheck import check_exactly_once, read_back, run_cycle  # noqa: E402

CYCLES = {"local": 15, "minio": 8}

pytestmark = pytest.mark.slow  # crash cycles


def crash_config(make_config, kind: str) -> logstore.Config:
    """Small segments and blocks: the kills land across rollovers and block boundaries."""
    return make_config(kind, **{"woodpecker.client.segmentRollingPolicy.maxSize": 60_000,
                                "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 8_000})


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_sigkill_cycles_lose_nothing_acknowledged(make_config, kind):
    cfg = crash_config(make_config, kind)
    flat = cfg.to_dict()
    async with logstore.Client(cfg) as c:
        await c.create_log("crashy")
    rng = random.Random(1234)
    acked: list[tuple[int, int, str]] = []
    for cycle in range(CYCLES[kind]):
        acked += await asyncio.to_thread(run_cycle, flat, "crashy", cycle, rng)
    assert len(acked) > CYCLES[kind] * 5, "the writers acknowledged a meaningful number of entries"
    check_exactly_once(await read_back(cfg, "crashy", idle=1.0), acked)


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_sigkill_cycles_idempotent_producer_resends_exactly_once(make_config, kind):
    """An idempotent producer, killed over and over, re-sends after each restart
    everything it had not seen acknowledged: the log ends with every payload
    exactly once, in order, at the ids first acknowledged (crash_producer.py)."""
    await crash_cycles(crash_config(make_config, kind), CYCLES[kind] - 3, seed=4321)
