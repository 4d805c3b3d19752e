"""The raw limit of ``picchio bench append`` (logstore/cli/bench_raw.py): it must
write what the product writes, and for service mode report the replica that
completes the quorum — otherwise the product can "beat" its own limit."""
from logstore.cli.bench_raw import _chunks, framed_block, raw_disk
from logstore.codec import decode_block


def test_the_raw_block_is_the_products_framing_of_the_same_entries():
    """Mutation caught: raw writing bare payloads (no block header, no record
    framing) — the first baseline's flaw."""
    pieces = framed_block(4096, 16)
    block = decode_block(b"".join(pieces))
    assert block is not None and block.header.entry_count == 16
    assert all(len(r) >= 4096 for r in block.records)
    assert block.end == sum(len(p) for p in pieces)


def test_writev_calls_stay_near_one_mebibyte():
    pieces = framed_block(1 << 20, 16)
    chunks = _chunks(pieces)
    assert [p for c in chunks for p in c] == pieces  # nothing lost or reordered
    assert len(chunks) >= 16 and all(sum(map(len, c)) <= (1 << 20) + 64 or len(c) == 1 for c in chunks)


def test_the_service_limit_is_the_second_fastest_of_three_concurrent_replicas(tmp_path):
    """Three loops on three files at once; the acked bytes are the second
    highest (ack quorum 2) — not the fastest and not a third of one loop.
    Mutation caught: ``order[0]`` (the fastest replica) or ``order[-1]``."""
    out = raw_disk(tmp_path / "raw", 4096, 4, 0.5, replicas=3, quorum=2, tick=lambda: None)
    per = out["replica_mb_per_s"]
    assert len(per) == 3 and min(per) > 0
    acked = out["bytes"] / out["seconds"] / 1e6
    assert abs(acked - sorted(per)[1]) <= 0.051, (acked, per)
    assert out["lat"] and all(x > 0 for x in out["lat"])
    assert list((tmp_path / "raw").iterdir()) == []  # its files are removed
