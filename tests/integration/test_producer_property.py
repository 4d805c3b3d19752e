"""Property test of idempotent producers against the real backends: random
schedules of new appends (several in flight), retries of acknowledged and
in-flight sequences, gaps, clean reopens and abandoned writers (fenced by the
next one, their segment recovered by a scan) — checked against a model: a
retry returns the first id, a gap raises SequenceGapError and writes nothing,
``last_sequence`` after every open is the model's, and the log holds each
sequence exactly once, in order, at its acknowledged id."""
import asyncio
import contextlib
import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logstore

sys.path.insert(0, str(Path(__file__).parent))
import producer_scenarios as sc  # noqa: E402

pytestmark = pytest.mark.slow  # many schedules on real components

OPS = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(1, 12)),  # n new sequences at once
    st.tuples(st.just("retry"), st.integers(0, 10_000)),  # an acknowledged one again (index into the acked)
    st.tuples(st.just("retry-inflight"), st.integers(1, 6)),  # n new ones, each sent twice at once
    st.tuples(st.just("gap"), st.integers(1, 5)),
    st.tuples(st.just("reopen"), st.booleans()),  # True: close first; False: abandon (crash-like, fenced)
), min_size=3, max_size=14)

_names = itertools.count()


def pl(s: int) -> bytes:
    return b"%d:" % s + b"x" * 300  # ~10 entries per segment: rollover and old runs are exercised


async def run_schedule(cfg: logstore.Config, ops) -> None:
    name = f"prop-{next(_names)}"
    acked: dict[int, logstore.MessageId] = {}
    abandoned = []
    async with logstore.Client(cfg) as c:
        log = await c.create_log(name)
        w = await log.open_writer(producer_id="prop")
        for op, arg in ops:
            nxt = len(acked)
            if op == "send":
                ids = await asyncio.gather(*(w.append(pl(s), sequence=s) for s in range(nxt, nxt + arg)))
                acked.update(zip(range(nxt, nxt + arg), ids))
            elif op == "retry" and acked:
                s = sorted(acked)[arg % len(acked)]
                try:
                    assert await w.append(pl(s), sequence=s) == acked[s]
                except logstore.DuplicateSequenceError:  # too far back for its id: still never written twice
                    assert acked[s].segment_id < max(acked.values()).segment_id - 2
            elif op == "retry-inflight":
                seqs = [s for s in range(nxt, nxt + arg) for _ in (0, 1)]
                ids = await asyncio.gather(*(w.append(pl(s), sequence=s) for s in seqs))
                assert ids[0::2] == ids[1::2]
                acked.update(zip(range(nxt, nxt + arg), ids[0::2]))
            elif op == "gap":
                with pytest.raises(logstore.SequenceGapError):
                    await w.append(b"never", sequence=nxt + arg)
            elif op == "reopen":
                if arg:
                    await w.close()
                else:
                    abandoned.append(w)
                w = await log.open_writer(producer_id="prop")
                assert w.last_sequence == nxt - 1
        await w.close()
        for old in abandoned:
            with contextlib.suppress(logstore.WriterFencedError):
                await old.close()
        got = await sc.read_all(log, idle=0.5)
    assert sc.stamps(got) == [("prop", s) for s in range(len(acked))]
    assert [m.id for m in got] == [acked[s] for s in range(len(acked))]
    assert [m.payload for m in got] == [pl(s) for s in range(len(acked))]


@pytest.mark.parametrize("kind,examples", [("local", 25), ("minio", 8)])
def test_random_schedules(make_config, kind, examples):
    cfg = make_config(kind, **{"woodpecker.client.segmentRollingPolicy.maxSize": 3000,
                               "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 500})

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(OPS)
    def check(ops):
        asyncio.run(run_schedule(cfg, ops))

    check()
