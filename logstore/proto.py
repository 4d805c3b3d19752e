"""Hand-written protobuf (proto3) encoding of the few messages Woodpecker keeps
in etcd and in every data record — same field numbers, byte-compatible, with no
generated code and no protobuf runtime on the hot path.

Messages: ``LogMeta``, ``SegmentMetadata`` (+ ``QuorumInfo``), ``Version`` and
``LogMessageLayout`` (the bytes of each DataRecord).  proto3 rules: fields with
their zero value are omitted; unknown fields are skipped when decoding.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Iterator

from .errors import CorruptionError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 negatives are 10-byte two's complement varints
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(b: bytes | memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(b) or shift > 63:
            raise CorruptionError("truncated or overlong protobuf varint")
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def _key(num: int, wt: int) -> bytes:
    return varint((num << 3) | wt)


def f_int(num: int, v: int) -> bytes:
    return _key(num, _VARINT) + varint(v) if v else b""


def f_fixed64(num: int, v: int) -> bytes:
    return _key(num, _I64) + struct.pack("<Q", v) if v else b""


def f_bytes(num: int, v: bytes) -> bytes:
    return _key(num, _LEN) + varint(len(v)) + v if v else b""


def f_str(num: int, v: str) -> bytes:
    return f_bytes(num, v.encode())


def iter_fields(b: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field in order; a
    length-delimited value is a slice of ``b`` (a view when ``b`` is a
    memoryview: the LogStore's hot path decodes blocks without copying them)."""
    i, n = 0, len(b)
    while i < n:
        k, i = _read_varint(b, i)
        num, wt = k >> 3, k & 7
        if wt == _VARINT:
            v, i = _read_varint(b, i)
            yield num, wt, v
        elif wt == _I64:
            if i + 8 > n:
                raise CorruptionError("truncated protobuf fixed64")
            yield num, wt, struct.unpack_from("<Q", b, i)[0]
            i += 8
        elif wt == _LEN:
            ln, i = _read_varint(b, i)
            if i + ln > n:
                raise CorruptionError("truncated protobuf length-delimited field")
            yield num, wt, b[i:i + ln]
            i += ln
        elif wt == _I32:
            if i + 4 > n:
                raise CorruptionError("truncated protobuf fixed32")
            yield num, wt, struct.unpack_from("<I", b, i)[0]
            i += 4
        else:
            raise CorruptionError(f"unsupported protobuf wire type {wt}")


def fields(b: bytes | memoryview) -> list[tuple[int, int, object]]:
    """Split a message into (field number, wire type, raw value) triples
    (length-delimited values as ``bytes`` of their own)."""
    return [(num, wt, bytes(v) if wt == _LEN else v) for num, wt, v in iter_fields(b)]


class SegmentState(IntEnum):
    ACTIVE = 0
    COMPLETED = 2
    SEALED = 3
    TRUNCATED = 4


@dataclass
class QuorumInfo:
    id: int = -1
    es: int = 1
    wq: int = 1
    aq: int = 1
    nodes: list[str] = field(default_factory=lambda: ["127.0.0.1:59456"])
    # endpoint → instance id of the LogStore data dir the replica was placed on
    # (server/identity.py).  Our addition, field 100 (map<string,string>), which
    # Woodpecker does not use and its readers skip; empty for Woodpecker's segments.
    instances: dict[str, str] = field(default_factory=dict)

    def instance_of(self, endpoint: str) -> str:
        """The instance recorded for ``endpoint`` ("" = unknown: not checked)."""
        return self.instances.get(endpoint, "")

    def encode(self) -> bytes:
        return (f_int(1, self.id) + f_int(2, self.es) + f_int(3, self.wq) + f_int(4, self.aq)
                + b"".join(f_str(5, n) for n in self.nodes)
                + b"".join(f_bytes(100, f_str(1, k) + f_str(2, self.instances[k])) for k in sorted(self.instances)))

    @classmethod
    def decode(cls, b: bytes) -> "QuorumInfo":
        q = cls(id=0, es=0, wq=0, aq=0, nodes=[])
        for num, _, v in fields(b):
            if num == 1:
                q.id = _signed(v)  # type: ignore[arg-type]
            elif num == 2:
                q.es = _signed(v)  # type: ignore[arg-type]
            elif num == 3:
                q.wq = _signed(v)  # type: ignore[arg-type]
            elif num == 4:
                q.aq = _signed(v)  # type: ignore[arg-type]
            elif num == 5:
                q.nodes.append(v.decode())  # type: ignore[union-attr]
            elif num == 100:
                kv = {n2: v2 for n2, _, v2 in fields(v)}  # type: ignore[arg-type]
                q.instances[kv.get(1, b"").decode()] = kv.get(2, b"").decode()  # type: ignore[union-attr]
        return q


@dataclass
class LogMeta:
    log_id: int
    creation_timestamp: int  # unix seconds
    modification_timestamp: int
    truncated_segment_id: int = -1
    truncated_entry_id: int = -1
    max_segment_roll_time_seconds: int = 60
    max_segment_roll_size_bytes: int = 268435456
    compaction_buffer_size_bytes: int = 134217728
    max_compaction_file_count: int = 600

    def encode(self) -> bytes:
        return b"".join((
            f_int(1, self.log_id), f_int(2, self.max_segment_roll_time_seconds),
            f_int(3, self.max_segment_roll_size_bytes), f_int(4, self.compaction_buffer_size_bytes),
            f_int(5, self.max_compaction_file_count), f_fixed64(6, self.creation_timestamp),
            f_fixed64(7, self.modification_timestamp), f_int(8, self.truncated_segment_id),
            f_int(9, self.truncated_entry_id),
        ))

    @classmethod
    def decode(cls, b: bytes) -> "LogMeta":
        m = cls(log_id=0, creation_timestamp=0, modification_timestamp=0, truncated_segment_id=0,
                truncated_entry_id=0, max_segment_roll_time_seconds=0, max_segment_roll_size_bytes=0,
                compaction_buffer_size_bytes=0, max_compaction_file_count=0)
        names = {1: "log_id", 2: "max_segment_roll_time_seconds", 3: "max_segment_roll_size_bytes",
                 4: "compaction_buffer_size_bytes", 5: "max_compaction_file_count", 8: "truncated_segment_id",
                 9: "truncated_entry_id"}
        for num, _, v in fields(b):
            if num in names:
                setattr(m, names[num], _signed(v))  # type: ignore[arg-type]
            elif num == 6:
                m.creation_timestamp = v  # type: ignore[assignment]
            elif num == 7:
                m.modification_timestamp = v  # type: ignore[assignment]
        return m


@dataclass
class SegmentMetadata:
    seg_no: int
    create_time: int  # unix ms
    state: SegmentState = SegmentState.ACTIVE
    completion_time: int = 0
    last_entry_id: int = -1
    size: int = 0
    sealed_time: int = 0
    quorum: QuorumInfo | None = field(default_factory=QuorumInfo)
    # our addition, field 101 (bytes): idempotent producers' state at the segment's
    # start and end (logstore/producer.py).  Woodpecker skips it when decoding and,
    # being Go protobuf, keeps it when it re-encodes the message.
    producers: bytes = b""

    def encode(self) -> bytes:
        return b"".join((
            f_int(1, self.seg_no), f_int(2, self.create_time), f_int(4, int(self.state)),
            f_int(5, self.completion_time), f_int(6, self.last_entry_id), f_int(7, self.size),
            f_int(8, self.sealed_time), f_bytes(9, self.quorum.encode()) if self.quorum else b"",
            f_bytes(101, self.producers),
        ))

    @classmethod
    def decode(cls, b: bytes) -> "SegmentMetadata":
        m = cls(seg_no=0, create_time=0, last_entry_id=0, quorum=None)
        for num, _, v in fields(b):
            if num == 1:
                m.seg_no = _signed(v)  # type: ignore[arg-type]
            elif num == 2:
                m.create_time = _signed(v)  # type: ignore[arg-type]
            elif num == 4:
                m.state = SegmentState(v)
            elif num == 5:
                m.completion_time = _signed(v)  # type: ignore[arg-type]
            elif num == 6:
                m.last_entry_id = _signed(v)  # type: ignore[arg-type]
            elif num == 7:
                m.size = _signed(v)  # type: ignore[arg-type]
            elif num == 8:
                m.sealed_time = _signed(v)  # type: ignore[arg-type]
            elif num == 9:
                m.quorum = QuorumInfo.decode(v)  # type: ignore[arg-type]
            elif num == 101:
                m.producers = v  # type: ignore[assignment]
        return m


def encode_version(major: int, minor: int, patch: int) -> bytes:
    return f_int(1, major) + f_int(2, minor) + f_int(3, patch)


# picchio's extension of LogMessageLayout: the writer's append time (unix ms,
# varint) under a field number Woodpecker does not define.  Woodpecker decodes
# the layout with Go's proto.Unmarshal (woodpecker/log/log_message.go), which
# skips unknown fields, and its LogStore never parses entries — so logs stay
# readable by Woodpecker.  Written *first*, so a reader learns an entry's time
# from the first ~20 bytes of its record (seeking by time reads no payloads).
APPEND_TIME_FIELD = 1001
_TIME_KEY = _key(APPEND_TIME_FIELD, _VARINT)


def layout_prefix(payload_len: int, time_ms: int | None = None) -> bytes:
    """The bytes of ``LogMessageLayout`` that precede the payload: the append
    time (if any), then field 1's key and length.  Kept apart so the payload
    itself is never copied on the write path."""
    stamp = _TIME_KEY + varint(time_ms) if time_ms else b""
    return stamp + (_key(1, _LEN) + varint(payload_len) if payload_len else b"")


def layout_time(b: bytes | memoryview) -> int | None:
    """The append time of an encoded ``LogMessageLayout`` (its first field), or
    None for an entry written without one (by Woodpecker, or before picchio
    stamped entries).  Needs only the first bytes of the record."""
    if len(b) < len(_TIME_KEY) or bytes(b[:len(_TIME_KEY)]) != _TIME_KEY:
        return None
    try:
        return _read_varint(b, len(_TIME_KEY))[0]
    except CorruptionError:
        return None


def encode_properties(props: dict[str, str] | None) -> bytes:
    """``LogMessageLayout`` field 2 (map<string,string>) entries, sorted for
    deterministic bytes."""
    if not props:
        return b""
    out = []
    for k in sorted(props):
        entry = f_str(1, k) + f_str(2, props[k])
        out.append(_key(2, _LEN) + varint(len(entry)) + entry)
    return b"".join(out)


def encode_layout(payload: bytes, props: dict[str, str] | None = None, time_ms: int | None = None) -> bytes:
    return layout_prefix(len(payload), time_ms) + payload + encode_properties(props)


def decode_layout(b: bytes | memoryview) -> tuple[bytes, dict[str, str]]:
    """DataRecord bytes → (payload, properties)."""
    payload = b""
    props: dict[str, str] = {}
    for num, wt, v in fields(b):
        if num == 1 and wt == _LEN:
            payload = v  # type: ignore[assignment]
        elif num == 2 and wt == _LEN:
            k = val = ""
            for n2, _, v2 in fields(v):  # type: ignore[arg-type]
                if n2 == 1:
                    k = v2.decode()  # type: ignore[union-attr]
                elif n2 == 2:
                    val = v2.decode()  # type: ignore[union-attr]
            props[k] = val
    return payload, props
