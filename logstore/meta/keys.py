"""etcd keys, all under one prefix P = ``{etcd.rootPath}/{woodpecker.meta.prefix}``
(no leading slash), exactly as Woodpecker lays them out."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def _k(self, *parts: object) -> bytes:
        return "/".join((self.prefix, *map(str, parts))).encode()

    @property
    def instance(self) -> bytes:
        return self._k("instance")

    @property
    def version(self) -> bytes:
        return self._k("version")

    @property
    def logidgen(self) -> bytes:
        return self._k("logidgen")

    @property
    def quorumidgen(self) -> bytes:
        return self._k("quorumidgen")

    @property
    def logs_prefix(self) -> bytes:
        return self._k("logs", "")

    def log(self, name: str) -> bytes:
        return self._k("logs", name)

    def lock(self, name: str) -> bytes:
        return self._k("logs", name, "lock")

    def segments_prefix(self, name: str) -> bytes:
        return self._k("logs", name, "segments", "")

    def segment(self, name: str, seg_id: int) -> bytes:
        return self._k("logs", name, "segments", seg_id)

    def tail(self, log_id: int) -> bytes:
        """picchio's own: bumped by writers so readers elsewhere wake (tailpush.py)."""
        return self._k("tail", log_id)

    def readers_prefix(self, log_id: int) -> bytes:
        return self._k("readers", log_id, "")

    def cleaning_prefix(self, log_id: int) -> bytes:
        return self._k("cleaning", log_id, "")

    def marking_prefix(self, log_id: int) -> bytes:
        return self._k("marking", log_id, "")
