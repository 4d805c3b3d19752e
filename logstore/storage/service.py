"""Service mode (QuorumBuffer): segments live on LogStore servers until they
are compacted into object storage.

An append's block is sent to the segment's write quorum in parallel and is
durable once ``ackQuorum`` LogStores answered *Synced* (each fdatasync'd it).
A LogStore that fails is dropped from the segment; with fewer than ackQuorum
left the block fails with :class:`QuorumUnavailableError` — at once when the
nodes refuse connections, at the latest after ``quorum.requestTimeout``.
Recovery fences the ensemble, takes the LAC from ``ensemble − ack + 1``
replies and completes the segment there.  Sealed segments are read straight
from object storage; active ones from the LogStores, up to the LAC.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ..codec import BlockHeader, DecodedBlock
from ..config import Config
from ..errors import QuorumUnavailableError, StorageError, StorageFullError, WriterFencedError
from ..meta import MetaStore
from ..proto import QuorumInfo, encode_layout
from ..rpc import (METHODS, SERVICE, AddEntriesRequest, AddEntryState, CleanSegmentRequest, Code,
                   CompactSegmentRequest, CompleteSegmentRequest, FenceSegmentRequest, GetBatchEntriesAdvRequest,
                   GetSegmentLastAddConfirmedRequest, LogEntry, MarkLogDeletedRequest, NotifySegmentCompactedRequest,
                   UpdateLastAddConfirmedRequest)
from .base import Backend, BlockRef, Recovered, ScanResult, SegmentWriter
from .objects import ObjectBackend, ObjectCursor

log = logging.getLogger(__name__)
_LAC_PUSH_DELAY = 0.005
_SUSPECT_FOR = 30.0  # seconds a LogStore that failed a call is left out of new ensembles  # bounds how stale a replica's LAC is; readers in other processes wait at most this more


class NodeError(Exception):
    def __init__(self, endpoint: str, code: int, message: str, retriable: bool = True) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint, self.code, self.retriable = endpoint, code, retriable


class Node:
    """One LogStore endpoint: a channel and a callable per RPC."""

    def __init__(self, endpoint: str, config: Config) -> None:
        self.endpoint = endpoint
        creds = _channel_credentials(config)
        opts = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        if config["woodpecker.logstore.tls.serverName"]:
            opts.append(("grpc.ssl_target_name_override", config["woodpecker.logstore.tls.serverName"]))
        self.channel = (grpc.aio.secure_channel(endpoint, creds, options=opts) if creds
                        else grpc.aio.insecure_channel(endpoint, options=opts))
        self._calls: dict[str, Any] = {}
        for name, (req_t, resp_t, streaming) in METHODS.items():
            make = self.channel.unary_stream if streaming else self.channel.unary_unary
            self._calls[name] = make(f"/{SERVICE}/{name}", request_serializer=_serialize,
                                     response_deserializer=resp_t.decode)

    async def call(self, name: str, req: Any, timeout: float) -> Any:
        try:
            if METHODS[name][2]:
                last = None
                async for resp in self._calls[name](req, timeout=timeout):
                    last = resp
                    if resp.state != AddEntryState.BUFFERED:
                        break
                resp = last
            else:
                resp = await self._calls[name](req, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise NodeError(self.endpoint, -1, f"{name}: {e.code().name}: {e.details()}") from None
        st = getattr(resp, "status", None)
        if st is not None and st.code != Code.OK:
            raise NodeError(self.endpoint, st.code, f"{name}: {st.reason}", st.retriable)
        return resp

    async def close(self) -> None:
        await self.channel.close()


def _serialize(m: Any) -> bytes:
    """Messages encode themselves; bytes are a request already encoded once for
    every replica it goes to (a block's entries are not re-encoded per node)."""
    return m if isinstance(m, bytes) else m.encode()


def _channel_credentials(cfg: Config) -> grpc.ChannelCredentials | None:
    if not cfg["woodpecker.logstore.tls.enabled"]:
        return None
    read = lambda k: Path(cfg[k]).read_bytes() if cfg[k] else None  # noqa: E731
    return grpc.ssl_channel_credentials(root_certificates=read("woodpecker.logstore.tls.caFile"),
                                        private_key=read("woodpecker.logstore.tls.clientKeyFile"),
                                        certificate_chain=read("woodpecker.logstore.tls.clientCertFile"))


@dataclass
class ServiceCursor:
    next_entry: int = 0
    objects: ObjectCursor | None = None
    checked_footer: bool = False
    node: int = 0


@dataclass
class _SegState:
    quorum: QuorumInfo
    bad: set[str] = field(default_factory=set)


class ServiceSegmentWriter(SegmentWriter):
    def __init__(self, b: "ServiceBackend", log_id: int, seg_id: int, quorum: QuorumInfo) -> None:
        self.b, self.log_id, self.seg_id, self.q = b, log_id, seg_id, quorum
        self.bad: set[str] = set()
        self._lac = -1
        self._lac_sent = -1
        self._lac_task: asyncio.Task | None = None

    @property
    def parallel(self) -> int:
        return 8

    def _targets(self) -> list[str]:
        return [n for n in self.q.nodes[: self.q.wq] if n not in self.bad]

    async def write_block(self, header: BlockHeader, pieces: list, entries: list | None = None) -> BlockRef:
        assert entries is not None
        first = header.first_entry_id
        req = AddEntriesRequest(self.b.bucket, self.b.root, self.log_id,
                                [LogEntry(self.seg_id, first + k, encode_layout(p, props or None))
                                 for k, (p, props) in enumerate(entries)])
        size = sum(len(e.values) for e in req.entries)
        await self.b.quorum_call(self.q, self.bad, "AddEntries", req.encode(), need=self.q.aq,
                                 what=f"append {self.seg_id}:{first}")
        return BlockRef(header.block_number, first, header.last_entry_id, size)

    def acked(self, lac: int) -> None:
        self._lac = lac
        if self._lac_task is None or self._lac_task.done():
            self._lac_task = asyncio.create_task(self._push_lac())

    async def _push_lac(self) -> None:
        """Coalesced: at most one push in flight, each carrying the newest LAC;
        a short pause lets a burst of acks share one round of RPCs."""
        await asyncio.sleep(_LAC_PUSH_DELAY)
        while self._lac_sent < self._lac:
            lac = self._lac
            req = UpdateLastAddConfirmedRequest(self.b.bucket, self.b.root, self.log_id, self.seg_id, lac)
            await asyncio.gather(*(self.b.node(n).call("UpdateLastAddConfirmed", req, 2.0)
                                   for n in self._targets()), return_exceptions=True)
            self._lac_sent = lac

    async def finalize(self, blocks: list[BlockRef], lac: int) -> int:
        """CompleteSegment(lac) on every replica; at least one that holds all
        entries up to ``lac`` must confirm (it will upload the segment)."""
        req = CompleteSegmentRequest(self.b.bucket, self.b.root, self.log_id, self.seg_id, lac)
        replies = await asyncio.gather(*(self.b.node(n).call("CompleteSegment", req, self.b.timeout)
                                         for n in self.q.nodes), return_exceptions=True)
        if not any(not isinstance(r, BaseException) and r.last_entry_id >= lac for r in replies):
            errors = "; ".join(str(r) for r in replies if isinstance(r, BaseException))
            raise QuorumUnavailableError(f"complete {self.log_id}/{self.seg_id}: no LogStore holding every entry "
                                         f"up to {lac} answered ({errors or 'replicas lag'})")
        return sum(b.size for b in blocks)

    async def close(self) -> None:
        if self._lac_task is not None:
            await asyncio.gather(self._lac_task, return_exceptions=True)


def pick_ensemble(live: list[dict[str, Any]], size: int, strategy: str,
                  rng: random.Random | None = None) -> list[dict[str, Any]]:
    """``size`` LogStores from ``live``: at random, or spread over zones (round
    robin over zones in random order, so no zone holds two replicas while
    another zone has none)."""
    rng = rng or random.Random()
    if strategy != "zone-spread":
        return rng.sample(live, size)
    by_zone: dict[str, list[dict[str, Any]]] = {}
    for n in rng.sample(live, len(live)):
        by_zone.setdefault(n.get("zone", ""), []).append(n)
    zones = list(by_zone)
    rng.shuffle(zones)
    picked: list[dict[str, Any]] = []
    while len(picked) < size:
        for z in zones:
            if by_zone[z] and len(picked) < size:
                picked.append(by_zone[z].pop())
    return picked


class ServiceBackend(Backend):
    kind = "service"

    def __init__(self, config: Config, meta: MetaStore) -> None:
        self.config, self.meta = config, meta
        self.objects = ObjectBackend(config)
        self.bucket, self.root = config["minio.bucketName"], config["minio.rootPath"]
        self.timeout = config["woodpecker.client.quorum.requestTimeout"]
        self.es = config["woodpecker.client.quorum.ensembleSize"]
        self.wq = config["woodpecker.client.quorum.writeQuorum"]
        self.aq = config["woodpecker.client.quorum.ackQuorum"]
        if not (self.aq <= self.wq <= self.es and self.aq > self.wq // 2):
            from ..errors import ConfigError
            raise ConfigError("woodpecker.client.quorum: need ackQuorum ≤ writeQuorum ≤ ensembleSize and "
                              f"ackQuorum > writeQuorum/2 (got {self.es}/{self.wq}/{self.aq})")
        self._nodes: dict[str, Node] = {}
        # endpoints that failed a call lately: their etcd registration outlives them by up to a
        # lease TTL, so new ensembles avoid them for a while (unless nothing else is left)
        self._suspect: dict[str, float] = {}

    def node(self, endpoint: str) -> Node:
        n = self._nodes.get(endpoint)
        if n is None:
            n = self._nodes[endpoint] = Node(endpoint, self.config)
        return n

    async def start(self) -> None:
        await self.objects.start()

    async def close(self) -> None:
        for n in self._nodes.values():
            await n.close()
        await self.objects.close()

    # -- quorum plumbing ------------------------------------------------------------
    async def quorum_call(self, q: QuorumInfo, bad: set[str], name: str, req: Any, need: int, what: str) -> list[Any]:
        """Send to every good node of ``q``; return once ``need`` succeeded.
        Failed nodes join ``bad``; too few left → QuorumUnavailableError."""
        targets = [n for n in q.nodes[: q.wq] if n not in bad]
        if len(targets) < need:
            raise QuorumUnavailableError(f"{what}: only {len(targets)} of {q.wq} LogStores left, need {need}")
        tasks = {asyncio.ensure_future(self.node(n).call(name, req, self.timeout)): n for n in targets}
        ok: list[Any] = []
        errors: list[str] = []
        full = 0  # nodes that pushed back for lack of disk: healthy, not dropped
        pending = set(tasks)
        try:
            while pending and len(ok) < need:
                done, pending = await asyncio.wait(pending, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for t in done:
                    try:
                        ok.append(t.result())
                    except NodeError as e:
                        if e.code in (Code.FENCED, Code.COMPLETED):
                            raise WriterFencedError(f"{what}: segment fenced or completed on {e.endpoint} "
                                                    "(another writer took over)") from None
                        if e.code in (Code.DISK_SOFT_LIMIT, Code.DISK_FULL):
                            full += 1
                        else:
                            bad.add(tasks[t])
                            if e.code == -1:  # the transport failed: the process is gone or unreachable
                                self._suspect[tasks[t]] = time.monotonic()
                        errors.append(str(e))
                if len(ok) + len(pending) < need:
                    break
        finally:
            if len(ok) >= need:
                for t in pending:  # stragglers finish (or fail) in the background
                    t.add_done_callback(lambda t, n=tasks[t]: bad.add(n) if t.exception() else None)
            else:
                for t in pending:
                    t.cancel()
        if len(ok) < need and full and len(ok) + full >= need:
            raise StorageFullError(f"{what}: LogStores are above their disk limits ({'; '.join(errors)})")
        if len(ok) < need:
            raise QuorumUnavailableError(f"{what}: {len(ok)} of {need} LogStores answered within "
                                         f"{self.timeout:g}s ({'; '.join(errors) or 'timed out'})")
        return ok

    async def choose_quorum(self) -> QuorumInfo:
        from ..server.membership import live_logstores
        live = await live_logstores(self.meta)
        now = time.monotonic()
        healthy = [n for n in live if now - self._suspect.get(n["endpoint"], -1e9) > _SUSPECT_FOR]
        if len(healthy) >= self.aq:
            live = healthy
        if len(live) < self.aq:
            raise QuorumUnavailableError(f"{len(live)} LogStores registered, need at least {self.aq}")
        size = min(self.es, len(live))
        if size < self.es:
            log.warning("only %d LogStores live: new segment on a degraded ensemble of %d (ack quorum %d)",
                        len(live), size, self.aq)
        picked = pick_ensemble(live, size, self.config["woodpecker.client.quorum.strategy"])
        return QuorumInfo(id=1, es=size, wq=min(self.wq, size), aq=self.aq, nodes=[n["endpoint"] for n in picked])

    async def create_segment(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> SegmentWriter:
        assert quorum is not None
        return ServiceSegmentWriter(self, log_id, seg_id, quorum)

    # -- recovery ------------------------------------------------------------------------
    async def fence_and_recover(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> Recovered:
        found = await self.objects.read_footer(log_id, seg_id)
        if found is not None:
            footer, index = found
            return Recovered([], footer.lac, footer.total_size, True)
        q = quorum or QuorumInfo(nodes=[])
        need = max(1, q.es - q.aq + 1)
        req = FenceSegmentRequest(self.bucket, self.root, log_id, seg_id)
        replies = await self.quorum_call(q, set(), "FenceSegment", req, need=need, what=f"fence {log_id}/{seg_id}")
        lac = max(r.last_entry_id for r in replies)
        creq = CompleteSegmentRequest(self.bucket, self.root, log_id, seg_id, lac)
        await self.quorum_call(q, set(), "CompleteSegment", creq, need=need, what=f"complete {log_id}/{seg_id}")
        return Recovered([], lac, 0, False)

    async def compact(self, log_id: int, seg_id: int, target_bytes: int, quorum: QuorumInfo | None = None,
                      last_entry: int | None = None) -> int | None:
        """A LogStore holding every entry up to the segment's LAC uploads it; the
        others then drop their copies.  A replica that lagged (its footer's LAC is
        lower) is never the one to upload."""
        q = quorum or QuorumInfo(nodes=[])
        req = CompactSegmentRequest(self.bucket, self.root, log_id, seg_id)
        lreq = GetSegmentLastAddConfirmedRequest(self.bucket, self.root, log_id, seg_id)
        errors = []
        for endpoint in q.nodes:
            try:
                if last_entry is not None:
                    held = (await self.node(endpoint).call("GetSegmentLastAddConfirmed", lreq, self.timeout)).last_entry_id
                    if held < last_entry:
                        errors.append(f"{endpoint}: holds up to {held}, segment ends at {last_entry}")
                        continue
                resp = await self.node(endpoint).call("CompactSegment", req, max(self.timeout, 60.0))
            except NodeError as e:
                errors.append(str(e))
                continue
            done = NotifySegmentCompactedRequest(self.bucket, self.root, log_id, seg_id)
            await asyncio.gather(*(self.node(n).call("NotifySegmentCompacted", done, 5.0)
                                   for n in q.nodes if n != endpoint), return_exceptions=True)
            return resp.metadata.size if resp.metadata else 0
        raise StorageError(f"no LogStore could compact segment {log_id}/{seg_id}: {'; '.join(errors)}")

    # -- reading ---------------------------------------------------------------------------
    async def scan(self, log_id: int, seg_id: int, cursor: ServiceCursor | None, max_bytes: int,
                   quorum: QuorumInfo | None = None, sealed_last: int | None = None) -> ScanResult:
        """``sealed_last``: the segment's last entry when metadata says it is
        completed (a replica's own footer may end earlier: it lagged)."""
        cur = cursor or ServiceCursor()
        if cur.objects is None and not cur.checked_footer:
            cur.checked_footer = True
            if await self.objects.read_footer(log_id, seg_id) is not None:
                cur.objects = ObjectCursor(next_entry=cur.next_entry)
        if cur.objects is not None:
            res = await self.objects.scan(log_id, seg_id, cur.objects, max_bytes)
            return ScanResult(res.blocks, cur, res.complete, res.lac)
        nodes = list(quorum.nodes) if quorum else []
        req = GetBatchEntriesAdvRequest(self.bucket, self.root, log_id, seg_id, from_entry_id=cur.next_entry,
                                        max_entries=2000)
        for i in range(len(nodes)):
            endpoint = nodes[(cur.node + i) % len(nodes)]
            try:
                resp = await self.node(endpoint).call("GetBatchEntriesAdv", req, self.timeout)
            except NodeError:
                continue
            entries = resp.result.entries if resp.result else []
            if not entries:
                if sealed_last is not None and cur.next_entry > sealed_last:
                    return ScanResult([], cur, True)
                if sealed_last is not None:
                    continue  # this replica lags behind the sealed LAC: ask another
                return ScanResult([], cur, False)
            cur.node = (cur.node + i) % len(nodes)
            first, last = entries[0].entryId, entries[-1].entryId
            blk = DecodedBlock(BlockHeader(0, first, last, 0, 0), [memoryview(e.values) for e in entries], 0)
            cur.next_entry = last + 1
            return ScanResult([blk], cur, sealed_last is not None and last >= sealed_last)
        # no LogStore has it: compacted (and cleaned) meanwhile?
        if await self.objects.read_footer(log_id, seg_id) is not None:
            cur.objects = ObjectCursor(next_entry=cur.next_entry)
            return await self.scan(log_id, seg_id, cur, max_bytes, quorum)
        return ScanResult([], cur, False)

    async def last_entry(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> int:
        found = await self.objects.read_footer(log_id, seg_id)
        if found is not None:
            return found[0].lac
        req = GetSegmentLastAddConfirmedRequest(self.bucket, self.root, log_id, seg_id)
        best = -1
        for endpoint in (quorum.nodes if quorum else []):
            try:
                best = max(best, (await self.node(endpoint).call("GetSegmentLastAddConfirmed", req, self.timeout)).last_entry_id)
            except NodeError:
                continue
        return best

    # -- deletion ----------------------------------------------------------------------------
    async def delete_segment(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> tuple[int, int]:
        n, b = await self.objects.delete_segment(log_id, seg_id)
        if quorum:
            req = CleanSegmentRequest(self.bucket, self.root, log_id, seg_id, 0)
            await asyncio.gather(*(self.node(e).call("CleanSegment", req, 5.0) for e in quorum.nodes),
                                 return_exceptions=True)
        return n, b

    async def delete_log(self, log_id: int) -> tuple[int, int]:
        from ..server.membership import live_logstores
        req = MarkLogDeletedRequest(self.bucket, self.root, log_id)
        live = await live_logstores(self.meta)
        await asyncio.gather(*(self.node(n["endpoint"]).call("MarkLogDeleted", req, 5.0) for n in live),
                             return_exceptions=True)
        return await self.objects.delete_log(log_id)

    async def segment_ids(self, log_id: int) -> list[int]:
        return await self.objects.segment_ids(log_id)
