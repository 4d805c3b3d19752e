"""kopf handlers.  :func:`build_registry` returns a fresh registry with every
handler attached (no import-time registration into kopf's global registry, so
an in-process test can run its own operator)."""
from __future__ import annotations

import kopf

from . import cluster, log


def build_registry(*, resync_seconds: float = 60.0, tick_seconds: float = 10.0) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    cluster.register(registry, resync_seconds)
    log.register(registry, tick_seconds)
    return registry
