"""The operator's gauges: what its last pass over an object observed, as the
series ``manifests/monitoring`` draws and alerts on.

Prometheus cannot read ``status`` (ready LogStores, segments awaiting GC,
orphans), so each handler that writes such a status also sets the matching
gauge here; a deleted object's series are dropped, or a dashboard would go on
showing a cluster that no longer exists.  Labels: ``namespace`` and ``cluster``
(the WoodpeckerCluster), plus ``log`` (the WoodpeckerLog's name) for logs.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..metrics import Metrics
from ..model.log import LogObservation, first_live_id, segments_awaiting_gc
from ..model.spec import ClusterSpec, LogSpec


def cluster(m: Metrics, c: ClusterSpec, status: Mapping[str, Any]) -> None:
    """LogStores desired and ready next to the ack quorum: fewer ready than
    the ack quorum and appends fail (the QuorumAtRisk/QuorumLost alerts)."""
    if not c.service_mode:
        return
    labels = {"namespace": c.namespace, "cluster": c.name}
    m.set("picchio_operator_cluster_logstores_desired", c.replicas, **labels)
    m.set("picchio_operator_cluster_logstores_ready", int(status.get("readyReplicas") or 0), **labels)
    m.set("picchio_operator_cluster_ack_quorum", c.quorum.ack_quorum, **labels)


def orphans(m: Metrics, c: ClusterSpec, objects: int, nbytes: int, missing_segments: int) -> None:
    labels = {"namespace": c.namespace, "cluster": c.name}
    m.set("picchio_operator_orphan_objects", objects, **labels)
    m.set("picchio_operator_orphan_bytes", nbytes, **labels)
    m.set("picchio_operator_orphan_missing_segments", missing_segments, **labels)


def log(m: Metrics, s: LogSpec, obs: LogObservation, now: datetime) -> None:
    """Segments, bytes, GC backlog and truncation lag of one log.  The lag is
    the age of the oldest segment still holding live entries (the one with
    the first entry past the truncation point): with retention it should stay
    near ``retention.seconds`` plus a segment's lifetime; growing without
    bound means nothing truncates."""
    labels = {"namespace": s.namespace, "cluster": s.cluster_ref, "log": s.name}
    m.set("picchio_operator_log_segments", len(obs.segments), **labels)
    m.set("picchio_operator_log_bytes", sum(seg.size for seg in obs.segments), **labels)
    m.set("picchio_operator_log_gc_backlog_segments", segments_awaiting_gc(obs), **labels)
    first = first_live_id(obs)
    oldest = next((seg for seg in obs.segments if first is not None and seg.id == first.segment_id), None)
    lag = (now - oldest.create_time).total_seconds() if oldest is not None and oldest.create_time else 0.0
    m.set("picchio_operator_log_truncation_lag_seconds", max(lag, 0.0), **labels)


def forget_cluster(m: Metrics, namespace: str, name: str) -> None:
    """A deleted cluster: its gauges and those of its logs go."""
    m.forget(namespace=namespace, cluster=name)


def forget_log(m: Metrics, namespace: str, name: str) -> None:
    m.forget(namespace=namespace, log=name)
