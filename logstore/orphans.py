"""Orphans, both ways: stored bytes that no metadata points at, and metadata
whose bytes are gone.

A crash between an upload and its metadata, an interrupted log deletion, an
operator that lost a race: each can leave objects under the cluster's root that
no log or segment in etcd knows, and nothing else ever finds them.  The scan
compares one streamed listing of the storage root with the etcd keyspace:

- an object under ``{root}/{logId}/{segId}/…`` is an orphan when etcd has no
  log with that id, or the log has no segment with that number — and only when
  it is older than ``grace`` (a live writer may be creating the segment right
  now: a Woodpecker writer, or a clock skew between the store and us, is not
  worth a lost segment).  Candidates are checked against a fresh read of etcd
  before they are counted or deleted: picchio writes a segment's metadata
  before its first byte, so an object listed after its segment appeared in etcd
  is never taken for an orphan, even with no grace at all;
- a completed segment above the truncation watermark with no object at all is
  *missing* (checked again after the listing, so a GC run meanwhile is not
  reported as damage).  In service mode only sealed segments are expected in
  object storage: completed ones may still live on the LogStores.

Objects whose keys do not follow the layout are not ours to judge: they are
counted as ``foreign`` and never deleted.  Memory is O(segments), not
O(objects): the listing is read a page at a time and deletions go out in
batches as the scan proceeds.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from .proto import SegmentState
from .storage.s3 import ObjectInfo

if TYPE_CHECKING:
    from .client import Client

EXAMPLES = 10


@dataclass
class OrphanReport:
    """What one scan found (and, with ``delete``, removed)."""

    scanned: int = 0
    objects: int = 0
    bytes: int = 0
    deleted: int = 0
    foreign: int = 0
    young: int = 0  # unreferenced but inside the grace period: left alone
    missing_segments: list[str] = field(default_factory=list)  # "log/segment"
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"scanned": self.scanned, "objects": self.objects, "bytes": self.bytes, "deleted": self.deleted,
                "foreign": self.foreign, "young": self.young, "missingSegments": len(self.missing_segments),
                "missing": self.missing_segments, "examples": self.examples, "seconds": round(self.seconds, 3)}


@dataclass
class _Known:
    name: str
    truncated: tuple[int, int]
    segments: dict[int, Any]


async def _snapshot(client: "Client") -> dict[int, _Known]:
    known: dict[int, _Known] = {}
    for name in await client.meta.list_logs():
        v = await client.meta.get_log(name)
        if v is None:
            continue  # deleted meanwhile
        segs = {s.value.seg_no: s.value for s in await client.meta.segments(name)}
        known[v.value.log_id] = _Known(name, (v.value.truncated_segment_id, v.value.truncated_entry_id), segs)
    return known


async def _local_pages(root: Path) -> AsyncIterator[list[ObjectInfo]]:
    page: list[ObjectInfo] = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            page.append(ObjectInfo(os.path.relpath(p, root), st.st_size, st.st_mtime))
            if len(page) >= 1000:
                yield page
                page = []
    yield page


def _parse(rel: str) -> tuple[int, int] | None:
    parts = rel.split("/")
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def _referenced(known: dict[int, _Known], ids: tuple[int, int]) -> bool:
    k = known.get(ids[0])
    return k is not None and ids[1] in k.segments


def _above_mark(seg: Any, mark: tuple[int, int]) -> bool:
    return (seg.seg_no, seg.last_entry_id) > mark


async def scan_orphans(client: "Client", grace: float, delete: bool = False,
                       clock: Callable[[], float] = time.time) -> OrphanReport:
    """One scan of the client's storage root against its etcd keyspace.
    ``clock``: our wall clock, compared with the store's LastModified times
    (tests skew it: the fresh etcd read must protect live segments even when
    the store's clock lags ours)."""
    t0 = time.monotonic()
    now = clock()
    rep = OrphanReport()
    known = first = await _snapshot(client)  # first: what existed before the listing began
    backend = client.backend
    kind = backend.kind
    if kind == "local":
        root = Path(backend.root)  # type: ignore[attr-defined]
        pages, prefix, s3 = _local_pages(root), "", None
    else:
        objects = getattr(backend, "objects", backend)  # service mode: sealed data lives in its object backend
        s3 = objects.s3  # type: ignore[attr-defined]
        prefix = objects.root_prefix  # type: ignore[attr-defined]
        pages = s3.list_pages(prefix)
    seen: set[tuple[int, int]] = set()
    candidates: list[tuple[tuple[int, int], ObjectInfo]] = []

    async def settle() -> None:
        """Count (and delete) the candidates still unknown to a fresh etcd read."""
        nonlocal known
        known = await _snapshot(client)
        sure = [o for ids, o in candidates if not _referenced(known, ids)]
        candidates.clear()
        for o in sure:
            rep.objects += 1
            rep.bytes += o.size
            if len(rep.examples) < EXAMPLES:
                rep.examples.append(o.key)
        if delete and sure:
            rep.deleted += await _delete(kind, backend, s3, [o.key for o in sure])

    async for page in pages:
        for o in page:
            rep.scanned += 1
            rel = o.key[len(prefix):]
            ids = _parse(rel)
            if ids is None:
                rep.foreign += 1
                continue
            if _referenced(known, ids):
                seen.add(ids)  # only referenced segments: memory stays O(segments in etcd)
                continue
            if now - o.modified < grace:
                rep.young += 1
                continue
            candidates.append((ids, o))
            if len(candidates) >= 1000:
                await settle()
    if candidates:
        await settle()
    sealed_only = kind == "service"
    for log_id, k in first.items():
        for seg_no, seg in k.segments.items():
            expected = seg.state == SegmentState.SEALED or (not sealed_only and seg.state == SegmentState.COMPLETED)
            if expected and seg.last_entry_id >= 0 and _above_mark(seg, k.truncated) and (log_id, seg_no) not in seen:
                again = await client.meta.get_segment(k.name, seg_no)  # GC'd or replaced meanwhile?
                lm = await client.meta.get_log(k.name)
                if again is not None and lm is not None and lm.value.log_id == log_id and \
                        _above_mark(again.value, (lm.value.truncated_segment_id, lm.value.truncated_entry_id)):
                    rep.missing_segments.append(f"{k.name}/{seg_no}")
    rep.seconds = time.monotonic() - t0
    return rep


def _unlink_all(root: Path, keys: list[str]) -> int:
    n = 0
    for rel in keys:
        try:
            os.unlink(root / rel)
            n += 1
        except FileNotFoundError:
            pass
    return n


async def _delete(kind: str, backend: Any, s3: Any, keys: list[str]) -> int:
    if kind == "local":
        return await asyncio.to_thread(_unlink_all, Path(backend.root), keys)
    await s3.delete_many(keys)
    return len(keys)
