"""The periodic orphan scan of a WoodpeckerCluster (issue 11.2), run from the
cluster's resync timer when ``spec.gc.orphanScanIntervalSeconds`` have passed.

The scan itself is the library's (``logstore.orphans``): one streamed listing
of the cluster's storage root against its etcd keyspace.  Here: when, with
which client, and what the user sees — ``status.orphans``, an event, metrics.
Objects younger than ``spec.gc.orphanGraceSeconds`` are never judged: a writer
may be creating them."""
from __future__ import annotations

import asyncio
from typing import Any

from ..model import constants as k
from ..model.orphans import orphan_scan_due, orphan_status
from ..model.spec import ClusterSpec
from ..runtime import KopfLogger, Runtime, utcnow
from . import gauges
from .common import cluster_client, status_of


async def scan_if_due(rt: Runtime, body: Any, c: ClusterSpec, logger: KopfLogger) -> None:
    now = utcnow()
    if not orphan_scan_due(c, status_of(body), now):
        return
    from logstore.orphans import scan_orphans  # lazy, like the other library calls

    delete = c.gc.mode == "delete"
    try:
        client, _ = await cluster_client(rt, c)
        rep = await asyncio.wait_for(scan_orphans(client, c.gc.grace_seconds, delete=delete),
                                     rt.tunables.orphan_scan_timeout)
    except Exception as e:  # noqa: BLE001 - a failed scan is reported and retried next time
        rt.metrics.inc("picchio_operator_orphan_scans_total", result="error")
        rt.events.warn(body, reason="OrphanScanFailed", message=f"{type(e).__name__}: {e}")
        logger.warning("orphan scan failed: %r", e)
        return
    rt.metrics.inc("picchio_operator_orphan_scans_total", result="ok")
    rt.metrics.inc("picchio_operator_orphan_objects_deleted_total", rep.deleted)
    status = orphan_status(rep.as_dict(), c.gc.mode, now)
    gauges.orphans(rt.metrics, c, rep.objects, rep.bytes, len(rep.missing_segments))
    await rt.kube.patch_status(k.CLUSTER_PLURAL, c.namespace, c.name, {"orphans": status})
    if rep.objects or rep.missing_segments:
        did = f"deleted {rep.deleted}" if delete else "kept (spec.gc.orphans: report)"
        rt.events.warn(body, reason="OrphansFound",
                       message=f"{rep.objects} orphan objects ({rep.bytes} bytes), {did}; "
                               f"{len(rep.missing_segments)} segments missing their objects"
                               + (f" (e.g. {', '.join(rep.missing_segments[:3])})" if rep.missing_segments else ""))
