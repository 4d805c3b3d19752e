"""The WAL library, as the operator uses it for WoodpeckerLogs.

One ``logstore.Client`` per cluster is kept open in a pool (200 logs must not
mean 200 etcd connections per timer tick); it is reopened when the cluster's
rendered configuration or credentials change, and closed at shutdown.  The
operator talks to etcd and to the bucket directly — in service mode too — so
GC works whether or not any LogStore or writer is up.

The library is imported lazily so the operator's model and unit tests do not
depend on the client being importable.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..model.log import GcResult, LogObservation, SegmentView
from . import AdapterError

log = logging.getLogger(__name__)


class LogStoreError(AdapterError):
    reason = "LogStoreError"


async def _maybe_await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


def _to_time(v: Any) -> datetime | None:
    """The library reports times as datetimes or unix numbers (etcd metadata
    stores ms); numbers beyond year 5138 in seconds are taken as ms."""
    if v is None or v == 0:
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, (int, float)):
        secs = v / 1000.0 if v > 1e11 else float(v)
        return datetime.fromtimestamp(secs, tz=UTC)
    return None


def segment_view(info: Any) -> SegmentView:
    state = getattr(info, "state", "ACTIVE")
    state_name = getattr(state, "name", None) or str(state)
    return SegmentView(
        id=int(info.id),
        state=state_name.upper(),
        first_entry_id=int(getattr(info, "first_entry_id", None) or 0),  # None: empty segment
        last_entry_id=_int_or(getattr(info, "last_entry_id", None), -1),
        size=int(getattr(info, "size", 0) or 0),
        create_time=_to_time(getattr(info, "create_time", None)),
        end_time=_to_time(getattr(info, "completion_time", None) or getattr(info, "complete_time", None)),
    )


def _int_or(v: Any, default: int) -> int:
    return default if v is None else int(v)


def _count(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, (int, float)):
        return int(v)
    return len(v)


@dataclass
class _Entry:
    fingerprint: str
    client: Any


class LogClients:
    """Pool of open ``logstore.Client`` objects keyed by cluster; owned by the
    operator's memo (no module globals), closed by :meth:`close`."""

    def __init__(self, *, open_timeout: float = 30.0, max_clients: int = 64) -> None:
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._open_timeout = open_timeout
        self._max = max_clients

    @staticmethod
    def fingerprint(config: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()

    async def get(self, key: str, config: Mapping[str, Any]) -> Any:
        fp = self.fingerprint(config)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry and entry.fingerprint == fp:
                return entry.client
            if entry:
                await self._close_one(key)
            if len(self._entries) >= self._max:
                await self._close_one(next(iter(self._entries)))
            client = await self._open(config)
            self._entries[key] = _Entry(fp, client)
            return client

    async def _open(self, config: Mapping[str, Any]) -> Any:
        from logstore import Client  # lazy: see module docstring
        from logstore.config import Config

        client = Client(Config.from_dict(dict(config)))
        try:
            await asyncio.wait_for(client.__aenter__(), self._open_timeout)
        except TimeoutError as e:
            raise LogStoreError(f"opening the log client timed out after {self._open_timeout}s",
                                "ClusterUnreachable") from e
        except Exception as e:
            raise LogStoreError(f"cannot open the cluster's logs: {type(e).__name__}: {e}", "ClusterUnreachable") from e
        return client

    async def invalidate(self, key: str) -> None:
        """Drop a client after an error, so the next pass reconnects."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            await self._close_one(key)

    async def _close_one(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        try:
            await asyncio.wait_for(entry.client.__aexit__(None, None, None), 10.0)
        except (TimeoutError, Exception) as e:  # noqa: BLE001 - closing must not fail shutdown
            log.warning("closing log client for %s: %r", key, e)

    async def close(self) -> None:
        for key in list(self._entries):
            await self._close_one(key)


class LogOps:
    """The handful of library calls a WoodpeckerLog pass makes, each with a
    deadline; library errors become :class:`LogStoreError`."""

    def __init__(self, client: Any, timeout: float = 60.0) -> None:
        self.client = client
        self.timeout = timeout

    async def _run(self, what: str, coro: Any, reason: str = "LogStoreError") -> Any:
        try:
            return await asyncio.wait_for(_maybe_await(coro), self.timeout)
        except TimeoutError as e:
            raise LogStoreError(f"{what} timed out after {self.timeout}s", reason) from e
        except LogStoreError:
            raise
        except Exception as e:
            raise LogStoreError(f"{what}: {type(e).__name__}: {e}", reason) from e

    async def ensure_log(self, name: str) -> tuple[Any, bool]:
        """Open the log, creating it if absent (adopting it if it exists)."""
        from logstore import LogExistsError, LogNotFoundError

        try:
            return await self._run(f"open log {name}", self.client.open_log(name)), False
        except LogStoreError as e:
            if not isinstance(e.__cause__, LogNotFoundError):
                raise
        try:
            await self._run(f"create log {name}", self.client.create_log(name))
            created = True
        except LogStoreError as e:
            if not isinstance(e.__cause__, LogExistsError):  # lost a race with a writer: adopt
                raise
            created = False
        return await self._run(f"open log {name}", self.client.open_log(name)), created

    async def open_existing(self, name: str) -> Any | None:
        from logstore import LogNotFoundError

        try:
            return await self._run(f"open log {name}", self.client.open_log(name))
        except LogStoreError as e:
            if isinstance(e.__cause__, LogNotFoundError):
                return None
            raise

    async def observe(self, handle: Any) -> LogObservation:
        segs = await self._run("list segments", handle.segments())
        truncated = await self._run("read truncation point", handle.truncated_id())
        last = await self._run("read last id", handle.last_id())
        return LogObservation(
            log_id=int(getattr(handle, "log_id", 0) or 0),
            segments=tuple(segment_view(s) for s in segs),
            truncated_id=truncated,
            last_id=last,
        )

    async def truncate(self, handle: Any, target: Any) -> None:
        await self._run(f"truncate to {target}", handle.truncate(target), "TruncateFailed")

    async def collect_garbage(self, handle: Any, dry_run: bool) -> GcResult:
        rep = await self._run("collect garbage", handle.collect_garbage(dry_run=dry_run), "GcFailed")
        return GcResult(segments=_count(getattr(rep, "segments", 0)), objects=_count(getattr(rep, "objects", 0)),
                        bytes=int(getattr(rep, "bytes", 0) or 0), dry_run=dry_run)

    async def delete_log(self, name: str) -> bool:
        from logstore import LogNotFoundError

        try:
            await self._run(f"delete log {name}", self.client.delete_log(name), "DeleteFailed")
            return True
        except LogStoreError as e:
            if isinstance(e.__cause__, LogNotFoundError):
                return False
            raise
