"""The scale-down rules (model/scaledown.py), pure: which replicas are applied
while LogStores are drained, which marks go, what ScalingDown and
status.scaleDown say, and how spec.storage.pvcRetention reaches the
StatefulSet — plus the PDB that keeps voluntary evictions above the ack
quorum."""
from __future__ import annotations

import pytest

from opsupport import cluster_body
from picchio_operator.model.cluster import pdb, pdb_max_unavailable, statefulset
from picchio_operator.model.config import render_config
from picchio_operator.model.scaledown import (ABSENT, ACCEPTING, REFUSING, DrainObservation, LeavingStore,
                                              canonical_endpoint, desired_replicas, endpoint_of, leaving_pods,
                                              marks_to_remove, scale_down_status, scaling_down_condition)
from picchio_operator.model.spec import parse_cluster


def spec(replicas: int = 3, **storage):
    body = cluster_body(replicas=replicas, storageSize="1Gi")
    body["spec"]["storage"].update(storage)
    return parse_cluster(body)


def store(pod: str, state: str = REFUSING, segments: int = 0) -> LeavingStore:
    return LeavingStore(pod, f"{pod}:18080", state, segments)


def test_the_leaving_pods_are_the_highest_ordinals() -> None:
    c = spec(3)
    assert leaving_pods(c, 5) == ["wal-server-3", "wal-server-4"]
    assert leaving_pods(c, 3) == [] and leaving_pods(c, 2) == [] and leaving_pods(c, None) == []


def test_the_statefulset_stays_until_drained() -> None:
    c = spec(3)
    waiting = DrainObservation((store("wal-server-3", segments=2),), segments=2, active=1, completed=1)
    assert desired_replicas(c, 4, waiting) == 4
    assert desired_replicas(c, 4, None) == 4  # not looked at: never assumed drained
    assert desired_replicas(c, 4, DrainObservation(error="etcd down")) == 4
    not_seen = DrainObservation((store("wal-server-3", ACCEPTING),))
    assert desired_replicas(c, 4, not_seen) == 4  # it may still take a new segment's entries
    assert desired_replicas(c, 4, DrainObservation((store("wal-server-3"),))) == 3
    assert desired_replicas(c, 4, DrainObservation((store("wal-server-3", ABSENT),))) == 3


def test_scale_up_and_creation_apply_spec_replicas_at_once() -> None:
    assert desired_replicas(spec(5), 3, None) == 5
    assert desired_replicas(spec(3), None, None) == 3


def test_marks_go_when_cancelled_or_when_the_pod_is_gone() -> None:
    marks = {"wal-server-3": "e3", "wal-server-4": "e4"}
    # 5 → 3 in progress: both kept
    assert marks_to_remove(spec(3), 5, 5, marks) == {}
    # raised to 4 meanwhile: wal-server-3 takes appends again, wal-server-4 still leaves
    assert marks_to_remove(spec(4), 5, 5, marks) == {"wal-server-3": "e3"}
    # raised back to 5: both cancelled
    assert marks_to_remove(spec(5), 5, 5, marks) == marks
    # drained and lowered to 3: kept while the pods terminate, removed once gone
    assert marks_to_remove(spec(3), 3, 5, marks) == {}
    assert marks_to_remove(spec(3), 3, 4, marks) == {"wal-server-4": "e4"}
    assert marks_to_remove(spec(3), 3, 3, marks) == marks
    # gone from the API but still registered (its lease not yet run out, or a LogStore running outside
    # the pod): kept, or writers would choose it again; a cancelled one goes regardless
    assert marks_to_remove(spec(3), 3, 3, marks, {"e4"}) == {"wal-server-3": "e3"}
    assert marks_to_remove(spec(5), 5, 5, marks, {"e3", "e4"}) == marks
    # a mark that is not one of this StatefulSet's pods is stale
    assert marks_to_remove(spec(3), 3, 3, {"127.0.0.1:1": "127.0.0.1:1"}) == {"127.0.0.1:1": "127.0.0.1:1"}


def test_endpoint_from_the_registration_or_the_advertised_address() -> None:
    c = spec(3)
    assert canonical_endpoint(c, "wal-server-3") == "wal-server-3.wal-server-headless.team-a.svc:18080"
    regs = [{"nodeId": "wal-server-3.wal-server-headless.team-a.svc-18080", "endpoint": "10.0.0.7:18080"},
            {"nodeId": "wal-server-30", "endpoint": "10.0.0.8:18080"}]
    assert endpoint_of(c, "wal-server-3", regs) == "10.0.0.7:18080"
    assert endpoint_of(c, "wal-server-30", regs) == "10.0.0.8:18080"
    assert endpoint_of(c, "wal-server-4", regs) == canonical_endpoint(c, "wal-server-4")


def test_condition_while_draining_names_counts_and_why() -> None:
    c = spec(3)
    obs = DrainObservation((store("wal-server-3", ACCEPTING, 2),), segments=2, active=1, completed=1)
    cnd = scaling_down_condition(c, 4, 4, obs, {}, None)
    assert (cnd.status, cnd.reason) == ("True", "Decommissioning")
    assert cnd.message == (
        "4 → 3 LogStores: the StatefulSet stays at 4 until wal-server-3 holds nothing outside object storage. "
        "Segments still to flush: 2 (1 active, being sealed by their writers; 1 completed, being compacted). "
        "LogStores waiting: 1 (wal-server-3: has not yet seen its mark (still takes appends) and in the ensemble "
        "of 2 segment(s) not yet in object storage)")
    st = scale_down_status(c, 4, 4, obs)
    assert st == {"from": 4, "to": 3, "phase": "Draining", "segmentsToFlush": 2, "activeSegments": 1,
                  "logStoresWaiting": 1,
                  "leaving": [{"pod": "wal-server-3", "endpoint": "wal-server-3:18080", "state": "accepting",
                               "segments": 2}]}


def test_condition_when_the_check_fails_holds_and_says_why() -> None:
    c = spec(3)
    cnd = scaling_down_condition(c, 4, 4, DrainObservation(error="etcd: timed out"), {}, None)
    assert (cnd.status, cnd.reason) == ("True", "DecommissionCheckFailed")
    assert "etcd: timed out" in cnd.message and "stays at 4" in cnd.message
    assert scale_down_status(c, 4, 4, DrainObservation(error="x"))["phase"] == "Blocked"


def test_condition_through_removal_to_completion() -> None:
    c = spec(3)
    drained = DrainObservation((store("wal-server-3"),))
    assert scaling_down_condition(c, 4, 4, drained, {}, None).reason == "RemovingLogStores"
    assert scale_down_status(c, 4, 4, drained)["phase"] == "Removing"
    # lowered, pod terminating
    cnd = scaling_down_condition(c, 3, 4, None, {}, None)
    assert (cnd.status, cnd.reason) == ("True", "RemovingLogStores") and "wal-server-3" in cnd.message
    assert scale_down_status(c, 3, 4, None)["phase"] == "Removing"
    # gone: marks removed this pass
    done = scaling_down_condition(c, 3, 3, None, {"wal-server-3": "e"}, None)
    assert (done.status, done.reason) == ("False", "ScaleDownComplete")
    assert done.message == "wal-server-3 decommissioned and removed; its PVC is deleted"
    assert scale_down_status(c, 3, 3, None) is None
    # kept on later passes, so `kubectl describe` still tells how it ended
    old = {"type": "ScalingDown", "status": "False", "reason": done.reason, "message": done.message}
    assert scaling_down_condition(c, 3, 3, None, {}, old) == done
    kept = scaling_down_condition(spec(3, pvcRetention="Retain"), 3, 3, None, {"wal-server-3": "e"}, None)
    assert "its PVC is kept (spec.storage.pvcRetention: Retain)" in kept.message
    two = scaling_down_condition(spec(3), 3, 3, None, {"wal-server-3": "e", "wal-server-4": "f"}, None)
    assert two.message == "wal-server-3, wal-server-4 decommissioned and removed; their PVCs are deleted"


def test_condition_on_cancel_and_when_idle() -> None:
    cnd = scaling_down_condition(spec(4), 4, 4, None, {"wal-server-3": "e"}, None)
    assert (cnd.status, cnd.reason) == ("False", "ScaleDownCancelled") and "wal-server-3" in cnd.message
    idle = scaling_down_condition(spec(3), 3, 3, None, {}, None)
    assert (idle.status, idle.reason) == ("False", "NotScalingDown")


@pytest.mark.parametrize("retention", ["Delete", "Retain"])
def test_pvc_retention_is_the_statefulsets_when_scaled(retention: str) -> None:
    c = spec(3, pvcRetention=retention)
    sts = statefulset(c, render_config(c))
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": retention}


def test_pvc_retention_defaults_to_delete() -> None:
    assert spec(3).storage.pvc_retention == "Delete"


@pytest.mark.parametrize("replicas,max_unavailable", [(3, 1), (4, 2), (2, 0), (5, 3)])
def test_pdb_never_lets_evictions_go_below_the_ack_quorum(replicas: int, max_unavailable: int) -> None:
    c = spec(replicas)
    assert pdb_max_unavailable(c) == max_unavailable
    assert replicas - pdb(c)["spec"]["maxUnavailable"] >= c.quorum.ack_quorum


def test_completion_without_volumes_says_so() -> None:
    body = cluster_body(replicas=3)
    del body["spec"]["storageSize"]
    c = parse_cluster(body)
    done = scaling_down_condition(c, 3, 3, None, {"wal-server-3": "e"}, None)
    assert done.message == "wal-server-3 decommissioned and removed; no PVCs (no spec.storageSize)"
