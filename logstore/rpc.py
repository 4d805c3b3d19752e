"""Messages of Woodpecker's gRPC service ``woodpecker.proto.logstore.LogStore``
(shared/woodpecker-format.md §6): same service, RPC and field names and
numbers, encoded by a small declarative proto3 codec — no generated code.

Each message is a dataclass with ``FIELDS = ((number, attribute, kind), …)``;
kinds: ``int64 int32 uint32 bool string bytes double``, ``msg:Name`` for a
nested message, ``rep:<kind>`` for repeated fields, ``map`` for
map<string,string>.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .proto import (_key, _read_varint, _signed, encode_properties, fields as split_fields, iter_fields, layout_prefix,
                    varint)

SERVICE = "woodpecker.proto.logstore.LogStore"

_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5
_REGISTRY: dict[str, type["Msg"]] = {}


def _enc_scalar(kind: str, v: Any) -> tuple[int, bytes]:
    if kind in ("int64", "int32", "uint32"):
        return _VARINT, varint(int(v))
    if kind == "bool":
        return _VARINT, b"\x01" if v else b"\x00"
    if kind == "string":
        b = v.encode()
        return _LEN, varint(len(b)) + b
    if kind == "bytes":
        return _LEN, varint(len(v)) + bytes(v)
    if kind == "double":
        return _I64, struct.pack("<d", v)
    if kind.startswith("msg:"):
        b = v.encode()
        return _LEN, varint(len(b)) + b
    raise AssertionError(kind)


def _zero(kind: str, v: Any) -> bool:
    return v is None or (not kind.startswith("msg:") and not v)


def _dec_scalar(kind: str, raw: Any) -> Any:
    if kind == "int64":
        return _signed(raw)
    if kind == "int32":
        v = _signed(raw)
        return v - (1 << 32) if v >= 1 << 31 else v
    if kind == "uint32":
        return raw & 0xFFFFFFFF
    if kind == "bool":
        return bool(raw)
    if kind == "string":
        return raw.decode()
    if kind == "bytes":
        return raw
    if kind == "double":
        return struct.unpack("<d", struct.pack("<Q", raw))[0]
    if kind.startswith("msg:"):
        return _REGISTRY[kind[4:]].decode(raw)
    raise AssertionError(kind)


class Msg:
    FIELDS: ClassVar[tuple[tuple[int, str, str], ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    def encode(self) -> bytes:
        out = []
        for num, attr, kind in self.FIELDS:
            v = getattr(self, attr)
            if kind == "map":
                for k in sorted(v or {}):
                    entry = _enc_field(1, "string", k) + _enc_field(2, "string", v[k])
                    out.append(_key(num, _LEN) + varint(len(entry)) + entry)
            elif kind.startswith("rep:"):
                inner = kind[4:]
                if inner in ("int64", "int32", "uint32") and v:  # packed
                    body = b"".join(varint(int(x)) for x in v)
                    out.append(_key(num, _LEN) + varint(len(body)) + body)
                else:
                    out += [_enc_field(num, inner, x) for x in v or ()]
            elif not _zero(kind, v):
                out.append(_enc_field(num, kind, v))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Any:
        spec = cls.__dict__.get("_SPEC")
        if spec is None:  # built once per class (it was rebuilt for every frame every replica sent back)
            spec = {num: (attr, kind) for num, attr, kind in cls.FIELDS}
            setattr(cls, "_SPEC", spec)
        obj = cls()
        for num, wt, raw in split_fields(data):
            if num not in spec:
                continue
            attr, kind = spec[num]
            if kind == "map":
                kv = {n: v for n, _, v in split_fields(raw)}
                getattr(obj, attr)[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
            elif kind.startswith("rep:"):
                inner = kind[4:]
                if inner in ("int64", "int32", "uint32") and wt == _LEN:
                    i, vals = 0, []
                    while i < len(raw):
                        x, i = _read_varint(raw, i)
                        vals.append(_dec_scalar(inner, x))
                    getattr(obj, attr).extend(vals)
                else:
                    getattr(obj, attr).append(_dec_scalar(inner, raw))
            else:
                setattr(obj, attr, _dec_scalar(kind, raw))
        return obj


def _enc_field(num: int, kind: str, v: Any) -> bytes:
    wt, body = _enc_scalar(kind, v)
    return _key(num, wt) + body


# -- shared ------------------------------------------------------------------------
@dataclass
class Status(Msg):
    reason: str = ""
    code: int = 0
    retriable: bool = False
    detail: str = ""
    extra_info: dict = field(default_factory=dict)
    FIELDS = ((1, "reason", "string"), (2, "code", "int32"), (3, "retriable", "bool"), (4, "detail", "string"),
              (5, "extra_info", "map"))


@dataclass
class LogEntry(Msg):
    segId: int = 0
    entryId: int = 0
    values: bytes = b""
    FIELDS = ((1, "segId", "int64"), (2, "entryId", "int64"), (3, "values", "bytes"))


@dataclass
class LastReadState(Msg):
    segment_id: int = 0
    flags: int = 0
    version: int = 0
    last_block_id: int = 0
    block_offset: int = 0
    block_size: int = 0
    node: str = ""
    FIELDS = ((1, "segment_id", "int64"), (2, "flags", "uint32"), (3, "version", "uint32"), (4, "last_block_id", "int32"),
              (5, "block_offset", "int64"), (6, "block_size", "uint32"), (7, "node", "string"))


@dataclass
class BatchReadResult(Msg):
    entries: list = field(default_factory=list)
    lastReadState: LastReadState | None = None
    FIELDS = ((1, "entries", "rep:msg:LogEntry"), (2, "lastReadState", "msg:LastReadState"))


@dataclass
class SegmentMetadataMsg(Msg):
    """meta.SegmentMetadata as carried by CompactSegment's response (fields 4, 7, 8 used)."""
    segNo: int = 0
    createTime: int = 0
    state: int = 0
    completionTime: int = 0
    lastEntryId: int = 0
    size: int = 0
    sealedTime: int = 0
    FIELDS = ((1, "segNo", "int64"), (2, "createTime", "int64"), (4, "state", "int32"), (5, "completionTime", "int64"),
              (6, "lastEntryId", "int64"), (7, "size", "int64"), (8, "sealedTime", "int64"))


_BASE = ((1, "bucket_name", "string"), (2, "root_path", "string"), (3, "log_id", "int64"))
# Our additions (field numbers Woodpecker does not use; its readers skip unknown fields):
# every response names the replying data dir's instance id (server/identity.py), and a
# request may name the instance it expects, which a LogStore of another identity refuses.
INSTANCE_FIELD = 100
_INSTANCE = (INSTANCE_FIELD, "instance", "string")
_EXPECT = (INSTANCE_FIELD, "expected_instance", "string")


class Pieces(list):
    """An encoded request kept as the list of its buffers (small framing bytes
    and the entries' payloads, by reference): joined once per replica, with that
    replica's expected instance appended, right before gRPC takes it — the one
    copy of a block's bytes the client makes per replica (gRPC then makes its
    own).  Building ``bytes`` first and then ``body + suffix`` per replica cost
    five to seven extra copies of every block (11% of the client's samples were
    memcpy under Msg.encode / encode_layout / with_expected_instance, 1 MiB × 16)."""

    value_bytes = 0

    def join(self, suffix: bytes = b"") -> bytes:
        return b"".join([*self, suffix] if suffix else self)


def with_expected_instance(body: "bytes | Pieces", instance: str) -> bytes:
    """An encoded request plus field 100 naming the instance it expects: a block
    is encoded once and each replica gets its own suffix (proto3 allows fields
    in any order; the last value of a scalar wins)."""
    suffix = _enc_field(INSTANCE_FIELD, "string", instance) if instance else b""
    if isinstance(body, Pieces):
        return body.join(suffix)
    return body + suffix if suffix else body
_SEG = _BASE + ((4, "segment_id", "int64"),)


@dataclass
class SegReq(Msg):
    bucket_name: str = ""
    root_path: str = ""
    log_id: int = 0
    segment_id: int = 0


# -- requests / responses -------------------------------------------------------------
class AddEntryState:
    BUFFERED, SYNCED, FAILED = 0, 1, 2


@dataclass
class AddEntriesRequest(Msg):
    bucket_name: str = ""
    root_path: str = ""
    log_id: int = 0
    entries: list = field(default_factory=list)
    expected_instance: str = ""
    FIELDS = _BASE + ((4, "entries", "rep:msg:LogEntry"), _EXPECT)


    @classmethod
    def decode(cls, data: bytes) -> "AddEntriesRequest":
        """The LogStore's hot path: entries' ``values`` are memoryviews into the
        received message, never copied (the generic decoder copied each LogEntry
        and then its value: two copies of every block, ~4% of a LogStore's
        samples at 1 MiB × 16).  Same result as ``Msg.decode`` otherwise: unknown
        fields skipped, the last value of a scalar wins, proto3 defaults."""
        req = cls()
        entries = req.entries
        for num, wt, v in iter_fields(memoryview(data)):
            if wt == _LEN:
                if num == 4:
                    entries.append(_decode_entry(v))
                elif num == 1:
                    req.bucket_name = str(v, "utf-8")
                elif num == 2:
                    req.root_path = str(v, "utf-8")
                elif num == INSTANCE_FIELD:
                    req.expected_instance = str(v, "utf-8")
            elif wt == _VARINT and num == 3:
                req.log_id = _signed(v)
        return req


def _decode_entry(mv: memoryview) -> LogEntry:
    e = LogEntry()
    for num, wt, v in iter_fields(mv):
        if wt == _VARINT:
            if num == 1:
                e.segId = _signed(v)
            elif num == 2:
                e.entryId = _signed(v)
        elif wt == _LEN and num == 3:
            e.values = v  # a view: the block is written from it
    return e


def encode_add_entries(bucket: str, root: str, log_id: int, seg_id: int, first: int,
                       entries: list, times: list | None = None) -> Pieces:
    """``AddEntriesRequest`` with ``LogEntry(seg_id, first + k, LogMessageLayout)``
    per ``(payload, properties)`` of ``entries`` — byte for byte what
    ``AddEntriesRequest(...).encode()`` gives, as :class:`Pieces`: the payloads
    are referenced, not copied."""
    out = Pieces()
    out.value_bytes = 0  # the entries' LogMessageLayout bytes, summed
    head = AddEntriesRequest(bucket, root, log_id).encode()
    if head:
        out.append(head)
    seg = _key(1, _VARINT) + varint(seg_id) if seg_id else b""
    k4, k2, k3 = _key(4, _LEN), _key(2, _VARINT), _key(3, _LEN)
    for k, (payload, props) in enumerate(entries):
        t = times[k] if times else None
        prefix = layout_prefix(len(payload), t)
        tail = encode_properties(props or None)
        vlen = len(prefix) + len(payload) + len(tail)
        out.value_bytes += vlen
        eid = first + k
        inner = seg + (k2 + varint(eid) if eid else b"") + (k3 + varint(vlen) if vlen else b"")
        out.append(k4 + varint(len(inner) + vlen) + inner + prefix)
        if payload:
            out.append(payload)
        if tail:
            out.append(tail)
    return out


@dataclass
class AddEntriesResponse(Msg):
    status: Status | None = None
    entry_id: list = field(default_factory=list)
    state: int = 0
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), (2, "entry_id", "rep:int64"), (3, "state", "int32"), _INSTANCE)


@dataclass
class GetBatchEntriesAdvRequest(SegReq):
    from_entry_id: int = 0
    max_entries: int = 0
    last_read_state: LastReadState | None = None
    expected_instance: str = ""
    FIELDS = _SEG + ((5, "from_entry_id", "int64"), (6, "max_entries", "int64"), (7, "last_read_state", "msg:LastReadState"),
                     _EXPECT)


@dataclass
class GetBatchEntriesAdvResponse(Msg):
    status: Status | None = None
    result: BatchReadResult | None = None
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), (2, "result", "msg:BatchReadResult"), _INSTANCE)


@dataclass
class FenceSegmentRequest(SegReq):
    expected_instance: str = ""
    FIELDS = _SEG + (_EXPECT,)


@dataclass
class LastEntryResponse(Msg):
    """FenceSegment / CompleteSegment / GetSegmentLastAddConfirmed responses."""
    status: Status | None = None
    last_entry_id: int = 0
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), (2, "last_entry_id", "int64"), _INSTANCE)


@dataclass
class CompleteSegmentRequest(SegReq):
    last_add_confirmed: int = 0
    expected_instance: str = ""
    FIELDS = _SEG + ((5, "last_add_confirmed", "int64"), _EXPECT)


@dataclass
class UpdateLastAddConfirmedRequest(SegReq):
    last_add_confirmed: int = 0
    expected_instance: str = ""
    FIELDS = _SEG + ((5, "last_add_confirmed", "int64"), _EXPECT)


@dataclass
class CompactSegmentRequest(SegReq):
    expected_instance: str = ""
    FIELDS = _SEG + (_EXPECT,)


@dataclass
class CompactSegmentResponse(Msg):
    status: Status | None = None
    metadata: SegmentMetadataMsg | None = None
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), (2, "metadata", "msg:SegmentMetadataMsg"), _INSTANCE)


@dataclass
class GetSegmentLastAddConfirmedRequest(SegReq):
    expected_instance: str = ""
    FIELDS = _SEG + (_EXPECT,)


@dataclass
class CleanSegmentRequest(SegReq):
    flag: int = 0
    expected_instance: str = ""
    FIELDS = _SEG + ((5, "flag", "int32"), _EXPECT)


@dataclass
class MarkLogDeletedRequest(Msg):
    bucket_name: str = ""
    root_path: str = ""
    log_id: int = 0
    FIELDS = _BASE


@dataclass
class StatusOnly(Msg):
    status: Status | None = None
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), _INSTANCE)


@dataclass
class AddEntryRequest(Msg):
    bucket_name: str = ""
    root_path: str = ""
    log_id: int = 0
    entry: LogEntry | None = None
    FIELDS = _BASE + ((4, "entry", "msg:LogEntry"),)


@dataclass
class AddEntryResponse(Msg):
    status: Status | None = None
    entry_id: int = 0
    state: int = 0
    FIELDS = ((1, "status", "msg:Status"), (2, "entry_id", "int64"), (3, "state", "int32"))


@dataclass
class GetSegmentBlockCountRequest(SegReq):
    expected_instance: str = ""
    FIELDS = _SEG + (_EXPECT,)


@dataclass
class BlockCountResponse(Msg):
    status: Status | None = None
    block_count: int = 0
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), (2, "block_count", "int64"), _INSTANCE)


@dataclass
class NotifySegmentCompactedRequest(SegReq):
    expected_instance: str = ""
    FIELDS = _SEG + (_EXPECT,)


@dataclass
class MarkInstanceDeletedRequest(Msg):
    bucket_name: str = ""
    root_path: str = ""
    FIELDS = ((1, "bucket_name", "string"), (2, "root_path", "string"))


@dataclass
class NodeFilter(Msg):
    az: str = ""
    resource_group: str = ""
    tags: dict = field(default_factory=dict)
    limit: int = 0
    FIELDS = ((1, "az", "string"), (2, "resource_group", "string"), (3, "tags", "map"), (4, "limit", "int32"))


@dataclass
class SelectNodesRequest(Msg):
    strategy: int = 0
    affinity_mode: int = 0
    filters: list = field(default_factory=list)
    FIELDS = ((1, "strategy", "int32"), (2, "affinity_mode", "int32"), (3, "filters", "rep:msg:NodeFilter"))


@dataclass
class NodeMeta(Msg):
    node_id: str = ""
    resource_group: str = ""
    az: str = ""
    endpoint: str = ""
    tags: dict = field(default_factory=dict)
    version: int = 0
    last_update: int = 0
    cluster_name: str = ""
    region: str = ""
    load_factor: float = 0.0
    load_updated_at: int = 0
    FIELDS = ((1, "node_id", "string"), (2, "resource_group", "string"), (3, "az", "string"), (4, "endpoint", "string"),
              (5, "tags", "map"), (6, "version", "int64"), (7, "last_update", "int64"), (8, "cluster_name", "string"),
              (9, "region", "string"), (10, "load_factor", "double"), (11, "load_updated_at", "int64"))


@dataclass
class SelectNodesResponse(Msg):
    status: Status | None = None
    nodes: list = field(default_factory=list)
    total_count: int = 0
    FIELDS = ((1, "status", "msg:Status"), (2, "nodes", "rep:msg:NodeMeta"), (3, "total_count", "int32"))


# picchio's own RPC (tail subscription, server/subscribe.py): Woodpecker's LogStore answers it
# UNIMPLEMENTED and our reader then polls as before.
@dataclass
class SubscribeEntriesRequest(SegReq):
    from_entry_id: int = 0
    max_entries: int = 0  # per frame (0: the server's default)
    expected_instance: str = ""
    FIELDS = _SEG + ((5, "from_entry_id", "int64"), (6, "max_entries", "int64"), _EXPECT)


@dataclass
class SubscribeEntriesResponse(Msg):
    """One frame: entries up to the LAC (contiguous, in order), or a final
    Status.  ``state``: SYNCED for entries, FAILED with an error Status."""
    status: Status | None = None
    entries: list = field(default_factory=list)
    lac: int = 0
    state: int = 0
    instance: str = ""
    FIELDS = ((1, "status", "msg:Status"), (2, "entries", "rep:msg:LogEntry"), (3, "lac", "int64"),
              (4, "state", "int32"), _INSTANCE)

    @property
    def entry_id(self) -> list:  # read as AddEntries frames are by Node.call
        return [e.entryId for e in self.entries]


@dataclass
class WriteBatchRequest(Msg):
    """picchio's own RPC (Woodpecker's LogStore has none: a client that gets
    UNIMPLEMENTED goes back to one call each): the AddEntries and
    UpdateLastAddConfirmed requests of many segments for one LogStore, sent at
    the same moment, in one call.  Each item is byte for byte the request it
    stands for, with its own expected instance.  Why: with many logs every block
    carries one entry, and a gRPC call costs ~1 ms of CPU across client and
    server on this machine — the group commit across logs, on the wire."""
    adds: list = field(default_factory=list)
    lacs: list = field(default_factory=list)
    FIELDS = ((1, "adds", "rep:msg:AddEntriesRequest"), (2, "lacs", "rep:msg:UpdateLastAddConfirmedRequest"))

    @classmethod
    def decode(cls, data: bytes) -> "WriteBatchRequest":
        """Entries stay views into the message, as in AddEntriesRequest.decode."""
        req = cls()
        for num, wt, v in iter_fields(memoryview(data)):
            if wt == _LEN and num == 1:
                req.adds.append(AddEntriesRequest.decode(v))
            elif wt == _LEN and num == 2:
                req.lacs.append(UpdateLastAddConfirmedRequest.decode(bytes(v)))
        return req


def encode_write_batch(adds: list[bytes | Pieces], lacs: list[bytes]) -> Pieces:
    """A WriteBatchRequest from encoded items (each already carrying its expected
    instance), the payloads still by reference."""
    out = Pieces()
    k1, k2 = _key(1, _LEN), _key(2, _LEN)
    for item in adds:
        n = sum(len(p) for p in item) if isinstance(item, Pieces) else len(item)
        out.append(k1 + varint(n))
        if isinstance(item, Pieces):
            out.extend(item)
        else:
            out.append(item)
    for item in lacs:
        out.append(k2 + varint(len(item)) + item)
    return out


@dataclass
class WriteBatchResponse(Msg):
    """One reply per item, in the request's order (AddEntries: its final frame)."""
    adds: list = field(default_factory=list)
    lacs: list = field(default_factory=list)
    status: Status | None = None  # set when the whole call failed (then there are no items)
    instance: str = ""
    FIELDS = ((1, "adds", "rep:msg:AddEntriesResponse"), (2, "lacs", "rep:msg:StatusOnly"), (3, "status", "msg:Status"),
              _INSTANCE)


# RPC name → (request type, response type, server-streaming?)
METHODS: dict[str, tuple[type[Msg], type[Msg], bool]] = {
    "AddEntries": (AddEntriesRequest, AddEntriesResponse, True),
    "GetBatchEntriesAdv": (GetBatchEntriesAdvRequest, GetBatchEntriesAdvResponse, False),
    "FenceSegment": (FenceSegmentRequest, LastEntryResponse, False),
    "CompleteSegment": (CompleteSegmentRequest, LastEntryResponse, False),
    "CompactSegment": (CompactSegmentRequest, CompactSegmentResponse, False),
    "GetSegmentLastAddConfirmed": (GetSegmentLastAddConfirmedRequest, LastEntryResponse, False),
    "UpdateLastAddConfirmed": (UpdateLastAddConfirmedRequest, StatusOnly, False),
    "CleanSegment": (CleanSegmentRequest, StatusOnly, False),
    "MarkLogDeleted": (MarkLogDeletedRequest, StatusOnly, False),
    "AddEntry": (AddEntryRequest, AddEntryResponse, True),
    "GetSegmentBlockCount": (GetSegmentBlockCountRequest, BlockCountResponse, False),
    "NotifySegmentCompacted": (NotifySegmentCompactedRequest, StatusOnly, False),
    "MarkInstanceDeleted": (MarkInstanceDeletedRequest, StatusOnly, False),
    "SelectNodes": (SelectNodesRequest, SelectNodesResponse, False),
    "SubscribeEntries": (SubscribeEntriesRequest, SubscribeEntriesResponse, True),
    "WriteBatch": (WriteBatchRequest, WriteBatchResponse, False),
}


class Code:
    """Status codes of this implementation (0 = OK)."""
    OK = 0
    FENCED = 1001
    NOT_FOUND = 1002
    OUT_OF_ORDER = 1003
    DISK_SOFT_LIMIT = 1004
    DISK_FULL = 1005
    COMPLETED = 1006
    INVALID = 1007
    INTERNAL = 1008
    STORAGE = 1009
    WRONG_INSTANCE = 1010  # the request expected another instance (the data dir was replaced)
    DECOMMISSIONING = 1011  # the LogStore is leaving (decommission.py): appends go to another ensemble
    # Woodpecker's own codes (common/werr) where its client depends on them: its reader waits and
    # retries on ENTRY_NOT_FOUND and moves to the next segment on END_OF_FILE, and takes an OK
    # without entries for a bug (woodpecker/log/log_reader.go indexes the first entry).
    END_OF_FILE = 2310      # read past the end of a completed segment
    ENTRY_NOT_FOUND = 8102  # nothing past the LAC of an active segment yet (retriable)



