"""``Client``: owns the etcd connection and the storage backend for its logs.
No global state — every client (and every test) has its own connections."""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

from .config import Config
from .errors import InvalidArgumentError, LogNotFoundError, LogstoreError
from .hub import TailHub
from .log import LogHandle
from .meta import MetaStore
from .proto import SegmentState
from .storage import Backend, open_backend

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def check_log_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgumentError(f"log name must be a str, got {type(name).__name__}")
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"bad log name {name!r}: use 1–255 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


class Client:
    """``async with Client(config) as client: ...``"""

    def __init__(self, config: Config | Mapping[str, Any]) -> None:
        self.config = config if isinstance(config, Config) else Config.from_dict(config)
        self.meta = MetaStore(self.config)
        self.backend: Backend = open_backend(self.config, self.meta)
        self._hubs: dict[int, TailHub] = {}
        self._writer_watch = None  # writer.WriterWatch: made by the first writer
        self._open = False

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.config.warn_inert()  # Woodpecker keys set that do nothing here: said once, at start
        await self.meta.connect()
        try:
            await self.backend.start()
        except BaseException:
            await self.meta.close()
            raise
        self._open = True

    async def close(self) -> None:
        self._open = False
        if self._writer_watch is not None:
            await self._writer_watch.stop()
        for hub in self._hubs.values():  # readers left open: their tail pushes end with the client
            if hub.push is not None:
                await hub.push.stop()
        await self.backend.close()
        await self.meta.close()

    def hub_for(self, log_id: int) -> TailHub:
        return self._hubs.setdefault(log_id, TailHub())

    async def create_log(self, name: str) -> LogHandle:
        meta = await self.meta.create_log(check_log_name(name))
        return LogHandle(self, name, meta.log_id)

    async def open_log(self, name: str) -> LogHandle:
        v = await self.meta.get_log(check_log_name(name))
        if v is None:
            raise LogNotFoundError(f"log {name!r} does not exist")
        return LogHandle(self, name, v.value.log_id)

    async def log_exists(self, name: str) -> bool:
        return await self.meta.get_log(check_log_name(name)) is not None

    async def list_logs(self, prefix: str = "") -> list[str]:
        if not isinstance(prefix, str):
            raise InvalidArgumentError("prefix must be a str")
        return await self.meta.list_logs(prefix)

    async def _fence_active(self, name: str, log_id: int) -> None:
        """Fence the active segment first, so a writer in another process cannot
        acknowledge one more append into a log being deleted.  Best effort: with
        its storage unreachable the deletion still goes on (that writer then
        learns of it from etcd within reader.metaPollInterval)."""
        handle = LogHandle(self, name, log_id)
        for seg in await self.meta.segments(name):
            if seg.value.state == SegmentState.ACTIVE:
                try:
                    await handle.complete_segment(seg)
                except LogstoreError as e:
                    log.warning("deleting log %r: could not fence segment %d first: %s", name, seg.value.seg_no, e)

    async def delete_log(self, name: str) -> tuple[int, int]:
        """Delete the log's stored bytes and its metadata → (objects or files, bytes)
        removed.  Storage goes first so no bytes are left without a record."""
        v = await self.meta.get_log(check_log_name(name))
        if v is None:
            raise LogNotFoundError(f"log {name!r} does not exist")
        await self._fence_active(name, v.value.log_id)
        n, b = await self.backend.delete_log(v.value.log_id)
        v = await self.meta.require_log(name)
        await self.meta.delete_log(name, v.mod_revision, v.value.log_id)
        n2, b2 = await self.backend.delete_log(v.value.log_id)  # anything a late writer added meanwhile
        return n + n2, b + b2
