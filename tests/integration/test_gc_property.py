"""Property: whatever the segments and the watermark, collect_garbage never
deletes an entry above the watermark, and deletes every segment entirely at or
below it."""
import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logstore
from logstore import EARLIEST, MessageId

_names = itertools.count()

pytestmark = pytest.mark.slow  # a property test: many examples


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8),
       cut=st.floats(min_value=0.0, max_value=1.0), blocks_per_segment=st.integers(min_value=1, max_value=3),
       interrupted=st.booleans())
def test_gc_never_deletes_above_watermark(make_config, blocks, cut, blocks_per_segment, interrupted):
    cfg = make_config("local", **{"woodpecker.client.segmentRollingPolicy.maxBlocks": blocks_per_segment})
    asyncio.run(_check(cfg, blocks, cut, interrupted))


async def _check(cfg, blocks, cut, interrupted):
    async with logstore.Client(cfg) as c:
        log = await c.create_log(f"p{next(_names)}")
        ids: list[MessageId] = []
        async with await log.open_writer() as w:
            n = 0
            for size in blocks:  # each gather of `size` entries becomes one block
                ids += await asyncio.gather(*(w.append(b"%d" % (n + k)) for k in range(size)))
                n += size
        mark = ids[min(len(ids) - 1, int(cut * len(ids)))]
        await log.truncate(mark)
        before = {s.id: s for s in await log.segments()}
        if interrupted:
            # a run that deleted the bytes of the first doomed segment, then died before its metadata
            doomed = [s for s in before.values() if s.last_entry_id is not None and
                      (s.id, s.last_entry_id) <= (mark.segment_id, mark.entry_id)]
            if doomed:
                await c.backend.delete_segment(log.log_id, doomed[0].id)
        report = await log.collect_garbage()
        after = {s.id for s in await log.segments()}
        for sid, s in before.items():
            last = -1 if s.last_entry_id is None else s.last_entry_id
            entirely_below = sid < mark.segment_id or (sid == mark.segment_id and last <= mark.entry_id)
            assert (sid in report.segments) == entirely_below, (sid, s, mark)
            assert (sid in after) != entirely_below
        reader = await log.open_reader(EARLIEST)
        expect = [i for i in ids if i > mark]
        got = []
        for _ in expect:
            got.append((await reader.read_next(timeout=3)).id)
        assert got == expect
        await c.delete_log(log.name)
