"""Idempotent producers beside the real Woodpecker v0.1.35: Woodpecker reads a
producer's entries (payloads and properties, ``picchio.pid``/``picchio.seq``
included) from Active and Completed segments, and a Woodpecker writer taking
the log over in between (recovering picchio's segment, writing its own) does
not make picchio forget the producer: ``last_sequence`` and retries still come
from the log."""
from __future__ import annotations

import asyncio
import hashlib

import pytest

import logstore
from logstore.producer import SegmentProducers
from wp import acks, entries, unique

N = 12


def pl(i: int) -> bytes:
    return b"idem-%d-" % i + b"z" * (i * 37)


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_woodpecker_reads_producer_entries_and_state_survives_its_writer(make_config, wp, kind):
    cfg = make_config(kind, woodpecker__logstore__segmentCompactionPolicy__enabled=False)
    w = wp(cfg)
    name = unique("idem")
    async with logstore.Client(cfg) as c:
        log = await c.create_log(name)
        pw = await log.open_writer(producer_id="wp-interop")
        ids = await asyncio.gather(*(pw.append(pl(i), {"i": str(i)}, sequence=i) for i in range(N)))
        # Active segment: Woodpecker reads what picchio acknowledged, properties and all
        got = entries(await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(N)))
        assert [(e["seg"], e["entry"]) for e in got] == [(m.segment_id, m.entry_id) for m in ids]
        for i, e in enumerate(got):
            assert e["sha256"] == hashlib.sha256(pl(i)).hexdigest()
            assert e["props"] == {"i": str(i), "picchio.pid": "wp-interop", "picchio.seq": str(i)}
        # Woodpecker's writer takes over (fencing and recovering picchio's segment) and appends
        wp_acks = acks(await asyncio.to_thread(w.run, "write", "--log", name, "--count", "3", "--size", "10",
                                               "--tag", "wp"))
        assert len(wp_acks) == 3
        with pytest.raises(logstore.WriterFencedError):
            await pw.append(pl(N), sequence=N)
        await pw.close()
        segs = await log.meta.segments(name)
        snap = SegmentProducers.decode(segs[ids[0].segment_id].value.producers)
        assert snap is not None and snap.writer == "wp-interop"  # field 101 kept through Woodpecker's update
        # picchio's producer comes back: its state is found past Woodpecker's segments
        pw = await log.open_writer(producer_id="wp-interop")
        assert pw.last_sequence == N - 1
        assert await pw.append(pl(3), sequence=3) == ids[3]
        last = await pw.append(pl(N), sequence=N)
        await pw.close()
    got = entries(await asyncio.to_thread(w.run, "read", "--log", name, "--count", str(N + 4)))
    assert len(got) == N + 4 and (got[-1]["seg"], got[-1]["entry"]) == (last.segment_id, last.entry_id)
    assert got[-1]["props"]["picchio.seq"] == str(N)
