"""What the operator observed about a cluster → its status block.

The handler gathers observations (each check's outcome as a :class:`Cond`,
the StatefulSet's status, the number of logs) and this module decides the
conditions, the summary ``Ready`` and the scale fields.  Kept pure so the
rules — e.g. "Ready needs ensembleSize LogStores, Degraded means fewer than
replicas" — are unit-tested without a cluster.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .cluster import selector_string
from .conditions import FALSE, TRUE, UNKNOWN, Cond, cond, set_conditions, summarize
from .constants import client_configmap_name, etcd_client_secret_name
from .pki import TLS_READY, insecure_condition
from .spec import ClusterSpec

READY, ETCD_READY, STORAGE_READY, LOGSTORES_READY, DEGRADED = (
    "Ready", "EtcdReady", "StorageReady", "LogStoresReady", "Degraded")


@dataclass(frozen=True)
class StatefulSetObservation:
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    observed_generation: int = 0
    generation: int = 0

    @classmethod
    def from_object(cls, sts: Mapping[str, Any] | None) -> StatefulSetObservation | None:
        if not sts:
            return None
        st = sts.get("status") or {}
        return cls(
            replicas=int(st.get("replicas") or 0),
            ready_replicas=int(st.get("readyReplicas") or 0),
            updated_replicas=int(st.get("updatedReplicas") or 0),
            observed_generation=int(st.get("observedGeneration") or 0),
            generation=int((sts.get("metadata") or {}).get("generation") or 0),
        )


def logstores_conditions(c: ClusterSpec, sts: StatefulSetObservation | None) -> tuple[Cond, Cond]:
    """(LogStoresReady, Degraded) in service mode.

    Ready needs ``ensembleSize`` Ready LogStores (enough to place a new
    segment); fewer than ``replicas`` is Degraded, and so is a rollout in
    progress (some pods still run the old configuration)."""
    want = c.replicas
    need = c.quorum.ensemble_size
    if sts is None:
        return (Cond(LOGSTORES_READY, UNKNOWN, "Provisioning", "StatefulSet not created yet"),
                cond(DEGRADED, False, "Provisioning"))
    ready = sts.ready_replicas
    counts = f"{ready}/{want} LogStores ready (ensembleSize {need}, ackQuorum {c.quorum.ack_quorum})"
    ok = ready >= need
    reason = "LogStoresReady" if ok else ("WaitingForLogStores" if ready == 0 else "BelowEnsembleSize")
    stores = cond(LOGSTORES_READY, ok, reason, counts)
    if sts.observed_generation < sts.generation or sts.updated_replicas < sts.replicas:
        degraded = cond(DEGRADED, True, "RollingUpdate", f"{sts.updated_replicas}/{sts.replicas} pods updated; {counts}")
    elif ready < want:
        degraded = cond(DEGRADED, True, "LogStoresUnavailable", counts)
    else:
        degraded = cond(DEGRADED, False, "AllLogStoresReady", counts)
    return stores, degraded


def cluster_status(c: ClusterSpec, *, old_conditions: Sequence[Mapping[str, Any]] | None,
                   gates: Sequence[Cond], etcd: Cond | None, storage: Cond | None,
                   sts: StatefulSetObservation | None, logs: int | None,
                   config_hash: str | None, meta_prefix: str | None, now: datetime,
                   tls: Cond | None = None) -> dict[str, Any]:
    """The full status to write.  ``gates`` are outcomes that are not
    conditions of their own but keep Ready False (an invalid spec.config, a
    failed apply).  ``etcd``/``storage``/``tls`` None means "not checked in
    this pass" and keeps whatever the previous pass found (Unknown at first).
    TLSReady (service mode) gates Ready, except reason Insecure: plaintext
    is the user's choice (spec.tls.enabled false), shown, not held against."""
    parts: list[Cond] = list(gates)
    etcd = etcd or _previous(old_conditions, ETCD_READY)
    storage = storage or _previous(old_conditions, STORAGE_READY)
    parts += [etcd, storage]
    new: list[Cond] = [etcd, storage]
    if c.service_mode:
        stores, degraded = logstores_conditions(c, sts)
        parts.append(stores)
        new += [stores, degraded]
        if not c.tls.enabled:
            tls = insecure_condition()
        tls = tls or _previous(old_conditions, TLS_READY)
        new.append(tls)
        if tls.reason != "Insecure":
            parts.append(tls)
    else:
        degraded = cond(DEGRADED, False, "EmbeddedMode", "no LogStore pods in embedded mode")
        new.append(degraded)
    ready = summarize(parts, ready_reason="Ready",
                      ready_message="etcd and storage verified" + (", LogStores ready" if c.service_mode else ""))
    conditions = set_conditions(old_conditions, [ready, *new], generation=c.generation, now=now)
    status: dict[str, Any] = {
        "observedGeneration": c.generation,
        "conditions": conditions,
        "replicas": (sts.replicas if sts else 0) if c.service_mode else 0,
        "readyReplicas": (sts.ready_replicas if sts else 0) if c.service_mode else 0,
        "selector": selector_string(c),
        "seeds": c.seeds,
    }
    if config_hash:  # rendered, so the client ConfigMap is applied too
        status["clientConfigMap"] = client_configmap_name(c.name)
    if c.etcd.credentials_secret:
        status["etcdClientSecret"] = etcd_client_secret_name(c.name)
    if logs is not None:
        status["logs"] = logs
    if config_hash:
        status["configHash"] = config_hash
    if meta_prefix:
        status["metaPrefix"] = meta_prefix
    return status


def _previous(old: Sequence[Mapping[str, Any]] | None, type_: str) -> Cond:
    for c in old or ():
        if c.get("type") == type_ and c.get("reason"):
            return Cond(type_, c.get("status", UNKNOWN), c["reason"], c.get("message", ""))
    return Cond(type_, UNKNOWN, "NotChecked", "not checked yet")


__all__ = [
    "DEGRADED",
    "ETCD_READY",
    "FALSE",
    "LOGSTORES_READY",
    "READY",
    "STORAGE_READY",
    "TLS_READY",
    "TRUE",
    "StatefulSetObservation",
    "cluster_status",
    "logstores_conditions",
]
