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

from ..config import Config
from ..errors import ConcurrentUpdateError, ConfigError, LogExistsError, LogNotFoundError, MetadataError
from ..redact import config_secrets, redact
from ..proto import LogMeta, SegmentMetadata, encode_version
from .etcdconn import EtcdTLS, open_client, quiet_close
from .keys import Keys
from .prefix import PrefixChoice, effective_prefix

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
        self.keys = Keys(config.meta_prefix)  # until connect() applies the legacy-prefix rule
        self.prefix_choice: PrefixChoice | None = None
        self._timeout = config["etcd.requestTimeout"]
        self._endpoints = list(config["etcd.endpoints"])
        self._client: aetcd.Client | None = None
        # log ids come from one counter under compare-and-swap: creations in this
        # process take turns, so many at once (a Milvus cluster opening all its
        # channels) do not lose the race to each other 50 times in a row
        self._create_lock = asyncio.Lock()

    # -- connection --------------------------------------------------------
    async def connect(self, init_keyspace: bool = True) -> None:
        """Connect to the first endpoint that answers (over TLS where
        ``etcd.ssl.*`` or an ``https://`` endpoint says so), apply the
        legacy-prefix rule, and (unless told not to: ``picchio config check``
        only looks) create the keyspace's root keys if they are missing.
        Each endpoint gets ``etcd.requestTimeout``; a TLS file that cannot be
        read is a ConfigError before anything is dialled."""
        errors = []
        tls = EtcdTLS.from_config(self.config)
        if any(tls.uses_tls(ep) for ep in self._endpoints):
            tls.check()
        for ep in self._endpoints:
            try:
                client = await open_client(ep, tls=tls, **self._credentials(), timeout=self._timeout)
            except ConfigError:
                raise
            except MetadataError as e:
                errors.append(f"{ep}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - any failure (timeouts included) means: try the next endpoint
                errors.append(f"{ep}: {type(e).__name__}: {e}" if str(e) else f"{ep}: {type(e).__name__}")
                continue
            self._client = client
            self.prefix_choice = await effective_prefix(client, self.config.meta_prefix, self._timeout)
            self.keys = Keys(self.prefix_choice.prefix)
            if init_keyspace:
                await self.init_keyspace()
            return
        plain = [ep for ep in self._endpoints if not tls.uses_tls(ep)]
        hint = ("; if etcd serves TLS, set etcd.ssl.enabled: true (or use https:// endpoints)" if plain
                else "; check etcd.ssl.tlsCACert, and etcd.ssl.tlsCert/tlsKey if etcd demands client certificates")
        raise MetadataError(self._redact(f"no etcd endpoint reachable within {self._timeout:g}s each "
                                         f"({'; '.join(errors)}); check etcd.endpoints{hint}"))

    def _redact(self, text: str) -> str:
        return redact(text, config_secrets(self.config))

    def _credentials(self) -> dict[str, str | None]:
        """As in Woodpecker: user and password count only with ``etcd.auth.enabled``."""
        if not self.config["etcd.auth.enabled"]:
            return {"username": None, "password": None}
        return {"username": self.config["etcd.auth.userName"] or None, "password": self.config["etcd.auth.password"] or None}

    async def close(self) -> None:
        if self._client is not None:
            await quiet_close(self._client)
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
                    raise MetadataError(self._redact(f"etcd {what} failed after {attempt} attempts within "
                                                     f"{self._timeout:g}s (etcd.requestTimeout): {e!r}")) from e
                log.warning("etcd %s failed (attempt %d/%d): %s; retrying", what, attempt, _RETRIES,
                            self._redact(repr(e)))
                await asyncio.sleep(delay)
                delay *= 2
            except aetcd.ClientError as e:
                raise MetadataError(self._redact(f"etcd {what} failed: {e!r}")) from e
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
        async with self._create_lock:
            return await self._create_log(name)

    async def _create_log(self, name: str) -> LogMeta:
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

    async def log_ids(self, names: list[str], known: dict[str, tuple[int, int]] | None = None,
                      per_txn: int = 64) -> dict[str, int]:
        """The log id of each of ``names`` that exists (absent: deleted) — one
        etcd transaction per ``per_txn`` names, not one request per log.
        ``known`` (name → (mod revision, log id)), kept by the caller across
        calls, spares decoding a record that did not change since."""
        tx, out = self.client.transactions, {}
        known = {} if known is None else known
        for i in range(0, len(names), per_txn):
            chunk = names[i:i + per_txn]
            _, resp = await self._txn("get logs", [], [tx.get(self.keys.log(n)) for n in chunk])
            for n, kvs in zip(chunk, resp):
                if not kvs:
                    known.pop(n, None)
                    continue
                value, kv = kvs[0]
                seen = known.get(n)
                if seen is None or seen[0] != kv.mod_revision:
                    seen = known[n] = (kv.mod_revision, LogMeta.decode(value).log_id)
                out[n] = seen[1]
        return out

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
            tx.delete(k.tail(log_id)),
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

    async def delete_segments(self, name: str, seg_ids: list[int], per_txn: int = 100) -> None:
        """Delete many segment keys, ``per_txn`` to a transaction (etcd refuses
        more than ``--max-txn-ops``, 128 by default)."""
        tx = self.client.transactions
        for i in range(0, len(seg_ids), per_txn):
            await self._txn("delete segments", [],
                            [tx.delete(self.keys.segment(name, s)) for s in seg_ids[i:i + per_txn]])

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
