"""The metadata store: every read and compare-and-swap the WAL makes in etcd.

Each call has a deadline (``etcd.requestTimeout``) and transient failures
(connection loss, unavailable leader) are retried a bounded number of times;
a lost compare-and-swap is reported as :class:`ConcurrentUpdateError` so the
caller re-reads and decides — never a silent overwrite.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

import aetcd

from ..config import Config, split_endpoint
from ..errors import ConcurrentUpdateError, LogExistsError, LogNotFoundError, MetadataError
from ..proto import LogMeta, SegmentMetadata, encode_version
from .keys import Keys

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRIES = 4


@dataclass
class Versioned(Generic[T]):
    """A decoded value with the etcd revision a CAS must compare against."""

    value: T
    mod_revision: int


class MetaStore:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.keys = Keys(config.meta_prefix)
        self._timeout = config["etcd.requestTimeout"]
        self._endpoints = list(config["etcd.endpoints"])
        self._client: aetcd.Client | None = None

    # -- connection --------------------------------------------------------
    async def connect(self) -> None:
        errors = []
        for ep in self._endpoints:
            host, port = split_endpoint(ep, "etcd.endpoints")
            client = aetcd.Client(
                host=host, port=port,
                username=self.config["etcd.username"] or None, password=self.config["etcd.password"] or None,
                timeout=self._timeout, connect_wait_timeout=max(1, int(self._timeout)),
            )
            try:
                async def connect() -> None:
                    await client.connect()
                    await client.status()
                await asyncio.wait_for(connect(), self._timeout)
            except Exception as e:  # noqa: BLE001 - any failure means: try the next endpoint
                errors.append(f"{ep}: {e!r}")
                await _quiet_close(client)
                continue
            self._client = client
            await self.init_keyspace()
            return
        raise MetadataError(f"no etcd endpoint reachable ({'; '.join(errors)}); check etcd.endpoints")

    async def close(self) -> None:
        if self._client is not None:
            await _quiet_close(self._client)
            self._client = None

    @property
    def client(self) -> aetcd.Client:
        if self._client is None:
            raise MetadataError("metadata store is not connected (use the Client as an async context manager)")
        return self._client

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One etcd call: retried on transient failures, but all attempts
        together end within ``etcd.requestTimeout`` — a hung etcd gives a
        MetadataError after one deadline, not after one per attempt."""
        delay = 0.05
        deadline = time.monotonic() + self._timeout
        for attempt in range(1, _RETRIES + 1):
            try:
                return await asyncio.wait_for(fn(), max(0.001, deadline - time.monotonic()))
            except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, aetcd.InternalError,
                    asyncio.TimeoutError) as e:
                if attempt == _RETRIES or time.monotonic() + delay >= deadline:
                    raise MetadataError(f"etcd {what} failed after {attempt} attempts within "
                                        f"{self._timeout:g}s (etcd.requestTimeout): {e!r}") from e
                log.warning("etcd %s failed (attempt %d/%d): %r; retrying", what, attempt, _RETRIES, e)
                await asyncio.sleep(delay)
                delay *= 2
            except aetcd.ClientError as e:
                raise MetadataError(f"etcd {what} failed: {e!r}") from e
        raise AssertionError("unreachable")

    async def _txn(self, what: str, compare: list, success: list, failure: list | None = None) -> tuple[bool, list]:
        return await self._call(what, lambda: self.client.transaction(compare=compare, success=success, failure=failure or []))

    # -- keyspace ------------------------------------------------------------
    async def init_keyspace(self) -> None:
        """Create instance/version/logidgen/quorumidgen if all are missing;
        never overwrite (a second client, or the operator, may have done it)."""
        k, tx = self.keys, self.client.transactions
        await self._txn("init keyspace",
                        [tx.create(k.instance) == 0, tx.create(k.version) == 0,
                         tx.create(k.logidgen) == 0, tx.create(k.quorumidgen) == 0],
                        [tx.put(k.instance, str(uuid.uuid4()).encode()), tx.put(k.version, encode_version(1, 0, 0)),
                         tx.put(k.logidgen, b"0"), tx.put(k.quorumidgen, b"0")])
        missing = [key for key in (k.instance, k.version, k.logidgen, k.quorumidgen)
                   if await self._call("get", lambda key=key: self.client.get(key)) is None]
        if missing:
            raise MetadataError(f"etcd keyspace {k.prefix} is partially initialised (missing {missing}); "
                                "repair it by hand or point etcd.rootPath elsewhere")

    # -- logs ----------------------------------------------------------------
    async def create_log(self, name: str) -> LogMeta:
        k, tx = self.keys, self.client.transactions
        for _ in range(50):
            gen = await self._call("get logidgen", lambda: self.client.get(k.logidgen))
            if gen is None:
                raise MetadataError("logidgen key missing")
            cur = int(gen.value)
            now = int(time.time())
            meta = LogMeta(log_id=cur + 1, creation_timestamp=now, modification_timestamp=now)
            ok, _ = await self._txn("create log",
                                    [tx.create(k.log(name)) == 0, tx.value(k.logidgen) == str(cur).encode()],
                                    [tx.put(k.log(name), meta.encode()), tx.put(k.logidgen, str(cur + 1).encode())])
            if ok:
                return meta
            if await self.get_log(name) is not None:
                raise LogExistsError(f"log {name!r} already exists")
        raise ConcurrentUpdateError("create_log lost the log-id race 50 times in a row")

    async def get_log(self, name: str) -> Versioned[LogMeta] | None:
        r = await self._call("get log", lambda: self.client.get(self.keys.log(name)))
        return None if r is None else Versioned(LogMeta.decode(r.value), r.mod_revision)

    async def require_log(self, name: str) -> Versioned[LogMeta]:
        v = await self.get_log(name)
        if v is None:
            raise LogNotFoundError(f"log {name!r} does not exist")
        return v

    async def list_logs(self, prefix: str = "") -> list[str]:
        base = self.keys.logs_prefix
        r = await self._call("list logs", lambda: self.client.get_prefix(base + prefix.encode(), keys_only=True))
        names = {kv.key[len(base):].decode() for kv in r}
        return sorted(n for n in names if "/" not in n)

    async def update_log(self, name: str, meta: LogMeta, rev: int) -> None:
        tx = self.client.transactions
        ok, _ = await self._txn("update log", [tx.mod(self.keys.log(name)) == rev], [tx.put(self.keys.log(name), meta.encode())])
        if not ok:
            raise ConcurrentUpdateError(f"log {name!r} metadata changed concurrently")

    async def delete_log(self, name: str, rev: int, log_id: int) -> None:
        k, tx = self.keys, self.client.transactions
        ok, _ = await self._txn("delete log", [tx.mod(k.log(name)) == rev], [
            tx.delete(k.log(name)), tx.delete(k.lock(name)),
            _delete_prefix(tx, k.segments_prefix(name)), _delete_prefix(tx, k.readers_prefix(log_id)),
            _delete_prefix(tx, k.cleaning_prefix(log_id)), _delete_prefix(tx, k.marking_prefix(log_id)),
        ])
        if not ok:
            raise ConcurrentUpdateError(f"log {name!r} changed while being deleted")

    # -- segments ------------------------------------------------------------
    async def segments(self, name: str) -> list[Versioned[SegmentMetadata]]:
        r = await self._call("list segments", lambda: self.client.get_prefix(self.keys.segments_prefix(name)))
        out = [Versioned(SegmentMetadata.decode(kv.value), kv.mod_revision) for kv in r]
        return sorted(out, key=lambda v: v.value.seg_no)

    async def get_segment(self, name: str, seg_id: int) -> Versioned[SegmentMetadata] | None:
        r = await self._call("get segment", lambda: self.client.get(self.keys.segment(name, seg_id)))
        return None if r is None else Versioned(SegmentMetadata.decode(r.value), r.mod_revision)

    async def create_segment(self, name: str, seg: SegmentMetadata) -> bool:
        """Create-only: False if the segment key exists (another writer won)."""
        k, tx = self.keys, self.client.transactions
        ok, _ = await self._txn("create segment",
                                [tx.create(k.log(name)) != 0, tx.create(k.segment(name, seg.seg_no)) == 0],
                                [tx.put(k.segment(name, seg.seg_no), seg.encode())])
        if not ok and await self.get_log(name) is None:
            raise LogNotFoundError(f"log {name!r} does not exist")
        return ok

    async def update_segment(self, name: str, seg: SegmentMetadata, rev: int) -> None:
        tx = self.client.transactions
        key = self.keys.segment(name, seg.seg_no)
        ok, _ = await self._txn("update segment", [tx.mod(key) == rev], [tx.put(key, seg.encode())])
        if not ok:
            raise ConcurrentUpdateError(f"segment {name}/{seg.seg_no} metadata changed concurrently")

    async def delete_segment(self, name: str, seg_id: int) -> None:
        tx = self.client.transactions
        key = self.keys.segment(name, seg_id)
        await self._txn("delete segment", [tx.create(key) > 0], [tx.delete(key)])

    async def raw(self, op: str, *args: Any) -> Any:
        """Escape hatch for tests and tools (e.g. ``raw('get', key)``)."""
        return await self._call(op, lambda: getattr(self.client, op)(*args))


def _delete_prefix(tx: Any, prefix: bytes) -> Any:
    return tx.delete(prefix, range_end=_prefix_end(prefix))


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


async def _quiet_close(client: aetcd.Client) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - closing a broken channel may raise anything
        pass
