"""Service mode (QuorumBuffer): segments live on LogStore servers until they
are compacted into object storage.

An append's block is sent to the segment's write quorum in parallel and is
durable once ``ackQuorum`` LogStores answered *Synced* (each fdatasync'd it).
A LogStore that fails, misses the deadline or answers as another instance
(its data dir was replaced) is dropped from the segment and the segment is
``degraded`` (the writer seals it and rolls to a fresh ensemble); with fewer
than ackQuorum left the block fails with :class:`QuorumUnavailableError`.

Replica identity.  Each LogStore data dir has an instance id (a cookie,
server/identity.py); the segment's QuorumInfo records it per endpoint, every
request names the instance it expects and every reply names the instance that
answered.  A reply from another instance is a failure, never evidence that
"the replica has nothing".

One deadline.  Every quorum call ends, with success or a typed error, within
``quorum.requestTimeout`` measured once from its start (each RPC gets what is
left of it).  Recovery fences the ensemble and needs ``ensemble − ack + 1``
replies from genuine instances (so it meets every ack quorum), else raises
QuorumUnavailableError and leaves the segment Active for a later try.
Sealed segments are read from object storage; active ones from the LogStores,
up to the LAC, only from genuine instances.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..codec import BlockHeader, DecodedBlock
from ..config import Config
from ..errors import PermissionDeniedError, QuorumUnavailableError, StorageError, StorageFullError, WriterFencedError
from ..meta import MetaStore
from ..proto import QuorumInfo
from ..rpc import (CleanSegmentRequest, Code,
                   CompactSegmentRequest, CompleteSegmentRequest, FenceSegmentRequest, GetBatchEntriesAdvRequest,
                   GetSegmentBlockCountRequest, GetSegmentLastAddConfirmedRequest, MarkLogDeletedRequest,
                   NotifySegmentCompactedRequest, Pieces, UpdateLastAddConfirmedRequest, encode_add_entries)
from .base import Backend, BlockRef, Recovered, ScanResult, SegmentWriter
from .node import Node, NodeError
from .objects import ObjectBackend, ObjectCursor

log = logging.getLogger(__name__)
_LAC_PUSH_DELAY = 0.0  # readers in other processes wait for the push (tailpush.py): none when idle
_SUSPECT_FOR = 30.0  # seconds a LogStore that failed a call is left out of new ensembles (unless a probe finds it back)


def _raise_denied(results: list[Any]) -> None:
    """Best-effort clean-ups ignore unreachable LogStores, not a refusal: the
    caller's certificate may not delete, and must hear so."""
    for r in results:
        if isinstance(r, PermissionDeniedError):
            raise r


@dataclass
class ServiceCursor:
    next_entry: int = 0
    objects: ObjectCursor | None = None
    checked_footer: bool = False
    node: int = 0


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

    @property
    def degraded(self) -> bool:
        """True once a replica of the write quorum was dropped (failed, missed the
        deadline, or turned out to be another instance).  It never gets another
        block of this segment, so the segment has fewer copies than its write
        quorum from here on: the writer should seal it and roll to a fresh
        ensemble rather than go on like this."""
        return bool(self.bad)

    def _targets(self) -> list[str]:
        return [n for n in self.q.nodes[: self.q.wq] if n not in self.bad]

    async def write_block(self, header: BlockHeader, pieces: list, entries: list | None = None,
                          times: list | None = None) -> BlockRef:
        assert entries is not None
        first = header.first_entry_id
        # the payloads go by reference into each replica's one join (rpc.Pieces), not through
        # encode_layout + Msg.encode + a per-replica concatenation: those copied every block ~7 times
        req = encode_add_entries(self.b.bucket, self.b.root, self.log_id, self.seg_id, first, entries, times)
        await self.b.quorum_call(self.q, self.bad, "AddEntries", req, need=self.q.aq,
                                 what=f"append {self.seg_id}:{first}", segment=(self.log_id, self.seg_id))
        return BlockRef(header.block_number, first, header.last_entry_id, req.value_bytes)

    def acked(self, lac: int) -> None:
        self._lac = lac
        if self._lac_task is None or self._lac_task.done():
            self._lac_task = asyncio.create_task(self._push_lac())

    async def _push_lac(self) -> None:
        """Coalesced: at most one push in flight, each carrying the newest LAC;
        yielding once lets the acks of one burst share a round of RPCs.  Each
        round is bounded by the request timeout.  ``on_visible`` (readers in
        other processes, tailpush.py) fires after the whole round: firing at the
        first reply measured no faster — the writer's loop still serves the
        other replies — and readers then often asked a lagging replica first."""
        await asyncio.sleep(_LAC_PUSH_DELAY)
        while self._lac_sent < self._lac:
            lac = self._lac
            req = UpdateLastAddConfirmedRequest(self.b.bucket, self.b.root, self.log_id, self.seg_id, lac).encode()
            await asyncio.gather(*(self.b.node(n).write("UpdateLastAddConfirmed", req, self.b.timeout,
                                                        self.q.instance_of(n), (self.log_id, self.seg_id))
                                   for n in self._targets()), return_exceptions=True)
            self._lac_sent = lac
            if self.on_visible is not None:
                self.on_visible(lac)

    async def finalize(self, blocks: list[BlockRef], lac: int) -> int:
        """CompleteSegment(lac) on every replica, all within one request timeout;
        at least one genuine replica holding every entry up to ``lac`` must
        confirm (it can upload the segment; compaction completes the others).
        Replicas still in the segment are waited for; dropped ones only if none
        of those confirmed — a hung replica never holds up the seal beyond the
        deadline."""
        if self._lac_task is not None and not self._lac_task.done():
            # CompleteSegment carries the final LAC to every replica: a push still waiting for a hung
            # one is moot, and close() would wait for it — a whole request timeout more on the way to
            # a new ensemble (an append then failed after 3 × requestTimeout + 10 ms, not within it)
            self._lac_task.cancel()
        req = CompleteSegmentRequest(self.b.bucket, self.b.root, self.log_id, self.seg_id, lac)
        tasks = {n: asyncio.ensure_future(self.b.node(n).call("CompleteSegment", req, self.b.timeout,
                                                              self.q.instance_of(n))) for n in self.q.nodes}
        good = [n for n in self.q.nodes if n not in self.bad]
        dropped = [n for n in self.q.nodes if n in self.bad]
        if good:
            await asyncio.wait([tasks[n] for n in good])

        def holders(names: list[str]) -> bool:
            return any(tasks[n].done() and not tasks[n].cancelled() and tasks[n].exception() is None
                       and tasks[n].result().last_entry_id >= lac for n in names)
        if not holders(good) and dropped:
            await asyncio.wait([tasks[n] for n in dropped])
        for n in dropped:
            if not tasks[n].done():
                self.b.background(tasks[n])
        for n in good:
            if not tasks[n].cancelled() and isinstance(tasks[n].exception(), NodeError):
                self.bad.add(n)
        if not holders(self.q.nodes):
            errors = "; ".join(str(t.exception()) for t in tasks.values()
                               if t.done() and not t.cancelled() and t.exception() is not None)
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
        self._background: set[asyncio.Future] = set()

    def node(self, endpoint: str) -> Node:
        n = self._nodes.get(endpoint)
        if n is None:
            n = self._nodes[endpoint] = Node(endpoint, self.config)
        return n

    def background(self, coro: Any) -> None:
        """Run a bounded RPC nobody waits for (errors are only logged)."""
        t = asyncio.ensure_future(coro)
        self._background.add(t)
        t.add_done_callback(lambda t: (self._background.discard(t), t.cancelled() or t.exception()))

    async def start(self) -> None:
        await self.objects.start()

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        for n in self._nodes.values():
            await n.close()
        await self.objects.close()

    # -- quorum plumbing ------------------------------------------------------------
    async def quorum_call(self, q: QuorumInfo, bad: set[str], name: str, req: Any, need: int, what: str,
                          enough: Callable[[list[Any]], bool] | None = None,
                          segment: tuple[int, int] | None = None) -> list[Any]:
        """Send to every good node of ``q``; return once ``need`` genuine replicas
        succeeded (and, if given, ``enough(replies)`` holds: the first ``need``
        replies may come from the wrong replicas) — within ``requestTimeout``
        measured once, here: every RPC gets what is left of it.  Failed, late and
        wrong-instance nodes join ``bad``; too few left → QuorumUnavailableError
        (StorageFullError when the rest pushed back for disk)."""
        def satisfied(ok: list[Any]) -> bool:
            return len(ok) >= need and (enough is None or enough(ok))

        targets = [n for n in q.nodes[: q.wq] if n not in bad]
        if len(targets) < need:
            raise QuorumUnavailableError(f"{what}: only {len(targets)} of {q.wq} LogStores left, need {need}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body = req if isinstance(req, (bytes, Pieces)) else req.encode()
        tasks = {(self.node(n).write(name, body, self.timeout, q.instance_of(n), segment) if segment else
                  asyncio.ensure_future(self.node(n).call(name, body, self.timeout, q.instance_of(n)))): n
                 for n in targets}
        ok: list[Any] = []
        errors: list[str] = []
        full = 0  # nodes that pushed back for lack of disk: healthy, not dropped
        pending = set(tasks)
        try:
            while pending and not satisfied(ok):
                left = deadline - loop.time()
                if left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
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
                            if e.code == -1:  # the transport failed: the process is gone, hung or unreachable
                                self._suspect[tasks[t]] = time.monotonic()
                        errors.append(str(e))
                if len(ok) + len(pending) < need:
                    break
        finally:
            if satisfied(ok):
                for t in pending:  # stragglers finish (or fail) by the same deadline, in the background
                    t.add_done_callback(lambda t, n=tasks[t]: self._straggler_done(t, n, bad))
            else:
                late = loop.time() >= deadline
                for t in pending:
                    t.cancel()
                    if late:
                        bad.add(tasks[t])
                        self._suspect[tasks[t]] = time.monotonic()
                        errors.append(f"{tasks[t]}: no answer within {self.timeout:g}s")
        if len(ok) < need and full and len(ok) + full >= need:
            raise StorageFullError(f"{what}: LogStores are above their disk limits ({'; '.join(errors)})")
        if len(ok) < need:
            raise QuorumUnavailableError(f"{what}: {len(ok)} of {need} LogStores answered within "
                                         f"{self.timeout:g}s ({'; '.join(errors) or 'timed out'})")
        if not satisfied(ok):
            raise QuorumUnavailableError(f"{what}: {len(ok)} LogStores answered within {self.timeout:g}s, "
                                         f"none of them the one needed ({'; '.join(errors) or 'timed out'})")
        return ok

    def _straggler_done(self, t: asyncio.Future, endpoint: str, bad: set[str]) -> None:
        if t.cancelled() or t.exception() is not None:
            bad.add(endpoint)
            e = None if t.cancelled() else t.exception()
            if t.cancelled() or getattr(e, "code", -1) == -1:
                self._suspect[endpoint] = time.monotonic()

    async def _probe(self, endpoints: list[str]) -> dict[str, str]:
        """Which of ``endpoints`` answer now (any reply, even "not found"), and as
        which instance — within one request timeout (a LogStore that cannot
        answer this in time could not take a block either)."""
        req = GetSegmentBlockCountRequest(self.bucket, self.root, -1, -1)

        async def one(e: str) -> str | None:
            try:
                return (await self.node(e).call("GetSegmentBlockCount", req, self.timeout)).instance
            except NodeError as err:  # "no such segment" is an answer too
                return None if err.code == -1 else err.instance
        found = await asyncio.gather(*(one(e) for e in endpoints))
        return {e: i for e, i in zip(endpoints, found) if i is not None}

    async def choose_quorum(self) -> QuorumInfo:
        """An ensemble of live LogStores, recording each one's instance id.
        LogStores that failed lately are left out unless a probe finds them
        answering again (a paused process that resumed is as good as new; one
        that failed this very moment is not probed); with fewer than ackQuorum
        answering this fails fast."""
        from ..decommission import marked
        from ..server.membership import live_logstores
        live = await live_logstores(self.meta)
        # LogStores being decommissioned take no new segments (and refuse appends): see decommission.py
        leaving = set(await marked(self.meta)) if live else set()
        live = [n for n in live if n["endpoint"] not in leaving and not n.get("decommissioning")]
        now = time.monotonic()
        healthy = [n for n in live if now - self._suspect.get(n["endpoint"], -1e9) > _SUSPECT_FOR]
        # a LogStore that failed less than a request timeout ago is not worth a probe yet:
        # this keeps "no quorum" fast (an append's budget is 3 × requestTimeout)
        suspects = [n for n in live if n not in healthy
                    and now - self._suspect.get(n["endpoint"], -1e9) >= self.timeout]
        if len(healthy) < self.es and suspects:
            back = await self._probe([n["endpoint"] for n in suspects])
            for n in suspects:
                if n["endpoint"] in back:
                    self._suspect.pop(n["endpoint"], None)
                    if back[n["endpoint"]]:
                        n["instance"] = back[n["endpoint"]]
                    healthy.append(n)
        live = healthy
        if len(live) < self.aq:
            raise QuorumUnavailableError(f"{len(live)} LogStores registered and answering"
                                         f"{f' (and not decommissioning: {len(leaving)} are)' if leaving else ''}"
                                         f", need at least {self.aq}")
        size = min(self.es, len(live))
        if size < self.es:
            log.warning("only %d LogStores live: new segment on a degraded ensemble of %d (ack quorum %d)",
                        len(live), size, self.aq)
        picked = pick_ensemble(live, size, self.config["woodpecker.client.quorum.strategy"])
        return QuorumInfo(id=1, es=size, wq=min(self.wq, size), aq=self.aq, nodes=[n["endpoint"] for n in picked],
                          instances={n["endpoint"]: n["instance"] for n in picked if n.get("instance")})

    async def create_segment(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> SegmentWriter:
        assert quorum is not None
        return ServiceSegmentWriter(self, log_id, seg_id, quorum)

    # -- recovery ------------------------------------------------------------------------
    async def fence_and_recover(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> Recovered:
        """Fence the recorded ensemble and complete the segment at the highest
        last entry among ``es − aq + 1`` genuine replicas: every acknowledged
        entry reached ``aq`` replicas, so any such set holds it.  A replica that
        answers as another instance (wiped, replaced) counts as failed; too few
        genuine replies within the deadline → QuorumUnavailableError, and the
        segment stays Active for a later recovery."""
        found = await self.objects.read_footer(log_id, seg_id)
        if found is not None:
            footer, index = found
            return Recovered([], footer.lac, footer.total_size, True)
        q = quorum or QuorumInfo(nodes=[])
        need = max(1, q.es - q.aq + 1)
        what = f"recover {log_id}/{seg_id}"
        req = FenceSegmentRequest(self.bucket, self.root, log_id, seg_id)
        replies = await self.quorum_call(q, set(), "FenceSegment", req, need=need, what=what)
        lac = max(r.last_entry_id for r in replies)
        creq = CompleteSegmentRequest(self.bucket, self.root, log_id, seg_id, lac)
        # wait for a replica holding every entry up to lac: the first ``need``
        # answers may all come from replicas that lag behind it
        await self.quorum_call(q, set(), "CompleteSegment", creq, need=need, what=what,
                               enough=lambda done: any(r.last_entry_id >= lac for r in done))
        return Recovered([], lac, 0, False)

    async def compact(self, log_id: int, seg_id: int, target_bytes: int, quorum: QuorumInfo | None = None,
                      last_entry: int | None = None) -> int | None:
        """A genuine LogStore holding every entry up to the segment's last entry
        uploads it; the others then drop their copies.  Each candidate is first
        completed at that entry (idempotent; a replica the writer could not reach
        at seal time gets its footer now); one that lagged is never the one to
        upload."""
        q = quorum or QuorumInfo(nodes=[])
        req = CompactSegmentRequest(self.bucket, self.root, log_id, seg_id)
        lreq = GetSegmentLastAddConfirmedRequest(self.bucket, self.root, log_id, seg_id)
        errors = []
        for endpoint in q.nodes:
            node, inst = self.node(endpoint), q.instance_of(endpoint)
            try:
                if last_entry is not None:
                    creq = CompleteSegmentRequest(self.bucket, self.root, log_id, seg_id, last_entry)
                    held = (await node.call("CompleteSegment", creq, self.timeout, inst)).last_entry_id
                else:
                    held = (await node.call("GetSegmentLastAddConfirmed", lreq, self.timeout, inst)).last_entry_id
                if last_entry is not None and held < last_entry:
                    errors.append(f"{endpoint}: holds up to {held}, segment ends at {last_entry}")
                    continue
                resp = await node.call("CompactSegment", req, max(self.timeout, 60.0), inst)
            except NodeError as e:
                errors.append(str(e))
                continue
            done = NotifySegmentCompactedRequest(self.bucket, self.root, log_id, seg_id)
            await asyncio.gather(*(self.node(n).call("NotifySegmentCompacted", done, self.timeout)
                                   for n in q.nodes if n != endpoint), return_exceptions=True)
            return resp.metadata.size if resp.metadata else 0
        raise StorageError(f"no LogStore could compact segment {log_id}/{seg_id}: {'; '.join(errors)}")

    # -- reading ---------------------------------------------------------------------------
    async def scan(self, log_id: int, seg_id: int, cursor: ServiceCursor | None, max_bytes: int,
                   quorum: QuorumInfo | None = None, sealed_last: int | None = None) -> ScanResult:
        """``sealed_last``: the segment's last entry when metadata says it is
        completed (a replica's own footer may end earlier: it lagged).  Only
        genuine instances are asked; when every replica of a completed segment
        not yet in object storage is provably unable to serve the next entry
        (replaced, lost it, or lagging), raise QuorumUnavailableError rather than
        wait forever or report the segment's end early."""
        cur = cursor or ServiceCursor()
        if cur.objects is None and not cur.checked_footer:
            cur.checked_footer = True
            if await self.objects.read_footer(log_id, seg_id) is not None:
                cur.objects = ObjectCursor(next_entry=cur.next_entry)
        if cur.objects is not None:
            res = await self.objects.scan(log_id, seg_id, cur.objects, max_bytes)
            return ScanResult(res.blocks, cur, res.complete, res.lac)
        if sealed_last is not None and cur.next_entry > sealed_last:
            return ScanResult([], cur, True)
        q = quorum or QuorumInfo(nodes=[])
        nodes = list(q.nodes)
        req = GetBatchEntriesAdvRequest(self.bucket, self.root, log_id, seg_id, from_entry_id=cur.next_entry,
                                        max_entries=2000)
        cannot = []  # replicas that answered and provably cannot serve entry next_entry
        for i in range(len(nodes)):
            k = (cur.node + i) % len(nodes)
            endpoint = nodes[k]
            try:
                resp = await self.node(endpoint).call("GetBatchEntriesAdv", req, self.timeout, q.instance_of(endpoint))
                entries = resp.result.entries if resp.result else []
            except NodeError as e:
                if e.code in (Code.WRONG_INSTANCE, Code.NOT_FOUND):
                    cannot.append(str(e))
                if e.code not in (Code.ENTRY_NOT_FOUND, Code.END_OF_FILE):
                    continue
                entries = []  # nothing past this replica's LAC / its end: as an empty answer
            if not entries:
                if sealed_last is not None:
                    cannot.append(f"{endpoint}: lags behind entry {cur.next_entry}")
                continue  # this replica lags (or nothing is new): ask another
            cur.node = k
            first, last = entries[0].entryId, entries[-1].entryId
            blk = DecodedBlock(BlockHeader(0, first, last, 0, 0), [memoryview(e.values) for e in entries], 0)
            cur.next_entry = last + 1
            return ScanResult([blk], cur, sealed_last is not None and last >= sealed_last)
        # no LogStore has it: compacted (and cleaned) meanwhile?
        if await self.objects.read_footer(log_id, seg_id) is not None:
            cur.objects = ObjectCursor(next_entry=cur.next_entry)
            return await self.scan(log_id, seg_id, cur, max_bytes, quorum)
        if sealed_last is not None and nodes and len(cannot) == len(nodes):
            raise QuorumUnavailableError(f"segment {log_id}/{seg_id}: no genuine replica holds entry "
                                         f"{cur.next_entry} (completed at {sealed_last}, not in object storage): "
                                         + "; ".join(cannot))
        return ScanResult([], cur, False)

    async def last_entry(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> int:
        """The highest entry a genuine replica makes visible (−1 if none answers)."""
        found = await self.objects.read_footer(log_id, seg_id)
        if found is not None:
            return found[0].lac
        q = quorum or QuorumInfo(nodes=[])
        req = GetSegmentLastAddConfirmedRequest(self.bucket, self.root, log_id, seg_id)
        replies = await asyncio.gather(*(self.node(e).call("GetSegmentLastAddConfirmed", req, self.timeout,
                                                           q.instance_of(e)) for e in q.nodes),
                                       return_exceptions=True)
        return max([-1] + [r.last_entry_id for r in replies if not isinstance(r, BaseException)])

    # -- deletion ----------------------------------------------------------------------------
    async def delete_segment(self, log_id: int, seg_id: int, quorum: QuorumInfo | None = None) -> tuple[int, int]:
        n, b = await self.objects.delete_segment(log_id, seg_id)
        if quorum:
            req = CleanSegmentRequest(self.bucket, self.root, log_id, seg_id, 0)
            _raise_denied(await asyncio.gather(*(self.node(e).call("CleanSegment", req, self.timeout)
                                                 for e in quorum.nodes), return_exceptions=True))
        return n, b

    async def delete_segments(self, log_id: int, seg_ids: list[int], quorums: dict[int, QuorumInfo] | None = None,
                              dry_run: bool = False) -> dict[int, tuple[int, int]]:
        """Sealed bytes go in object-store batches; each replica then drops its
        staged copy (best effort: a LogStore cleans leftovers itself)."""
        out = await self.objects.delete_segments(log_id, seg_ids, dry_run=dry_run)
        if not dry_run:
            calls = [self.node(e).call("CleanSegment", CleanSegmentRequest(self.bucket, self.root, log_id, s, 0),
                                       self.timeout)
                     for s in seg_ids for e in ((quorums or {}).get(s) or QuorumInfo(nodes=[])).nodes]
            _raise_denied(await asyncio.gather(*calls, return_exceptions=True))
        return out

    async def delete_log(self, log_id: int) -> tuple[int, int]:
        from ..server.membership import live_logstores
        req = MarkLogDeletedRequest(self.bucket, self.root, log_id)
        live = await live_logstores(self.meta)
        _raise_denied(await asyncio.gather(*(self.node(n["endpoint"]).call("MarkLogDeleted", req, self.timeout)
                                             for n in live), return_exceptions=True))
        return await self.objects.delete_log(log_id)

    async def segment_ids(self, log_id: int) -> list[int]:
        return await self.objects.segment_ids(log_id)
