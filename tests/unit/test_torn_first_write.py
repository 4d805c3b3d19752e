"""The first write of a local segment (header + first block, one writev, one
fdatasync) torn by a power cut — random bytes of it on disk — is a torn tail:
nothing in the file was ever acknowledged, so recovery finds an empty segment.
A damaged header with an intact block after it is damage, and raises.  (Seen
in CI: a power cut in `random` mode left a writer unable to recover.)"""
from __future__ import annotations

import random

import pytest

from logstore.codec import BlockBuilder, HeaderRecord
from logstore.errors import CorruptionError
from logstore.storage.segfile import scan_valid


def first_write() -> tuple[bytes, int]:
    """What append_block writes first: the segment header, then block 0."""
    bb = BlockBuilder()
    bb.add(b"entry-0" * 40)
    data = bytes(bb.data())
    head = HeaderRecord(0).encode()
    return head + bb.header(0, 0).encode() + data, len(head)


def test_intact_first_write_is_one_block() -> None:
    buf, _ = first_write()
    blocks, end = scan_valid(buf, len(buf), 1, 0)
    assert [b.first_entry_id for b in blocks] == [0] and end == len(buf)


@pytest.mark.parametrize("seed", range(20))
def test_torn_first_write_reads_as_empty(seed: int) -> None:
    buf, hlen = first_write()
    rng = random.Random(seed)
    torn = bytearray(buf)
    for i in rng.sample(range(hlen), 3):  # the header's bytes partly reached the disk
        torn[i] ^= 0xFF
    torn = torn[: rng.randrange(hlen + 1, len(buf))]  # and only part of the block
    assert scan_valid(bytes(torn), len(torn), 1, 0) == ([], 0)


def test_damaged_header_before_an_intact_block_raises() -> None:
    buf, hlen = first_write()
    damaged = bytearray(buf)
    damaged[2] ^= 0xFF
    with pytest.raises(CorruptionError):
        scan_valid(bytes(damaged), len(damaged), 1, 0)
