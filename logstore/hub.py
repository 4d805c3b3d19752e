"""In-process tail notifications.

A writer publishes every acknowledged block here; readers of the same log in
the same process wake at once and take the entries from memory instead of
reading them back from storage.  Blocks are kept only while a reader of this
log is open in the process, and then only a bounded window of them; a reader
that falls behind the window reads from storage as usual.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

_MAX_BLOCKS = 256
_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class PublishedBlock:
    segment_id: int
    first_entry_id: int
    entries: tuple[tuple[bytes, dict[str, str]], ...]
    nbytes: int

    @property
    def last_entry_id(self) -> int:
        return self.first_entry_id + len(self.entries) - 1


class TailHub:
    def __init__(self) -> None:
        self.blocks: deque[PublishedBlock] = deque()
        self.nbytes = 0
        self.version = 0
        self.writers = 0  # writers of this log open in this process
        self.readers = 0  # readers of this log open in this process
        self.completed: dict[int, int] = {}  # segment id → last entry id, as completed by a local writer
        self._changed: asyncio.Future | None = None
        self.push: Any = None  # tailpush.TailPush, made by the first reader that waits on storage

    def _bump(self) -> None:
        self.version += 1
        fut, self._changed = self._changed, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def publish(self, block: PublishedBlock) -> None:
        if self.readers:
            self.blocks.append(block)
            self.nbytes += block.nbytes
            while len(self.blocks) > _MAX_BLOCKS or self.nbytes > _MAX_BYTES:
                self.nbytes -= self.blocks.popleft().nbytes
        self._bump()

    def poke(self) -> None:
        """Wake waiting readers with nothing published: a push (tailpush.py) saw
        another process append, and they should read storage now."""
        self._bump()

    def segment_completed(self, segment_id: int, last_entry_id: int) -> None:
        self.completed[segment_id] = last_entry_id
        self._bump()

    def reader_opened(self) -> None:
        self.readers += 1

    def reader_closed(self) -> None:
        self.readers -= 1
        if not self.readers:
            self.blocks.clear()
            self.nbytes = 0

    def find(self, segment_id: int, entry_id: int) -> PublishedBlock | None:
        for b in reversed(self.blocks):
            if b.segment_id == segment_id and b.first_entry_id <= entry_id <= b.last_entry_id:
                return b
            if (b.segment_id, b.last_entry_id) < (segment_id, entry_id):
                break
        return None

    async def wait(self, seen_version: int, timeout: float | None) -> None:
        """Return when something was published after ``seen_version`` or on timeout."""
        if self.version != seen_version:
            return
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._changed), timeout)
        except asyncio.TimeoutError:
            pass
