"""Helpers of the interop tests: the harness' Woodpecker driver (picchio_harness.woodpecker)
plus what both sides write and check in these tests."""
from __future__ import annotations

from picchio_harness.woodpecker import (  # noqa: F401 - re-exported for the tests
    RUN_TIMEOUT, Running, Wpctl, digest, payload, register_in_etcd, unique, wp_config,
)


def acks(lines: list[dict]) -> list[dict]:
    return sorted((d for d in lines if d.get("op") == "ack"), key=lambda d: (d["seg"], d["entry"]))


def entries(lines: list[dict]) -> list[dict]:
    return [d for d in lines if d.get("op") == "entry"]


# -- what both sides write and check -----------------------------------------------------------

#: entry i is SIZES[i % 4] bytes: one byte up to a good part of a block (wpctl --size SIZE_ARG)
SIZES = (1, 100, 4096, 70_000)
SIZE_ARG = ",".join(map(str, SIZES))


def size_of(i: int) -> int:
    return SIZES[i % len(SIZES)]


def props(tag: str, i: int) -> dict[str, str]:
    """The properties wpctl gives entry i (picchio's writers in these tests give the same)."""
    return {"i": str(i), "tag": tag}


def check_picchio_read(got: list, wp_acks: list[dict], tag: str) -> None:
    """picchio's reading (logstore Messages) of what Woodpecker acknowledged: same ids, same
    bytes, same properties, nothing else."""
    assert [(m.id.segment_id, m.id.entry_id) for m in got] == [(a["seg"], a["entry"]) for a in wp_acks]
    for m, a in zip(got, wp_acks):
        assert m.payload == payload(tag, a["i"], size_of(a["i"])), f"entry {m.id} differs"
        assert m.properties == props(tag, a["i"])


def check_wp_read(lines: list[dict], ids: list, tag: str, idx=None) -> None:
    """Woodpecker's reading (wpctl lines) of what picchio acknowledged as ``ids`` (entries
    ``idx``, default 0, 1, …): same ids, same bytes (sha256), same properties, nothing else."""
    got = entries(lines)
    idx = list(idx if idx is not None else range(len(ids)))
    assert [(e["seg"], e["entry"]) for e in got] == [(m.segment_id, m.entry_id) for m in ids]
    for i, e in zip(idx, got):
        assert (e["len"], e["sha256"]) == (size_of(i), digest(payload(tag, i, size_of(i)))), f"entry {e} differs"
        assert e["props"] == props(tag, i)


async def append_all(w, tag: str, idx) -> list:
    """picchio's writer ``w`` appends entries ``idx`` concurrently; their MessageIds."""
    import asyncio
    return list(await asyncio.gather(*(w.append(payload(tag, i, size_of(i)), props(tag, i)) for i in idx)))


async def read_picchio(cfg, name: str, n: int, start=None, timeout: float = 20.0) -> list:
    """The first ``n`` entries of log ``name`` from ``start`` (default: the earliest) as picchio
    reads them; then nothing more arrives."""
    import pytest

    import logstore

    async with logstore.Client(cfg) as c:
        r = await (await c.open_log(name)).open_reader(start or logstore.EARLIEST)
        got = [await r.read_next(timeout=timeout) for _ in range(n)]
        with pytest.raises(TimeoutError):
            await r.read_next(timeout=0.5)
        return got


async def take_over_from_woodpecker(log, w: Wpctl, tag: str, n: int) -> tuple[list[dict], list]:
    """Woodpecker's writer appends steadily (one entry per 20 ms); once it has 5 acks picchio
    opens a writer on ``log`` (fencing it) and appends entries 5000…5000+n−1; Woodpecker's next
    append must fail.  → (Woodpecker's acks, picchio's MessageIds)."""
    import asyncio

    run = w.start("write", "--log", log.name, "--count", "2000", "--size", SIZE_ARG, "--tag", tag,
                  "--interval-ms", "20", "--stop-on-error", timeout=120)
    try:
        await asyncio.to_thread(run.until, lambda d: d.get("op") == "ack" and d["i"] >= 5, "5 acks", 60)
        writer = await log.open_writer()
        p_ids = await append_all(writer, tag, range(5000, 5000 + n))
        await asyncio.to_thread(run.until, lambda d: d.get("op") == "nack", "a failed append after the fence", 60)
        lines = await asyncio.to_thread(run.finish, 90)
        await writer.close()
    finally:
        run.kill()
    wp_acks = acks(lines)
    assert 5 <= len(wp_acks) < 2000
    return wp_acks, p_ids
