"""Decommission-aware scale-down of the LogStore StatefulSet — the rules,
without I/O (the protocol itself: ``logstore/decommission.py``).

Why the operator does not just lower ``replicas``: the StatefulSet removes
the highest ordinals at once, and a LogStore holds the only second copy of
every entry of its segments that are not yet in object storage.  So on a
lower ``spec.replicas`` the StatefulSet stays where it is while the leaving
LogStores (ordinals ``spec.replicas … current-1``) are marked in etcd, refuse
appends and are drained; only when none of them holds anything outside
object storage is it lowered.  Their PVCs then go per
``spec.storage.pvcRetention`` (the StatefulSet's ``whenScaled``).  A scale-up
meanwhile cancels: marks of ordinals below ``spec.replicas`` are removed.
Marks of removed ordinals are removed once their pods are gone (a pod still
terminating must not be chosen for a new ensemble).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .conditions import FALSE, TRUE, Cond
from .constants import SERVICE_PORT, headless_service_name, statefulset_name
from .spec import ClusterSpec

SCALING_DOWN = "ScalingDown"
REFUSING, ACCEPTING, ABSENT = "refusing", "accepting", "absent"


def pod_name(c: ClusterSpec, ordinal: int) -> str:
    return f"{statefulset_name(c.name)}-{ordinal}"


def ordinal_of(c: ClusterSpec, pod: str) -> int | None:
    head, _, tail = pod.rpartition("-")
    return int(tail) if head == statefulset_name(c.name) and tail.isdigit() else None


def canonical_endpoint(c: ClusterSpec, pod: str) -> str:
    """The address a LogStore pod advertises (PICCHIO_ADVERTISE_ADDRESS)."""
    return f"{pod}.{headless_service_name(c.name)}.{c.namespace}.svc:{SERVICE_PORT}"


def endpoint_of(c: ClusterSpec, pod: str, registrations: Sequence[Mapping[str, Any]]) -> str:
    """The endpoint LogStore ``pod`` registered under (its node id starts with
    the pod name: by default it is derived from the advertised address), or
    the address a pod of the StatefulSet advertises when it is not running."""
    for r in registrations:
        if str(r.get("nodeId", "")).split(".")[0] == pod and r.get("endpoint"):
            return str(r["endpoint"])
    return canonical_endpoint(c, pod)


def leaving_pods(c: ClusterSpec, current: int | None) -> list[str]:
    """Pods that a scale from ``current`` to ``spec.replicas`` removes."""
    if current is None:
        return []
    return [pod_name(c, i) for i in range(c.replicas, current)]


def marks_to_remove(c: ClusterSpec, current: int | None, present: int,
                    marks: Mapping[str, str], registered: Collection[str] = ()) -> dict[str, str]:
    """Of the marks (pod → endpoint), those to delete now: a pod the spec
    keeps again (cancelled), or a removed pod that is gone (``present`` pods
    exist) and whose LogStore no longer holds a registration (``registered``:
    endpoints in etcd).  A removed pod still terminating keeps its mark, and so
    does one whose registration outlives it (its lease has not run out): writers
    choose ensembles among registrations, and an unmarked one would be chosen
    again — by a LogStore that is gone, or one still running outside the pod."""
    keep = set(leaving_pods(c, current))
    out = {}
    for pod, ep in marks.items():
        o = ordinal_of(c, pod)
        if o is None or o < c.replicas or (pod not in keep and o >= present and ep not in registered):
            out[pod] = ep
    return out


@dataclass(frozen=True)
class LeavingStore:
    pod: str
    endpoint: str
    state: str  # refusing | accepting | absent (see logstore.decommission.acknowledged)
    segments: int  # held segments whose ensemble names it

    @property
    def drained(self) -> bool:
        return self.state != ACCEPTING and self.segments == 0


@dataclass(frozen=True)
class DrainObservation:
    """What the leaving LogStores still hold (one pass); ``error`` when it
    could not be found out — then nothing is assumed drained."""
    stores: tuple[LeavingStore, ...] = ()
    segments: int = 0  # distinct held segments
    active: int = 0
    completed: int = 0
    error: str | None = None

    @property
    def drained(self) -> bool:
        return self.error is None and self.segments == 0 and all(s.drained for s in self.stores)

    @property
    def waiting(self) -> list[LeavingStore]:
        return [s for s in self.stores if not s.drained]


def desired_replicas(c: ClusterSpec, current: int | None, obs: DrainObservation | None) -> int:
    """What to apply as the StatefulSet's replicas: spec.replicas, except
    during a scale-down that is not drained yet (then: unchanged)."""
    if current is None or c.replicas >= current:
        return c.replicas
    return c.replicas if obs is not None and obs.drained else current


def _names(stores: Sequence[LeavingStore] | Sequence[str]) -> str:
    return ", ".join(s.pod if isinstance(s, LeavingStore) else s for s in stores)


def _why(s: LeavingStore) -> str:
    parts = []
    if s.state == ACCEPTING:
        parts.append("has not yet seen its mark (still takes appends)")
    if s.segments:
        parts.append(f"in the ensemble of {s.segments} segment(s) not yet in object storage")
    return f"{s.pod}: {' and '.join(parts)}"


def scaling_down_condition(c: ClusterSpec, current: int | None, present: int, obs: DrainObservation | None,
                           removed_marks: Mapping[str, str], old: Mapping[str, Any] | None) -> Cond:
    """``ScalingDown``: True while LogStores are being decommissioned or
    removed, with the counts and the reason it waits; False otherwise, saying
    how the last scale-down ended (kept until the next one starts)."""
    leaving = leaving_pods(c, current)
    if leaving and obs is not None and obs.error is not None:
        return Cond(SCALING_DOWN, TRUE, "DecommissionCheckFailed",
                    f"{current} → {c.replicas} LogStores: cannot find out what {_names(leaving)} still hold "
                    f"({obs.error}); the StatefulSet stays at {current} until it can")
    if leaving and obs is not None and not obs.drained:
        waiting = obs.waiting
        return Cond(SCALING_DOWN, TRUE, "Decommissioning",
                    f"{current} → {c.replicas} LogStores: the StatefulSet stays at {current} until {_names(leaving)} "
                    f"{'holds' if len(leaving) == 1 else 'hold'} nothing outside object storage. Segments still to "
                    f"flush: {obs.segments} ({obs.active} active, being sealed by their writers; {obs.completed} "
                    f"completed, being compacted). LogStores waiting: {len(waiting)} "
                    f"({'; '.join(_why(s) for s in waiting)})")
    if leaving:
        return Cond(SCALING_DOWN, TRUE, "RemovingLogStores",
                    f"{_names(leaving)} decommissioned (nothing outside object storage); StatefulSet lowered to "
                    f"{c.replicas}")
    if present > c.replicas:
        gone = [pod_name(c, i) for i in range(c.replicas, present)]
        return Cond(SCALING_DOWN, TRUE, "RemovingLogStores",
                    f"StatefulSet lowered to {c.replicas}; waiting for {_names(gone)} to terminate")
    cancelled = sorted(p for p in removed_marks if (ordinal_of(c, p) or 0) < c.replicas)
    if cancelled:
        return Cond(SCALING_DOWN, FALSE, "ScaleDownCancelled",
                    f"spec.replicas raised to {c.replicas} during a scale-down: {_names(cancelled)} take appends "
                    "again")
    if removed_marks:
        subject = "its PVC is" if len(removed_marks) == 1 else "their PVCs are"
        pvcs = ("no PVCs (no spec.storageSize)" if not c.storage_size else f"{subject} deleted"
                if c.storage.pvc_retention == "Delete" else f"{subject} kept (spec.storage.pvcRetention: Retain)")
        return Cond(SCALING_DOWN, FALSE, "ScaleDownComplete",
                    f"{_names(sorted(removed_marks))} decommissioned and removed; {pvcs}")
    if old and old.get("status") == FALSE and old.get("reason") in ("ScaleDownComplete", "ScaleDownCancelled"):
        return Cond(SCALING_DOWN, FALSE, old["reason"], old.get("message", ""))
    return Cond(SCALING_DOWN, FALSE, "NotScalingDown", f"{c.replicas} LogStores, as spec.replicas asks")


def scale_down_status(c: ClusterSpec, current: int | None, present: int,
                      obs: DrainObservation | None) -> dict[str, Any] | None:
    """``status.scaleDown`` (None: no scale-down going on — written as null to
    remove it)."""
    leaving = leaving_pods(c, current)
    if not leaving and present <= c.replicas:
        return None
    if not leaving:
        return {"from": present, "to": c.replicas, "phase": "Removing", "segmentsToFlush": 0,
                "logStoresWaiting": 0, "leaving": []}
    o = obs or DrainObservation(error="not checked")
    phase = "Blocked" if o.error else ("Removing" if o.drained else "Draining")
    return {"from": current, "to": c.replicas, "phase": phase, "segmentsToFlush": o.segments,
            "activeSegments": o.active, "logStoresWaiting": len(o.waiting) if not o.error else len(leaving),
            "leaving": [{"pod": s.pod, "endpoint": s.endpoint, "state": s.state, "segments": s.segments}
                        for s in o.stores]}
