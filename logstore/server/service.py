"""The gRPC LogStore service: Woodpecker's service and method names, our
hand-encoded messages (``logstore.rpc``), one :class:`StagedSegment` per
(bucket, rootPath, log, segment).  Errors travel in ``Status`` (code, reason,
retriable) as in Woodpecker; the transport only fails when the process does."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from .. import authz
from ..codec import FLAG_COMPACTED
from ..config import Config
from ..errors import LogstoreError
from ..rpc import (METHODS, SERVICE, AddEntriesResponse, AddEntryResponse, AddEntryState, BatchReadResult,
                   BlockCountResponse, Code, CompactSegmentResponse, GetBatchEntriesAdvResponse, LastEntryResponse,
                   LastReadState, LogEntry, NodeMeta, SegmentMetadataMsg, SelectNodesResponse, Status, StatusOnly,
                   WriteBatchResponse)
from ..storage.base import BlockRef
from ..storage.groupsync import GroupSync, syncfs_safe
from .metrics import Metrics
from .staged import StagedError, StagedSegment
from .subscribe import Subscriptions

log = logging.getLogger(__name__)
_Key = tuple[str, str, int, int]


_CODE_NAMES = {v: k for k, v in vars(Code).items() if k.isupper()}  # 1005 → "DISK_FULL" (metric labels)


def _ok() -> Status:
    return Status(reason="ok", code=Code.OK)


def _err(e: BaseException) -> Status:
    if isinstance(e, StagedError):
        return Status(reason=str(e), code=e.code, retriable=e.retriable)
    return Status(reason=f"{type(e).__name__}: {e}", code=Code.INTERNAL, retriable=True)


class LogStoreService:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.root = Path(config["woodpecker.storage.rootPath"])
        self.sync_wait = config["woodpecker.logstore.segmentSyncPolicy.maxIntervalForService"]
        self.segments: dict[_Key, StagedSegment] = {}
        self.meta: Any = None  # the MetaStore, set by the server once connected (SelectNodes)
        self.instance = ""  # this data dir's identity (server/identity.py), set before serving
        self._objects: dict[tuple[str, str], Any] = {}
        self.max_bytes = config["woodpecker.logstore.disk.maxBytes"]
        self.soft, self.hard = config["woodpecker.logstore.disk.softLimit"], config["woodpecker.logstore.disk.hardLimit"]
        # bytes of appends accepted by the watermark check and not yet answered: waiting for a gap to
        # fill, queued for the next block or being written.  They count against the limits, or a replica
        # that lags (or receives a burst) accepts them all at one reading and jumps past the hard limit.
        self.accepted = 0
        # set while this LogStore is marked as leaving (decommission.py): appends are refused with
        # Code.DECOMMISSIONING so writers roll to an ensemble without it; everything else is served
        self.decommissioning = False
        # staged bytes of segments on disk that no request has opened since this process started:
        # they count against the budget as soon as the LogStore starts, not once a request touches them
        self._on_disk: dict[Path, int] = self._scan_staged() if self.max_bytes else {}
        self._on_disk_bytes = sum(self._on_disk.values())
        # staged bytes per open segment (0 once compacted) and their total, kept by the segments'
        # listener as they change: each append's disk check reads the total in O(1), not a sum over
        # every segment held (O(logs) per append, measured by `picchio bench scale`)
        self._staged_of: dict[StagedSegment, int] = {}
        self._staged_total = 0
        self._staged_lock = threading.Lock()  # segments' writes finish in worker threads
        self.subs = Subscriptions(self)  # tail subscribers (subscribe.py), woken as a segment's LAC moves
        # group commit across segments (storage/groupsync.py), decided once the data dir exists
        self._group_mode = config["woodpecker.logstore.segmentSyncPolicy.groupSync"]
        self.group: GroupSync | None = None
        self._group_seen = (0, 0)  # its tallies already in the metrics

    # -- segments ------------------------------------------------------------------------
    def _dir(self, k: _Key) -> Path:
        bucket, root, log_id, seg_id = k
        return self.root / bucket / root / str(log_id) / str(seg_id)

    def segment(self, k: _Key) -> StagedSegment:
        s = self.segments.get(k)
        if s is None:
            d = self._dir(k)
            if self._group_mode == "auto" and self.root.is_dir():  # decided once, with the first segment
                self._group_mode = "on" if syncfs_safe(self.root) else "off"
                self.group = GroupSync(self.root) if self._group_mode == "on" else None
            s = self.segments[k] = StagedSegment.open(d, k[2], k[3], self.sync_wait, self.group)
            self._on_disk_bytes -= self._on_disk.pop(d, 0)  # counted through the segment from now on
            with self._staged_lock:
                self._staged_of[s] = 0
            s.listener = self._staged
            self._staged(s, 0 if s.compacted else s.bytes)
        return s

    def _staged(self, s: StagedSegment, nbytes: int) -> None:
        """A segment's staged bytes are now ``nbytes`` (its listener); ignored once it is dropped."""
        with self._staged_lock:
            old = self._staged_of.get(s)
            if old is not None:
                self._staged_of[s] = nbytes
                self._staged_total += nbytes - old

    def _drop(self, k: _Key) -> StagedSegment | None:
        """Forget segment ``k`` (removed or cleaned): its bytes leave the total."""
        s = self.segments.pop(k, None)
        if s is not None:
            s.listener = None
            with self._staged_lock:
                self._staged_total -= self._staged_of.pop(s, 0)
        return s

    def _scan_staged(self) -> dict[Path, int]:
        out: dict[Path, int] = {}
        for dirpath, _, names in os.walk(self.root):
            if "data.log" in names and "data.compacted" not in names:
                try:
                    out[Path(dirpath)] = os.stat(os.path.join(dirpath, "data.log")).st_size
                except OSError:
                    pass
        return out

    def _forget(self, removed: Path) -> None:
        for d in [d for d in self._on_disk if d == removed or removed in d.parents]:
            self._on_disk_bytes -= self._on_disk.pop(d)

    def known(self, k: _Key) -> bool:
        return k in self.segments or self._dir(k).exists()

    # -- disk watermarks -------------------------------------------------------------------
    def disk_usage(self) -> float:
        """Fraction of the staging budget in use: our staged bytes over
        disk.maxBytes when a budget is set, else the file system's fill level."""
        if self.max_bytes:
            staged = self._staged_total + self._on_disk_bytes
            return staged / self.max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(self.root)
        used, avail = st.f_blocks - st.f_bfree, st.f_bavail  # as df computes Use%: root's reserve excluded
        return used / (used + avail) if used + avail else 0.0

    def usage_ratio(self, scrape: bool = True) -> float:
        """What the ``picchio_logstore_disk_usage_ratio`` gauge shows: written
        plus accepted-but-unwritten bytes, read now (scrapes, probes, appends)."""
        u = self.disk_usage() + self._ratio(self.accepted)
        self.metrics.set("picchio_logstore_disk_usage_ratio", u)
        self.metrics.set("picchio_logstore_disk_accepted_bytes", self.accepted)
        # the limits beside the level, so an alert compares each LogStore with its own configuration
        self.metrics.set("picchio_logstore_disk_soft_limit_ratio", self.soft)
        self.metrics.set("picchio_logstore_disk_hard_limit_ratio", self.hard)
        with self._staged_lock:
            live = sum(1 for n in self._staged_of.values() if n) if scrape else None
        if scrape:  # O(segments): for a scrape, not on every append
            self.metrics.set("picchio_logstore_staged_segments", live + len(self._on_disk))
            if self.group is not None:  # the group thread's own tallies, brought into the counters
                syncs, blocks = self.group.groups, self.group.blocks
                self.metrics.inc("picchio_logstore_group_syncs_total", syncs - self._group_seen[0])
                self.metrics.inc("picchio_logstore_group_blocks_total", blocks - self._group_seen[1])
                self._group_seen = (syncs, blocks)
        return u

    def _ratio(self, nbytes: int) -> float:
        """``nbytes`` as a fraction of the staging budget (or of the file system)."""
        if not nbytes:
            return 0.0
        if self.max_bytes:
            return nbytes / self.max_bytes
        try:
            st = os.statvfs(self.root)
        except OSError:
            return 0.0
        total = (st.f_blocks - st.f_bfree + st.f_bavail) * st.f_frsize
        return nbytes / total if total else 0.0

    def _check_disk(self, incoming: int) -> None:
        """Refuse an append of ``incoming`` bytes when what is written plus what
        is already accepted is above the soft limit (retriable push-back), or
        when accepting it would carry this LogStore past the hard limit."""
        u = self.usage_ratio(scrape=False)
        after = u + self._ratio(incoming)
        if u >= self.hard:
            raise StagedError(Code.DISK_FULL, f"disk above the hard limit ({u:.0%} ≥ {self.hard:.0%}): writes refused")
        if u >= self.soft:
            raise StagedError(Code.DISK_SOFT_LIMIT, f"disk above the soft limit ({u:.0%} ≥ {self.soft:.0%}): "
                              "retry later or elsewhere", retriable=True)
        if after > self.hard:
            raise StagedError(Code.DISK_FULL, f"this append would pass the disk's hard limit ({u:.0%} in use or "
                              f"accepted, {after:.0%} after it > {self.hard:.0%}): write refused")

    def _append_failed(self, e: BaseException) -> Status:
        """The Status of a failed AddEntries, counted by its code's name so a
        dashboard tells disk push-back from fencing from internal failures."""
        st = _err(e)
        self.metrics.inc("picchio_logstore_append_errors_total", code=_CODE_NAMES.get(st.code, str(st.code)))
        return st

    # -- RPCs ------------------------------------------------------------------------------------
    async def AddEntries(self, req) -> AsyncIterator[AddEntriesResponse]:
        ids = [e.entryId for e in req.entries]
        t0 = time.monotonic()
        try:
            if not req.entries:
                raise StagedError(Code.INVALID, "AddEntries without entries")
            seg_id = req.entries[0].segId
            if any(e.segId != seg_id for e in req.entries) or ids != list(range(ids[0], ids[0] + len(ids))):
                raise StagedError(Code.INVALID, "entries must be contiguous and of one segment")
            if self.decommissioning:
                raise StagedError(Code.DECOMMISSIONING, "this LogStore is being decommissioned: it takes no more "
                                  "appends (the writer seals the segment and moves to another ensemble)")
            incoming = sum(len(e.values) for e in req.entries)
            self._check_disk(incoming)
            # counted now, with no await since the check: requests that arrive together run their
            # checks one after another in one turn of the loop, before any _append task has started
            # (they all passed at 0 % under load, and a burst went past the hard limit)
            self.accepted += incoming
        except Exception as e:  # noqa: BLE001 - refused before buffering: one Failed frame, as Woodpecker
            yield AddEntriesResponse(self._append_failed(e), ids, AddEntryState.FAILED)
            return
        # Woodpecker's protocol (its server, and its client's AppendEntries): one Buffered frame
        # naming every entry once they are accepted, then Synced/Failed frames until each entry
        # is resolved.  Its client reads the first frame as the Buffered one, so a lone Synced
        # frame would leave it waiting for a second one (and failing on EOF).
        # Buffered is a promise: the append goes on if the client cancels the stream (Woodpecker's
        # client does, for the replicas beyond its ack quorum, once the quorum has acked).
        task = asyncio.ensure_future(self._append(req, seg_id, ids, incoming, t0))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if nobody waits
        yield AddEntriesResponse(_ok(), ids, AddEntryState.BUFFERED)
        try:
            await asyncio.shield(task)
            yield AddEntriesResponse(_ok(), ids, AddEntryState.SYNCED)
        except Exception as e:  # noqa: BLE001 - reported in Status
            yield AddEntriesResponse(self._append_failed(e), ids, AddEntryState.FAILED)

    async def _append(self, req, seg_id: int, ids: list[int], incoming: int, t0: float) -> None:
        # ``incoming`` was added to self.accepted by AddEntries: it counts until answered (then it is
        # in the segment's bytes, or refused)
        try:
            s = self.segment((req.bucket_name, req.root_path, req.log_id, seg_id))
            await s.append(ids[0], [e.values for e in req.entries])
            self.subs.changed((req.bucket_name, req.root_path, req.log_id, seg_id))  # durable here now
        finally:
            self.accepted -= incoming
        self.metrics.inc("picchio_logstore_entries_total", len(ids))
        self.metrics.inc("picchio_logstore_bytes_total", incoming)
        self.metrics.observe("picchio_logstore_append_seconds", time.monotonic() - t0)

    async def WriteBatch(self, req) -> WriteBatchResponse:
        """Many segments' AddEntries and LAC updates in one call (rpc.WriteBatchRequest):
        each item goes exactly the way its own RPC would (its instance check
        included) and gets the reply that RPC would give — for an AddEntries its
        final frame — so one item's failure is that item's alone."""
        adds = await asyncio.gather(*(self._batched_add(r) for r in req.adds))
        lacs = []
        for r in req.lacs:
            refused = _wrong_instance(self, r)
            if refused is not None:
                lacs.append(StatusOnly(refused))
                continue
            try:
                lacs.append(await self.UpdateLastAddConfirmed(r))
            finally:
                self.subs.after("UpdateLastAddConfirmed", r)
        return WriteBatchResponse(list(adds), lacs)

    async def _batched_add(self, r) -> AddEntriesResponse:
        refused = _wrong_instance(self, r)
        if refused is not None:
            return AddEntriesResponse(refused, [e.entryId for e in r.entries], AddEntryState.FAILED)
        last = None
        async for last in self.AddEntries(r):
            pass
        assert last is not None
        return last

    def SubscribeEntries(self, req) -> AsyncIterator[Any]:
        return self.subs.serve(req)  # entries streamed as the LAC moves: subscribe.py

    async def GetBatchEntriesAdv(self, req) -> GetBatchEntriesAdvResponse:
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        if not self.known(k):
            return GetBatchEntriesAdvResponse(Status("segment not on this node", Code.NOT_FOUND), None)
        s = self.segment(k)
        if s.compacted:
            return GetBatchEntriesAdvResponse(Status("compacted: read object storage", Code.NOT_FOUND), None)
        rows = await asyncio.to_thread(s.read, req.from_entry_id, req.max_entries or 1000)
        self.metrics.inc("picchio_logstore_reads_total")  # a read served, with entries or none yet
        if not rows:  # Woodpecker's codes, never an empty OK (see Code.END_OF_FILE)
            # END_OF_FILE makes Woodpecker's reader leave the segment at once, whatever the other
            # replicas hold: only past the writer's LAC, not past what this (lagging) replica got
            if s.footer is not None and req.from_entry_id > max(s.lac, s.writer_lac):
                return GetBatchEntriesAdvResponse(Status("end of file", Code.END_OF_FILE), None)
            return GetBatchEntriesAdvResponse(Status("entry not found", Code.ENTRY_NOT_FOUND, retriable=True), None)
        complete = s.footer is not None and rows[-1][0] >= s.lac
        result = BatchReadResult([LogEntry(req.segment_id, eid, v) for eid, v in rows],
                                 LastReadState(segment_id=req.segment_id, flags=1 if complete else 0,
                                               last_block_id=len(s.blocks) - 1, node=""))
        return GetBatchEntriesAdvResponse(_ok(), result)

    async def FenceSegment(self, req) -> LastEntryResponse:
        s = self.segment((req.bucket_name, req.root_path, req.log_id, req.segment_id))
        if s.footer is not None or s.compacted:
            return LastEntryResponse(_ok(), s.lac)
        return LastEntryResponse(_ok(), await s.fence())

    async def CompleteSegment(self, req) -> LastEntryResponse:
        s = self.segment((req.bucket_name, req.root_path, req.log_id, req.segment_id))
        return LastEntryResponse(_ok(), await s.complete(req.last_add_confirmed))

    async def UpdateLastAddConfirmed(self, req) -> StatusOnly:
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        if self.known(k):
            self.segment(k).update_lac(req.last_add_confirmed)
        return StatusOnly(_ok())

    async def GetSegmentLastAddConfirmed(self, req) -> LastEntryResponse:
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        if not self.known(k):
            return LastEntryResponse(Status("segment not on this node", Code.NOT_FOUND), -1)
        s = self.segment(k)
        return LastEntryResponse(_ok(), s.visible())

    async def CompactSegment(self, req) -> CompactSegmentResponse:
        """Upload m_k.blk objects and the compacted footer; drop the local file
        only once the footer is in the bucket (the commit point)."""
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        s = self.segment(k)
        if s.footer is None and not s.compacted:
            return CompactSegmentResponse(Status("complete the segment first", Code.INVALID), None)
        objects = self._objects_for(req.bucket_name, req.root_path)
        if s.compacted:
            found = await objects.read_footer(req.log_id, req.segment_id)
            size = found[0].total_size if found else 0
            return CompactSegmentResponse(_ok(), SegmentMetadataMsg(segNo=req.segment_id, state=3, size=size))
        target = self.config["woodpecker.logstore.segmentCompactionPolicy.maxBytes"]
        merged: list[BlockRef] = []
        blocks, lac, start = list(s.blocks), s.lac, 0
        rfd = os.open(s.path, os.O_RDONLY)
        try:
            while (got := await asyncio.to_thread(s.merged_object, rfd, blocks, start, lac, target,
                                                  len(merged))) is not None:
                body, first, last, start = got  # one group read, CRC-checked and merged at a time (staged.py)
                await objects.s3.put(objects.key(req.log_id, req.segment_id, f"m_{len(merged)}.blk"), body)
                merged.append(BlockRef(len(merged), first, last, len(body)))
        finally:
            os.close(rfd)
        size = await objects.put_footer(req.log_id, req.segment_id, merged, s.lac, FLAG_COMPACTED, overwrite=True)
        await asyncio.to_thread(s.mark_compacted)
        self.metrics.inc("picchio_logstore_compactions_total")
        import time as _t
        return CompactSegmentResponse(_ok(), SegmentMetadataMsg(segNo=req.segment_id, state=3, size=size,
                                                                sealedTime=int(_t.time() * 1000), lastEntryId=s.lac))

    async def CleanSegment(self, req) -> StatusOnly:
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        s = self._drop(k)
        if s is not None:
            await s.drain()
            s.close()
        await asyncio.to_thread(shutil.rmtree, self._dir(k), True)
        self._forget(self._dir(k))
        return StatusOnly(_ok())

    async def MarkLogDeleted(self, req) -> StatusOnly:
        for k in [k for k in self.segments if k[:3] == (req.bucket_name, req.root_path, req.log_id)]:
            self._drop(k).close()  # type: ignore[union-attr]
        await asyncio.to_thread(shutil.rmtree, self.root / req.bucket_name / req.root_path / str(req.log_id), True)
        self._forget(self.root / req.bucket_name / req.root_path / str(req.log_id))
        return StatusOnly(_ok())

    # -- the rest of Woodpecker's service --------------------------------------------------------
    async def AddEntry(self, req) -> AsyncIterator[AddEntryResponse]:
        from ..rpc import AddEntriesRequest
        entry = req.entry or LogEntry()
        async for r in self.AddEntries(AddEntriesRequest(req.bucket_name, req.root_path, req.log_id, [entry])):
            yield AddEntryResponse(r.status, entry.entryId, r.state)

    async def GetSegmentBlockCount(self, req) -> BlockCountResponse:
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        if not self.known(k):
            return BlockCountResponse(Status("segment not on this node", Code.NOT_FOUND), 0)
        return BlockCountResponse(_ok(), len(self.segment(k).blocks))

    async def NotifySegmentCompacted(self, req) -> StatusOnly:
        """The segment is in object storage (compacted by another replica): drop
        the local copy, keeping the tombstone."""
        k = (req.bucket_name, req.root_path, req.log_id, req.segment_id)
        if self.known(k):
            s = self.segment(k)
            await s.drain()
            if not s.compacted:
                await asyncio.to_thread(s.mark_compacted)
        return StatusOnly(_ok())

    async def MarkInstanceDeleted(self, req) -> StatusOnly:
        for k in [k for k in self.segments if k[:2] == (req.bucket_name, req.root_path)]:
            self._drop(k).close()  # type: ignore[union-attr]
        await asyncio.to_thread(shutil.rmtree, self.root / req.bucket_name / req.root_path, True)
        self._forget(self.root / req.bucket_name / req.root_path)
        return StatusOnly(_ok())

    async def SelectNodes(self, req) -> SelectNodesResponse:
        """Live LogStores from etcd (our membership), filtered by zone and limit —
        Woodpecker answers this from gossip."""
        if self.meta is None:
            return SelectNodesResponse(Status("membership unavailable", Code.INTERNAL, retriable=True))
        from .membership import live_logstores
        nodes = await live_logstores(self.meta)
        f = req.filters[0] if req.filters else None
        if f and f.az:
            nodes = [n for n in nodes if n.get("zone") == f.az]
        if f and f.limit:
            nodes = nodes[: f.limit]
        return SelectNodesResponse(_ok(), [NodeMeta(node_id=n["nodeId"], az=n.get("zone", ""), endpoint=n["endpoint"],
                                                    last_update=n.get("registeredAt", 0)) for n in nodes], len(nodes))

    def _objects_for(self, bucket: str, root: str) -> Any:
        from ..storage.objects import ObjectBackend
        key = (bucket, root)
        if key not in self._objects:
            cfg = self.config.with_values({"minio.bucketName": bucket, "minio.rootPath": root})
            self._objects[key] = ObjectBackend(cfg)
        return self._objects[key]

    async def close(self) -> None:
        for s in self.segments.values():
            await s.drain()
            s.close()
        for o in self._objects.values():
            await o.close()
        if self.group is not None:
            group, self.group = self.group, None
            await asyncio.to_thread(group.close)


def generic_handler(svc: LogStoreService, authorize: bool = False) -> grpc.GenericRpcHandler:
    """``authorize``: refuse RPCs the client certificate's role may not make
    (:mod:`logstore.authz`) with gRPC PERMISSION_DENIED — a transport status, so
    Woodpecker's client and ours fail the call at once instead of reading a
    retriable Status."""
    handlers = {}
    for name, (req_t, resp_t, streaming) in METHODS.items():
        fn = svc.subs.wrap(name, getattr(svc, name))  # RPCs that move a segment's LAC wake its subscribers
        gate = _gate(svc, name) if authorize else None
        if streaming:
            handlers[name] = grpc.unary_stream_rpc_method_handler(
                _stream(svc, fn, resp_t, gate), request_deserializer=req_t.decode,
                response_serializer=lambda m: m.encode())
        else:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                _unary(svc, fn, resp_t, gate), request_deserializer=req_t.decode,
                response_serializer=lambda m: m.encode())
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


_Gate = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _gate(svc: LogStoreService, rpc: str) -> _Gate:
    async def check(context: grpc.aio.ServicerContext) -> None:
        names = (context.auth_context() or {}).get("x509_common_name") or [b""]
        cn = names[0].decode("utf-8", "replace")
        refused = authz.refusal(cn, rpc)
        if refused is not None:
            role = authz.role_of(cn) or "none"
            svc.metrics.inc("picchio_logstore_authz_denied_total", role=role, rpc=rpc)
            log.warning("refused %s to a client certificate with role %s", rpc, role)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
    return check


def _wrong_instance(svc: LogStoreService, request: Any) -> Status | None:
    """A request that expects another identity of this data dir is refused: this
    LogStore never held that segment under it (its disk was replaced), so it
    must neither accept writes for it nor answer "nothing here" about it."""
    want = getattr(request, "expected_instance", "")
    if want and want != svc.instance:
        return Status(reason=f"this LogStore is instance {svc.instance}, not {want} (data dir replaced)",
                      code=Code.WRONG_INSTANCE)
    return None


def _stamp(svc: LogStoreService, resp: Any) -> Any:
    if hasattr(resp, "instance"):
        resp.instance = svc.instance
    return resp


def _unary(svc: LogStoreService, fn: Callable[[Any], Awaitable[Any]], resp_t: type, gate: _Gate | None) -> Callable:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if gate is not None:
            await gate(context)
        refused = _wrong_instance(svc, request)
        if refused is not None:
            return _stamp(svc, resp_t(status=refused))
        try:
            return _stamp(svc, await fn(request))
        except (LogstoreError, OSError, ValueError) as e:
            log.warning("%s failed: %r", fn.__name__, e)
            return _stamp(svc, resp_t(status=_err(e)))
    return handler


def _stream(svc: LogStoreService, fn: Callable[[Any], AsyncIterator[Any]], resp_t: type,
            gate: _Gate | None) -> Callable:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if gate is not None:
            await gate(context)
        refused = _wrong_instance(svc, request)
        if refused is not None:
            yield _stamp(svc, resp_t(status=refused, state=AddEntryState.FAILED))
            return
        async for item in fn(request):
            yield _stamp(svc, item)
    return handler
