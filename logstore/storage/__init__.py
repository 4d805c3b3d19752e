"""Storage backends for a segment's bytes: ``local`` (a local or shared file
system, one ``data.log`` per segment) and ``objects`` (S3-compatible object
storage, one object per block).  Both follow Woodpecker's layout so either
side can read what the other wrote."""
from __future__ import annotations

from ..config import Config
from .base import Backend, BlockRef, Recovered, ScanResult, SegmentWriter


def open_backend(config: Config, meta=None) -> Backend:
    kind = config.storage_type
    if kind == "local":
        from .local import LocalBackend
        return LocalBackend(config)
    if kind == "minio":
        from .objects import ObjectBackend
        return ObjectBackend(config)
    if kind == "service":
        from .service import ServiceBackend
        return ServiceBackend(config, meta)
    from ..errors import ConfigError
    raise ConfigError(f"woodpecker.storage.type: unknown type {kind!r}")


__all__ = ["Backend", "BlockRef", "Recovered", "ScanResult", "SegmentWriter", "open_backend"]
