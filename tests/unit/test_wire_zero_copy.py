"""Service mode's hot path moves a block's bytes without re-copying them
(issue 12): the client builds AddEntries from references to the payloads, the
LogStore reads entries as views of the received message, compaction joins the
blocks' framed records — each byte for byte what the generic code produced."""
from __future__ import annotations

import os
import random

from logstore.codec import (BlockBuilder, BlockHeader, DecodedBlock, FLAG_COMPACTED, HeaderRecord, _raw_records,
                            crc32, decode_block, merge_blocks)
from logstore.proto import encode_layout
from logstore.rpc import (AddEntriesRequest, LogEntry, Msg, Pieces, encode_add_entries, with_expected_instance)


def _cases(n: int = 200):
    rnd = random.Random(12)
    for _ in range(n):
        k = rnd.randint(1, 5)
        entries = [(os.urandom(rnd.choice([0, 1, 7, 300])), rnd.choice([None, {}, {"a": "b", "k": "v"}]))
                   for _ in range(k)]
        times = rnd.choice([None, [rnd.choice([None, 0, 1795946400000]) for _ in range(k)]])
        yield (rnd.choice(["", "bucket"]), rnd.choice(["", "root/x"]), rnd.choice([0, 7]),
               rnd.choice([0, 3, 1 << 40]), rnd.choice([0, 1, 300]), entries, times)


def test_add_entries_encoding_is_the_generic_encoding_with_payloads_by_reference():
    for bucket, root, log_id, seg, first, entries, times in _cases():
        stamps = times or [None] * len(entries)
        generic = AddEntriesRequest(bucket, root, log_id, [
            LogEntry(seg, first + k, encode_layout(p, props or None, t))
            for k, ((p, props), t) in enumerate(zip(entries, stamps))]).encode()
        pieces = encode_add_entries(bucket, root, log_id, seg, first, entries, times)
        assert isinstance(pieces, Pieces) and pieces.join() == generic
        assert pieces.value_bytes == sum(len(encode_layout(p, props or None, t))
                                         for (p, props), t in zip(entries, stamps))
        for p, _ in entries:  # not copied: the very payload objects are in the list
            assert not p or any(x is p for x in pieces)
        for inst in ("", "3f2a"):
            assert with_expected_instance(pieces, inst) == with_expected_instance(generic, inst)


def test_add_entries_decoding_gives_views_of_the_message_and_the_generic_result():
    for bucket, root, log_id, seg, first, entries, times in _cases():
        body = with_expected_instance(encode_add_entries(bucket, root, log_id, seg, first, entries, times), "i-1")
        fast = AddEntriesRequest.decode(body)
        slow = Msg.decode.__func__(AddEntriesRequest, body)
        assert (fast.bucket_name, fast.root_path, fast.log_id, fast.expected_instance) == \
            (slow.bucket_name, slow.root_path, slow.log_id, slow.expected_instance)
        assert [(e.segId, e.entryId, bytes(e.values)) for e in fast.entries] == \
            [(e.segId, e.entryId, e.values) for e in slow.entries]
        for e in fast.entries:
            assert not len(e.values) or (isinstance(e.values, memoryview) and e.values.obj is body)


def test_merge_joins_framed_records_and_gives_the_reframed_bytes():
    rnd = random.Random(5)

    def reframed(blocks, n, with_header):
        data = b"".join(bytes(r) for b in blocks for r in _raw_records(b))
        first, last = blocks[0].header.first_entry_id, blocks[-1].header.last_entry_id
        head = HeaderRecord(first, FLAG_COMPACTED).encode() if with_header else b""
        return head + BlockHeader(n, first, last, len(data), crc32(data)).encode() + data

    for _ in range(100):
        blocks, eid = [], 0
        count = rnd.randint(1, 4)
        for bn in range(count):
            bb = BlockBuilder()
            for _ in range(rnd.randint(1, 6)):
                bb.add(os.urandom(rnd.choice([0, 3, 100])), rnd.choice([None, {"a": "b"}]), rnd.choice([None, 99]))
            blk = decode_block(b"xx" + bb.header(bn, eid).encode() + bb.data(), 2)
            eid += bb.count
            assert blk.framed() is not None and bytes(blk.framed()) == bb.data()
            if bn == count - 1 and rnd.random() < 0.5:  # the last one trimmed at the LAC, as compaction does
                keep = rnd.randint(1, len(blk.records))
                h = blk.header
                blk = DecodedBlock(BlockHeader(bn, h.first_entry_id, h.first_entry_id + keep - 1, 0, 0),
                                   blk.records[:keep], 0, blk.framed(keep))
            elif rnd.random() < 0.2:
                blk = DecodedBlock(blk.header, blk.records, 0)  # no buffer: re-framed
            blocks.append(blk)
        wh = rnd.random() < 0.5
        assert merge_blocks(blocks, 2, wh) == reframed(blocks, 2, wh)
        assert decode_block(merge_blocks(blocks, 2, False)) is not None
