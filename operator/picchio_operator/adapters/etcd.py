"""The cluster's etcd keyspace: reachability, first-time initialisation and
purge.

Initialisation writes the four keys in one transaction guarded by "none of
them exists", so it can never overwrite a keyspace that clients (or another
operator) already use — ``logidgen`` going back to 0 would hand out log ids
twice.  A *partial* keyspace is reported, not repaired, for the same reason.

Role/user creation for an etcd with authentication on is not implemented yet
(aetcd has no auth-management API; it needs the raw Auth gRPC stubs).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd

from ..model.etcdkeys import initial_keys, purge_prefix
from . import AdapterError

log = logging.getLogger(__name__)
T = TypeVar("T")


class EtcdError(AdapterError):
    reason = "EtcdUnreachable"


@dataclass(frozen=True)
class KeyspaceReport:
    initialised: bool  # this call created the keys
    version: str       # etcd server version


def _split(endpoint: str) -> tuple[str, int]:
    ep = endpoint.split("://", 1)[-1].rstrip("/")
    host, sep, port = ep.rpartition(":")
    if not sep or not port.isdigit():
        return ep, 2379
    return host, int(port)


class EtcdKeyspace:
    """One short-lived connection to the first reachable endpoint."""

    def __init__(self, endpoints: Sequence[str], *, username: str | None = None, password: str | None = None,
                 timeout: float = 5.0, attempts: int = 3) -> None:
        self._endpoints = list(endpoints)
        self._username, self._password = username or None, password or None
        self._timeout = timeout
        self._attempts = attempts
        self._client: aetcd.Client | None = None
        self.server_version = ""

    async def __aenter__(self) -> EtcdKeyspace:
        errors: list[str] = []
        for ep in self._endpoints:
            host, port = _split(ep)
            client = aetcd.Client(host=host, port=port, username=self._username, password=self._password,
                                  timeout=int(max(1, self._timeout)), connect_wait_timeout=int(max(1, self._timeout)))
            try:
                await asyncio.wait_for(client.connect(), self._timeout)
                st = await asyncio.wait_for(client.status(), self._timeout)
            except (TimeoutError, Exception) as e:  # noqa: BLE001 - any failure: try the next endpoint
                errors.append(f"{ep}: {type(e).__name__}: {e}")
                await _close(client)
                continue
            self._client = client
            self.server_version = str(getattr(st, "version", ""))
            return self
        raise EtcdError(f"no etcd endpoint reachable ({'; '.join(errors)}); check spec.etcd.endpoints")

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await _close(self._client)
            self._client = None

    @property
    def client(self) -> aetcd.Client:
        assert self._client is not None, "use EtcdKeyspace as an async context manager"
        return self._client

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        for attempt in range(1, self._attempts + 1):
            try:
                return await asyncio.wait_for(fn(), self._timeout)
            except (TimeoutError, aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, aetcd.InternalError) as e:
                if attempt == self._attempts:
                    raise EtcdError(f"etcd {what} failed after {attempt} attempts: {e!r}") from e
                log.warning("etcd %s failed (attempt %d/%d): %r; retrying", what, attempt, self._attempts, e)
                await asyncio.sleep(delay)
                delay *= 2
            except aetcd.ClientError as e:
                reason = "EtcdAuthFailed" if "auth" in type(e).__name__.lower() else "EtcdError"
                raise EtcdError(f"etcd {what} failed: {e!r}", reason) from e
        raise AssertionError("unreachable")

    async def ensure_keyspace(self, meta_prefix: str) -> KeyspaceReport:
        """Create instance/version/logidgen/quorumidgen if all are absent."""
        keys = initial_keys(meta_prefix, str(uuid.uuid4()))
        c = self.client
        tx = c.transactions
        def txn() -> Awaitable[tuple[bool, list[Any]]]:
            return c.transaction(compare=[tx.create(k) == 0 for k in keys],
                                 success=[tx.put(k, v) for k, v in keys.items()], failure=[])

        ok, _ = await self._call("initialise keyspace", txn)
        if ok:
            log.info("initialised etcd keyspace %s", meta_prefix)
            return KeyspaceReport(True, self.server_version)
        present: list[bool] = []
        for key in keys:
            def read(key: bytes = key) -> Awaitable[Any]:
                return c.get(key)

            present.append(await self._call("read keyspace", read) is not None)
        if not all(present):
            missing = [k.decode() for k, p in zip(keys, present) if not p]
            raise EtcdError(f"etcd keyspace {meta_prefix} is partially initialised (missing {missing}); "
                            "the operator never repairs it (log ids could repeat) — restore it or point "
                            "spec.etcd.rootPath elsewhere", "PartialKeyspace")
        return KeyspaceReport(False, self.server_version)

    async def purge(self, meta_prefix: str) -> int:
        """deletionPolicy=Delete: remove every key under ``P/``."""
        c = self.client
        out = await self._call("purge keyspace", lambda: c.delete_prefix(purge_prefix(meta_prefix)))
        return int(getattr(out, "deleted", 0) or 0)


async def _close(client: aetcd.Client) -> None:
    try:
        await asyncio.wait_for(client.close(), 2.0)
    except (TimeoutError, Exception) as e:  # noqa: BLE001 - closing a broken channel may fail any way
        log.debug("closing etcd client: %r", e)
