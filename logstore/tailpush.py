"""Push wake-ups for readers at the tail of another process's writer.

Why: without them such a reader finds a new entry only when it next polls
storage (``reader.storagePollInterval``, 20 ms: p50 ≈ 10 ms).  A push only
*wakes* readers — it bumps the log's :class:`TailHub`, and each reader then
runs its ordinary storage read at once.  No data travels with a push, so the
read path (and its corruption checks) stays the one way entries are read, and
a lost push costs latency only: the poll remains as the fallback.

- ``local``: inotify on the log's directory and on the directories of the
  segments readers wait in, one inotify descriptor per event loop (Linux's
  default allows 128 per user).  The writer sets ``data.log``'s times once a
  block or footer is synced (storage/local.py ``_announce``): that IN_ATTRIB
  wakes the readers — not the write's IN_MODIFY, which precedes the sync.  Uses ``inotify_simple`` (a ~100-line
  ctypes wrapper, no threads); without it (not Linux) readers only poll.
- ``minio`` and ``service``: the writer puts ``{prefix}/tail/{logId}`` =
  ``"seg:lac"`` in etcd (:class:`TailNotifier`: off the append path, at most one
  put in flight and one per ``tailPush.minInterval``); readers watch the key
  (one etcd watch per log and client).  Service mode puts after the LAC reached
  the LogStores, since entries are readable there only from then on.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .hub import TailHub
    from .log import LogHandle
    from .meta import MetaStore

try:
    from inotify_simple import INotify, flags
except ImportError:  # not Linux, or not installed: local readers poll
    INotify = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

_RETRY_MAX = 10.0  # seconds between attempts to re-create a lost etcd watch, at most


def tail_key(meta: "MetaStore", log_id: int) -> bytes:
    return meta.keys.tail(log_id)


class _Inotify:
    """One inotify descriptor per event loop; watches counted per directory and
    subscriber, the descriptor closed with the last watch (nothing leaks)."""

    _loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inotify]" = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ino = INotify(nonblocking=True)
        self.subs: dict[int, set[Callable[[], None]]] = {}
        loop.add_reader(self.ino.fileno(), self._ready)

    @classmethod
    def get(cls) -> "_Inotify":
        loop = asyncio.get_running_loop()
        inst = cls._loops.get(loop)
        if inst is None:
            inst = cls._loops[loop] = cls(loop)
        return inst

    # one mask for every watch: add_watch on a watched directory then keeps it
    MASK = 0 if INotify is None else (flags.CREATE | flags.MOVED_TO | flags.ATTRIB | flags.DELETE_SELF
                                      | flags.ONLYDIR)

    def add(self, path: Path, cb: Callable[[], None]) -> int | None:
        try:
            wd = self.ino.add_watch(str(path), self.MASK)
        except OSError:  # missing yet, or out of inotify watches: the poll covers it
            return None
        self.subs.setdefault(wd, set()).add(cb)
        return wd

    def remove(self, wd: int, cb: Callable[[], None]) -> None:
        s = self.subs.get(wd)
        if s is not None:
            s.discard(cb)
            if not s:
                del self.subs[wd]
                with contextlib.suppress(OSError):
                    self.ino.rm_watch(wd)
        if not self.subs:
            self.loop.remove_reader(self.ino.fileno())
            self.ino.close()
            self._loops.pop(self.loop, None)

    def _ready(self) -> None:
        try:
            events = self.ino.read(timeout=0)
        except OSError:
            return
        fire: set[Callable[[], None]] = set()
        for e in events:
            if e.wd < 0:  # queue overflow: wake everybody
                fire.update(*self.subs.values())
            elif e.mask & flags.IGNORED:  # directory gone: its watch is dropped by the kernel
                fire.update(self.subs.pop(e.wd, ()))
            else:
                fire.update(self.subs.get(e.wd, ()))
        for cb in fire:
            cb()


class TailPush:
    """Per log and client: what wakes its readers waiting at another process's tail."""

    def __init__(self, handle: "LogHandle") -> None:
        self._h = handle
        self._hub: "TailHub" = handle.hub
        self.kind = handle.backend.kind
        self.users = 0
        self.hint_segment = -1  # newest segment a writer announced (etcd value "seg:lac")
        self.watching = False  # an etcd watch is established right now
        self.watches_made = 0
        self._task: asyncio.Task | None = None
        self._ino: _Inotify | None = None
        self._log_wd: int | None = None
        self._root_wd: int | None = None
        self._seg_wds: dict[int, int] = {}

    def attach(self) -> None:
        self.users += 1

    async def detach(self) -> None:
        self.users -= 1
        if self.users <= 0:
            await self.stop()

    def waiting(self, segment: int) -> None:
        """A reader is about to wait at ``segment``: make sure a push can wake it
        (cheap when everything is in place already)."""
        if self.kind == "local":
            if INotify is not None:
                self._arm_local(segment)
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch_loop(), name=f"picchio-tailpush-{self._h.name}")

    def live(self, segment: int) -> bool:
        """True while a push would wake a reader waiting at ``segment``."""
        if self.kind == "local":
            return self._log_wd is not None and segment in self._seg_wds
        return self.watching

    def _poke(self) -> None:
        self._hub.poke()

    # -- local: inotify ----------------------------------------------------------------------
    def _arm_local(self, segment: int) -> None:
        ino = _Inotify.get()
        if ino is not self._ino:  # the first watch, or the descriptor was closed with its last watch
            self._ino, self._log_wd, self._root_wd = ino, None, None
            self._seg_wds.clear()
        root = self._h.backend.root  # type: ignore[attr-defined]
        # every new watch is followed by one poke: what happened before it existed is read now
        if self._log_wd is None:
            self._log_wd = ino.add(root / str(self._h.log_id), self._poke)
            if self._log_wd is not None:
                self._poke()
            if self._log_wd is None and self._root_wd is None:
                self._root_wd = ino.add(root, self._poke)  # until the log's directory exists
            elif self._log_wd is not None and self._root_wd is not None:
                ino.remove(self._root_wd, self._poke)
                self._root_wd = None
        if segment not in self._seg_wds:
            wd = ino.add(root / str(self._h.log_id) / str(segment), self._poke)
            if wd is not None:
                self._seg_wds[segment] = wd
                self._poke()
        for s in [s for s in self._seg_wds if s < segment - 1]:  # keep the one just left: a reader may lag
            ino.remove(self._seg_wds.pop(s), self._poke)

    # -- object storage / service: an etcd watch ------------------------------------------------
    async def _watch_loop(self) -> None:
        """Watch the tail key; a lost watch (etcd restarted, unreachable) is made
        again with a growing pause, the readers polling meanwhile — never an error."""
        meta = self._h.meta
        key = tail_key(meta, self._h.log_id)
        pause = 0.25
        while True:
            watch = None
            try:
                watch = await asyncio.wait_for(meta.client.watch(key), meta.config["etcd.requestTimeout"])
                self.watching, pause = True, 0.25
                self.watches_made += 1
                # whatever was bumped before the watch existed: take its value, and read once more
                kv = await asyncio.wait_for(meta.client.get(key), meta.config["etcd.requestTimeout"])
                if kv is not None:
                    self._note(kv.value)
                self._poke()
                async for ev in watch:
                    self._note(ev.kv.value)
                    self._poke()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: poll, and try again later
                log.debug("log %r: tail watch lost (%r); readers poll until it is back", self._h.name, e)
            finally:
                self.watching = False
                if watch is not None:
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(watch.cancel(), 1.0)
            await asyncio.sleep(pause)
            pause = min(_RETRY_MAX, pause * 2)

    def _note(self, value: bytes) -> None:
        with contextlib.suppress(ValueError):
            self.hint_segment = max(self.hint_segment, int(value.split(b":", 1)[0]))

    async def stop(self) -> None:
        """Cancel the watch task and drop every inotify watch (readers closed)."""
        self.users = 0
        t, self._task = self._task, None
        if t is not None and not t.done():
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(t, 2.0)
        self.stop_local()

    def abandon(self) -> None:
        """``stop`` without awaiting (a reader garbage-collected unclosed)."""
        self.users = 0
        t, self._task = self._task, None
        if t is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                t.cancel()
        with contextlib.suppress(RuntimeError, OSError):
            self.stop_local()

    def stop_local(self) -> None:
        ino, self._ino = self._ino, None
        if ino is None:
            return
        for wd in [self._log_wd, self._root_wd, *self._seg_wds.values()]:
            if wd is not None:
                ino.remove(wd, self._poke)
        self._log_wd = self._root_wd = None
        self._seg_wds.clear()


class TailNotifier:
    """The writer's side for object storage and service mode: bump the tail key,
    coalesced — at most one put in flight and one per ``min_interval``; the
    newest (segment, LAC) wins.  Never awaited by an append: a failed put is
    logged at debug level and dropped (readers then poll)."""

    def __init__(self, meta: "MetaStore", log_id: int, min_interval: float, timeout: float) -> None:
        self._meta, self._key = meta, tail_key(meta, log_id)
        self._interval, self._timeout = min_interval, timeout
        self._want: tuple[int, int] = (-1, -1)
        self._sent: tuple[int, int] = (-1, -1)
        self._last = 0.0
        self._task: asyncio.Task | None = None
        self.puts = 0

    def notify(self, segment: int, lac: int) -> None:
        self._want = max(self._want, (segment, lac))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="picchio-tailnotify")

    async def _run(self) -> None:
        while self._sent < self._want:
            pause = self._last + self._interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            want = self._want
            self._last = time.monotonic()
            try:
                await asyncio.wait_for(self._meta.client.put(self._key, b"%d:%d" % want), self._timeout)
                self.puts += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a lost bump costs readers latency, nothing else
                log.debug("tail notification failed: %r", e)
            self._sent = want

    async def close(self) -> None:
        """Let the last bump go out (bounded), then stop."""
        t, self._task = self._task, None
        if t is not None and not t.done():
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(t), 1.0)
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
