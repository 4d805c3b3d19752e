"""SIGKILL a writer process at random moments, over many cycles: every
acknowledged entry is read back exactly once, in order, byte-exact."""
import asyncio
import random
import sys
from pathlib import Path

import pytest

import logstore

sys.path.insert(0, str(Path(__file__).parent))
from crashcheck import check_exactly_once, read_back, run_cycle  # noqa: E402

CYCLES = {"local": 15, "minio": 8}

pytestmark = pytest.mark.slow  # crash cycles


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_sigkill_cycles_lose_nothing_acknowledged(make_config, kind):
    cfg = make_config(kind, **{"woodpecker.client.segmentRollingPolicy.maxSize": 60_000,
                               "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 8_000})
    flat = cfg.to_dict()
    async with logstore.Client(cfg) as c:
        await c.create_log("crashy")
    rng = random.Random(1234)
    acked: list[tuple[int, int, str]] = []
    for cycle in range(CYCLES[kind]):
        acked += await asyncio.to_thread(run_cycle, flat, "crashy", cycle, rng)
    assert len(acked) > CYCLES[kind] * 5, "the writers acknowledged a meaningful number of entries"
    check_exactly_once(await read_back(cfg, "crashy", idle=1.0), acked)
