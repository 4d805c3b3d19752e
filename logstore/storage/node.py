"""One LogStore endpoint as the client sees it: its gRPC channel (rebuilt when
the TLS files change), one call with its deadline and reply checks, and the
WriteBatch that joins many segments' writes into one call."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc

from ..config import Config
from ..errors import PermissionDeniedError
from ..rpc import METHODS, SERVICE, AddEntryState, Code, Pieces, encode_write_batch, with_expected_instance
from ..tlsfiles import TLSFileError, WatchedFiles, check_pem

log = logging.getLogger(__name__)
_BATCH_ITEMS = 256  # requests in one WriteBatch at most
_BATCH_BYTES = 8 << 20  # and about this many bytes: a large block goes alone rather than hold up small ones


@dataclass(eq=False)
class _Item:
    name: str
    req: Any  # the encoded request (bytes or Pieces) or a message
    expect: str
    key: tuple
    deadline: float
    future: asyncio.Future


def _size(req: Any) -> int:
    if isinstance(req, Pieces):
        return sum(len(p) for p in req)
    return len(req) if isinstance(req, bytes) else 64


def _expecting(it: _Item) -> Pieces:
    """The item's request with its expected instance (field 100), payloads by reference."""
    req = it.req if isinstance(it.req, (bytes, Pieces)) else it.req.encode()
    out = Pieces(req) if isinstance(req, Pieces) else Pieces([req])
    if it.expect:
        out.append(with_expected_instance(b"", it.expect))
    return out


def _settle(it: _Item, result: Any = None, error: BaseException | None = None) -> None:
    if it.future.done():
        return  # its caller gave up (deadline, cancel)
    if error is not None:
        it.future.set_exception(error)
    else:
        it.future.set_result(result)


class NodeError(Exception):
    def __init__(self, endpoint: str, code: int, message: str, retriable: bool = True, instance: str = "") -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint, self.code, self.retriable = endpoint, code, retriable
        self.instance = instance  # who answered ("" when nothing did)


class Node:
    """One LogStore endpoint: a channel and a callable per RPC.

    With TLS, the client's cert/key/CA files are checked (at most once a
    second, when a call is made); once they changed, later calls go through a
    new channel built from them — rotation without a restart — while calls
    already in flight finish on the old one, closed after a grace period."""

    _GRACE = 120.0  # seconds in-flight calls get on a replaced channel (longer than any call's deadline)

    def __init__(self, endpoint: str, config: Config, options: tuple[tuple[str, Any], ...] = ()) -> None:
        """``options``: more gRPC channel arguments (a probe that must make its own
        handshake passes ``grpc.use_local_subchannel_pool``: gRPC otherwise shares
        connections between channels with equal credentials)."""
        self.endpoint = endpoint
        self._tls = _watched_tls(config)
        self._opts = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
                      *options]
        if config["woodpecker.logstore.tls.serverName"]:
            self._opts.append(("grpc.ssl_target_name_override", config["woodpecker.logstore.tls.serverName"]))
        self._retired: dict[asyncio.Future, grpc.aio.Channel] = {}  # closing (in-flight calls finish) → channel
        self.rebuilds = 0  # channels replaced after the TLS files changed
        #: send WriteBatch calls (config woodpecker.client.quorum.writeBatch; off for good once UNIMPLEMENTED)
        self.batching = bool(config["woodpecker.client.quorum.writeBatch"])
        self._queue: list[_Item] = []
        self._sending: set[asyncio.Future] = set()
        self.batches = 0  # WriteBatch calls made, and the requests they carried (bench, tests)
        self.batched = 0
        self._connect(_credentials(self._tls) if self._tls else None)

    def _connect(self, creds: grpc.ChannelCredentials | None) -> None:
        self.channel = (grpc.aio.secure_channel(self.endpoint, creds, options=self._opts) if creds
                        else grpc.aio.insecure_channel(self.endpoint, options=self._opts))
        self._calls: dict[str, Any] = {}
        for name, (req_t, resp_t, streaming) in METHODS.items():
            make = self.channel.unary_stream if streaming else self.channel.unary_unary
            self._calls[name] = make(f"/{SERVICE}/{name}", request_serializer=_serialize,
                                     response_deserializer=resp_t.decode)

    def _maybe_rotate(self) -> None:
        if self._tls is None or not self._tls.changed():
            return
        try:
            creds = _credentials(self._tls, check=True)
        except (OSError, TLSFileError) as e:
            log.warning("%s: new TLS files not usable, keeping the current channel: %s", self.endpoint,
                        f"{e.filename}: {e.strerror}" if isinstance(e, OSError) else e)
            return
        old = self.channel
        self._connect(creds)
        self.rebuilds += 1
        t = asyncio.ensure_future(old.close(grace=self._GRACE))
        self._retired[t] = old
        t.add_done_callback(lambda t: self._retired.pop(t, None))
        log.info("%s: TLS files changed: new calls use a new channel", self.endpoint)

    async def call(self, name: str, req: Any, timeout: float, expect: str = "") -> Any:
        """One RPC within ``timeout`` seconds.  ``expect``: the instance recorded
        for this replica; the request carries it (the LogStore refuses it if it is
        another instance) and a reply from any other instance raises NodeError
        with Code.WRONG_INSTANCE — that replica is gone, whatever it says."""
        if expect:
            req = with_expected_instance(req if isinstance(req, (bytes, Pieces)) else req.encode(), expect)
        if timeout <= 0:
            raise NodeError(self.endpoint, -1, f"{name}: deadline exceeded before the call")
        self._maybe_rotate()
        try:
            if METHODS[name][2]:
                # AddEntries: a Buffered frame naming the batch's entries may come first; then
                # Synced/Failed frames.  Woodpecker's LogStore sends one Synced frame per flushed
                # run (a batch can take several), so the replica holds the batch only once Synced
                # frames covered every entry the Buffered frame named; any Failed frame fails it.
                last, pending = None, None
                async for resp in self._calls[name](req, timeout=timeout):
                    last = resp
                    ids = resp.entry_id if isinstance(resp.entry_id, list) else [resp.entry_id]  # AddEntry: one id
                    if resp.state == AddEntryState.BUFFERED:
                        pending = set(ids) if pending is None else pending
                        continue
                    if resp.state != AddEntryState.SYNCED or pending is None:
                        break
                    pending.difference_update(ids)
                    if not pending:
                        break
                else:
                    if pending:
                        raise NodeError(self.endpoint, -1, f"{name}: the stream ended with entries "
                                        f"{sorted(pending)[:3]}… neither Synced nor Failed")
                resp = last
            else:
                resp = await self._calls[name](req, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.PERMISSION_DENIED:  # the same everywhere, every time: no retry
                raise PermissionDeniedError(f"LogStore {self.endpoint}: {e.details()}") from None
            raise NodeError(self.endpoint, -1, f"{name}: {e.code().name}: {e.details()}") from None
        if resp is None:
            raise NodeError(self.endpoint, -1, f"{name}: the stream ended without a reply")
        return self._check_reply(name, resp, expect)

    def _check_reply(self, name: str, resp: Any, expect: str) -> Any:
        got = getattr(resp, "instance", "")
        if expect and got != expect:
            raise NodeError(self.endpoint, Code.WRONG_INSTANCE,
                            f"{name}: answered by instance {got or '(none)'}, the segment was placed on {expect} "
                            "(data dir replaced: this replica's copy is gone)", retriable=False, instance=got)
        st = getattr(resp, "status", None)
        if st is not None and st.code != Code.OK:
            raise NodeError(self.endpoint, st.code, f"{name}: {st.reason}", st.retriable, got)
        return resp

    # -- WriteBatch: many segments' AddEntries and LAC updates in one call ----------------------
    def write(self, name: str, req: Any, timeout: float, expect: str, segment: tuple[int, int]) -> asyncio.Future:
        """``call`` for an AddEntries or UpdateLastAddConfirmed of ``segment``
        (log id, segment id) — joined with the other segments' requests for this
        LogStore made in the same turn of the event loop into one WriteBatch
        (rpc.WriteBatchRequest).  Same replies, errors and deadline as ``call``;
        a request alone in its turn, or for a LogStore without WriteBatch
        (Woodpecker's: UNIMPLEMENTED), goes as its own RPC.  A future, not a
        coroutine: no task per block and replica."""
        if not self.batching:
            return asyncio.ensure_future(self.call(name, req, timeout, expect))
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if timeout <= 0:
            fut.set_exception(NodeError(self.endpoint, -1, f"{name}: deadline exceeded before the call"))
            return fut
        self._queue.append(_Item(name, req, expect, (name == "AddEntries", *segment), loop.time() + timeout, fut))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        items, self._queue = self._queue, []
        while items:  # rounds: one request per segment and kind each, so a segment's blocks keep their own calls
            seen: set[tuple] = set()
            this, rest, size = [], [], 0
            for it in items:
                if it.key in seen or len(this) >= _BATCH_ITEMS or size >= _BATCH_BYTES:
                    rest.append(it)
                else:
                    seen.add(it.key)
                    this.append(it)
                    size += _size(it.req)
            items = rest
            coro = self._single(this[0]) if len(this) == 1 else self._batch(this)
            task = asyncio.ensure_future(coro)
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _single(self, it: "_Item") -> None:
        if it.future.done():
            return  # its caller gave up
        try:
            r = await self.call(it.name, it.req, it.deadline - asyncio.get_running_loop().time(), it.expect)
        except Exception as e:  # noqa: BLE001 - the caller's
            _settle(it, error=e)
        except BaseException as e:  # a cancel (the client closing): the caller hears a typed error
            _settle(it, error=NodeError(self.endpoint, -1, f"{it.name}: {e!r}"))
            raise
        else:
            _settle(it, r)

    async def _batch(self, items: list["_Item"]) -> None:
        """One WriteBatch for ``items``; whatever happens — even a cancel when the
        client closes — no item is left unsettled (a LAC push gathers them
        without a deadline of its own)."""
        try:
            await self._send_batch(items)
        except BaseException as e:  # noqa: BLE001 - settled as typed errors below, cancels go on
            for it in items:
                _settle(it, error=NodeError(self.endpoint, -1, f"{it.name} (WriteBatch): {e!r}"))
            if not isinstance(e, Exception):
                raise

    async def _send_batch(self, items: list["_Item"]) -> None:
        loop = asyncio.get_running_loop()
        adds = [it for it in items if it.name == "AddEntries"]
        lacs = [it for it in items if it.name != "AddEntries"]
        body = encode_write_batch([_expecting(it) for it in adds], [_expecting(it).join() for it in lacs])
        timeout = min(it.deadline for it in items) - loop.time()
        self._maybe_rotate()
        try:
            if timeout <= 0:
                raise NodeError(self.endpoint, -1, "WriteBatch: deadline exceeded before the call")
            self.batches += 1
            self.batched += len(items)
            resp = await self._calls["WriteBatch"](body, timeout=timeout)
            st = resp.status
            if st is not None and st.code != Code.OK:
                raise NodeError(self.endpoint, st.code, f"WriteBatch: {st.reason}", st.retriable, resp.instance)
            if len(resp.adds) != len(adds) or len(resp.lacs) != len(lacs):
                raise NodeError(self.endpoint, -1, f"WriteBatch: {len(resp.adds)}+{len(resp.lacs)} replies "
                                f"for {len(adds)}+{len(lacs)} requests")
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:  # not our LogStore: one call each from now on
                self.batching = False
                for it in items:
                    await self._single(it)
                return
            for it in items:
                _settle(it, error=PermissionDeniedError(f"LogStore {self.endpoint}: {e.details()}")
                        if e.code() == grpc.StatusCode.PERMISSION_DENIED
                        else NodeError(self.endpoint, -1, f"{it.name} (WriteBatch): {e.code().name}: {e.details()}"))
            return
        except NodeError as e:
            for it in items:
                _settle(it, error=NodeError(e.endpoint, e.code, f"{it.name} ({e})", e.retriable, e.instance))
            return
        for it, r in [*zip(adds, resp.adds), *zip(lacs, resp.lacs)]:
            r.instance = resp.instance
            try:
                if it.name == "AddEntries" and r.state != AddEntryState.SYNCED and (r.status is None
                                                                                or r.status.code == Code.OK):
                    raise NodeError(self.endpoint, -1, "AddEntries (WriteBatch): the reply is not Synced")
                _settle(it, self._check_reply(it.name, r, it.expect))
            except NodeError as e:
                _settle(it, error=e)

    def open_stream(self, name: str, req: bytes, timeout: float) -> Any:
        """A server-streaming call the caller reads itself (tailsub.py), with a deadline."""
        self._maybe_rotate()
        return self._calls[name](req, timeout=timeout)

    async def close(self) -> None:
        for t in list(self._sending):
            t.cancel()
        for t, old in list(self._retired.items()):
            t.cancel()
            await old.close()
        await self.channel.close()




def _serialize(m: Any) -> bytes:
    """Messages encode themselves; bytes are a request already encoded once for
    every replica it goes to (a block's entries are not re-encoded per node);
    :class:`Pieces` are joined here, once."""
    if isinstance(m, bytes):
        return m
    return m.join() if isinstance(m, Pieces) else m.encode()


def _watched_tls(cfg: Config) -> WatchedFiles | None:
    if not cfg["woodpecker.logstore.tls.enabled"]:
        return None
    return WatchedFiles([cfg["woodpecker.logstore.tls.caFile"], cfg["woodpecker.logstore.tls.clientKeyFile"],
                         cfg["woodpecker.logstore.tls.clientCertFile"]])


def _credentials(files: WatchedFiles, check: bool = False) -> grpc.ChannelCredentials:
    """Channel credentials from the files as they are now.  ``check``: only if
    usable (replacing a working channel; gRPC itself would only fail at the
    handshake)."""
    ca, key, cert = files.read()
    if check:
        check_pem(files.paths[2], files.paths[1], ca)
        if files.changed_since_read():
            raise TLSFileError("the files changed while being read")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


