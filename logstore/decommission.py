"""Decommissioning a LogStore before it is removed (service mode).

Why: removing a LogStore takes away its copy of every segment it holds that
is not yet in object storage; a segment that had its acknowledged entries on
that LogStore and one other is then down to one copy — below the ack quorum
the writer promised.  So a LogStore leaves in three steps, all through etcd:

1. **Mark** ``{P}/decommissioning/{endpoint}`` (JSON, no lease: it must
   outlive the operator's pass).  From then on clients never put a *new*
   segment on it (``ServiceBackend.choose_quorum`` skips marked endpoints).
2. The LogStore sees its mark (it polls it every second) and **refuses
   appends** with ``Code.DECOMMISSIONING``; it keeps serving fences,
   completions, reads and compaction.  The refusal drops it from the
   segment's write set: the block is acknowledged by the other replicas (an
   ack still means ``ackQuorum`` fdatasyncs), the segment is *degraded* and
   the writer seals it and rolls to an ensemble without the LogStore — the
   user's append never fails.  The LogStore then records
   ``"decommissioning": true`` in its registration: the acknowledgement.
3. **Drain**: every segment whose ensemble names the endpoint and that is
   still Active or Completed (i.e. not Sealed into object storage) is
   "held".  Completed ones are compacted (:func:`flush`); Active ones wait
   for their writer to roll them.  Once the LogStore has acknowledged (or
   is not running at all) and nothing is held, it holds nothing that is not
   in object storage and can be removed.

Why the acknowledgement matters: a client that read the marks just before
step 1 may still create a segment on the LogStore.  After the LogStore
refuses appends, no acknowledged entry can count it any more, and every
segment it accepted entries for is already in etcd — so one scan made after
the acknowledgement that finds nothing held is final.

Cancelling (a scale-up meanwhile) is :func:`unmark`: the LogStore accepts
appends again and clients may choose it again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .meta import MetaStore
from .proto import SegmentMetadata, SegmentState

POLL_SECONDS = 1.0  # how often a LogStore looks at its own mark


def _key(meta: MetaStore, endpoint: str = "") -> bytes:
    return meta.keys._k("decommissioning", endpoint)


async def mark(meta: MetaStore, endpoint: str, reason: str = "", **extra: Any) -> None:
    """Mark ``endpoint`` as leaving (idempotent: an existing mark is kept).
    ``extra`` is recorded with it (the operator: the pod it belongs to)."""
    key = _key(meta, endpoint)
    if await meta.raw("get", key) is None:
        doc = {"endpoint": endpoint, "since": int(time.time() * 1000), "reason": reason, **extra}
        await meta.raw("put", key, json.dumps(doc).encode())


async def unmark(meta: MetaStore, endpoint: str) -> None:
    await meta.raw("delete", _key(meta, endpoint))


async def marked(meta: MetaStore) -> dict[str, dict[str, Any]]:
    """Every marked endpoint → its mark."""
    prefix = _key(meta)
    out: dict[str, dict[str, Any]] = {}
    for kv in await meta.raw("get_prefix", prefix):
        try:
            doc = json.loads(kv.value)
        except ValueError:
            doc = {}
        out[kv.key[len(prefix):].decode()] = doc
    return out


async def is_marked(meta: MetaStore, endpoint: str) -> bool:
    return await meta.raw("get", _key(meta, endpoint)) is not None


@dataclass(frozen=True)
class HeldSegment:
    log: str
    segment: int
    state: SegmentState
    endpoints: tuple[str, ...]  # which of the leaving endpoints its ensemble names


@dataclass
class Holdings:
    """What the leaving LogStores still hold that is not in object storage."""
    segments: list[HeldSegment] = field(default_factory=list)

    @property
    def active(self) -> list[HeldSegment]:
        return [s for s in self.segments if s.state == SegmentState.ACTIVE]

    @property
    def completed(self) -> list[HeldSegment]:
        return [s for s in self.segments if s.state == SegmentState.COMPLETED]

    def per_endpoint(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.segments:
            for e in s.endpoints:
                out[e] = out.get(e, 0) + 1
        return out


async def held(meta: MetaStore, endpoints: list[str] | set[str]) -> Holdings:
    """One range read of every log's segment metadata: the segments whose
    ensemble names one of ``endpoints`` and that are not Sealed (Active: on
    LogStores only; Completed: not yet compacted).  Truncated segments are
    past reading and are not counted."""
    leaving = set(endpoints)
    base = meta.keys.logs_prefix
    out = Holdings()
    if not leaving:
        return out
    for kv in await meta.raw("get_prefix", base):
        name, sep, rest = kv.key[len(base):].decode().partition("/segments/")
        if not sep or "/" in rest:
            continue
        m = SegmentMetadata.decode(kv.value)
        if m.state not in (SegmentState.ACTIVE, SegmentState.COMPLETED) or m.quorum is None:
            continue
        hit = tuple(sorted(leaving.intersection(m.quorum.nodes)))
        if hit:
            out.segments.append(HeldSegment(name, m.seg_no, m.state, hit))
    out.segments.sort(key=lambda s: (s.log, s.segment))
    return out


async def acknowledged(meta: MetaStore, endpoints: list[str] | set[str]) -> dict[str, str]:
    """For each endpoint: ``refusing`` (its registration says it refuses
    appends), ``accepting`` (registered, has not seen its mark yet) or
    ``absent`` (not registered: not running, so accepting nothing)."""
    from .server.membership import live_logstores
    regs = {r.get("endpoint"): r for r in await live_logstores(meta)}
    return {e: ("absent" if e not in regs else "refusing" if regs[e].get("decommissioning") else "accepting")
            for e in endpoints}


async def flush(client: Any, holdings: Holdings, attempts: int = 1) -> list[str]:
    """Compact every Completed held segment into object storage (the same
    path a writer takes after sealing); returns one line per failure.  Active
    segments are left to their writers: fencing one would end a live
    writer."""
    errors: list[str] = []
    handles: dict[str, Any] = {}
    for s in holdings.completed:
        try:
            h = handles.get(s.log) or await client.open_log(s.log)
            handles[s.log] = h
            await h.compact_segment(s.segment, attempts=attempts)
        except Exception as e:  # noqa: BLE001 - reported; the next pass retries
            errors.append(f"{s.log}/{s.segment}: {type(e).__name__}: {e}")
    return errors
