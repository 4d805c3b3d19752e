"""WoodpeckerCluster status: summary Ready, LogStoresReady/Degraded rules,
scale fields, previous check results kept when not re-checked."""
from __future__ import annotations

from datetime import timedelta

from opsupport import NOW, sample
from picchio_operator.model.cluster_status import StatefulSetObservation, cluster_status, logstores_conditions
from picchio_operator.model.conditions import cond, get_condition
from picchio_operator.model.spec import parse_cluster

OK_GATES = [cond("ConfigValid", True, "ConfigValid")]
ETCD_OK = cond("EtcdReady", True, "KeyspaceReady", "ok")
S3_OK = cond("StorageReady", True, "StorageVerified", "ok")
TLS_OK = cond("TLSReady", True, "CertificatesValid", "ok")


def sts(ready: int, replicas: int = 3, updated: int | None = None, gen: int = 1, observed: int = 1):
    return StatefulSetObservation(replicas=replicas, ready_replicas=ready,
                                  updated_replicas=replicas if updated is None else updated,
                                  generation=gen, observed_generation=observed)


def status(c, **kw):
    args = dict(old_conditions=None, gates=OK_GATES, etcd=ETCD_OK, storage=S3_OK, sts=sts(3), logs=2,
                config_hash="abc", meta_prefix="wal/woodpecker", now=NOW, tls=TLS_OK)
    args.update(kw)
    return cluster_status(c, **args)


def test_all_good_service_cluster() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    st = status(c)
    assert get_condition(st["conditions"], "Ready")["status"] == "True"
    assert get_condition(st["conditions"], "Ready")["reason"] == "Ready"
    assert get_condition(st["conditions"], "Degraded")["status"] == "False"
    assert (st["replicas"], st["readyReplicas"], st["logs"], st["observedGeneration"]) == (3, 3, 2, 3)
    assert st["selector"] == "app.kubernetes.io/component=logstore,app.kubernetes.io/instance=wal,app.kubernetes.io/name=woodpecker"
    assert st["seeds"] == ["wal-server-client.team-a.svc:18080"]
    assert {c["type"] for c in st["conditions"]} == {"Ready", "EtcdReady", "StorageReady", "LogStoresReady", "Degraded",
                                                    "TLSReady"}


def test_ready_needs_ensemble_size_and_degraded_means_below_replicas() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))  # ensembleSize 3 of 3 replicas
    stores, degraded = logstores_conditions(c, sts(2))
    assert (stores.status, stores.reason) == ("False", "BelowEnsembleSize")
    assert (degraded.status, degraded.reason) == ("True", "LogStoresUnavailable")
    st = status(c, sts=sts(2))
    ready = get_condition(st["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BelowEnsembleSize")
    assert "2/3 LogStores ready" in ready["message"]


def test_rollout_is_degraded_but_ready() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    st = status(c, sts=sts(3, updated=1))
    assert get_condition(st["conditions"], "Ready")["status"] == "True"
    d = get_condition(st["conditions"], "Degraded")
    assert (d["status"], d["reason"]) == ("True", "RollingUpdate")


def test_no_statefulset_yet_is_unknown_provisioning() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    st = status(c, sts=None)
    ready = get_condition(st["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "Provisioning")
    assert st["replicas"] == 0


def test_embedded_cluster_has_no_logstore_condition() -> None:
    c = parse_cluster(sample("cluster-embedded.yaml"))
    st = status(c, sts=None)
    assert get_condition(st["conditions"], "LogStoresReady") is None
    assert get_condition(st["conditions"], "Ready")["status"] == "True"
    assert st["replicas"] == 0 and st["seeds"] == []


def test_invalid_config_gate_shows_in_ready() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    st = status(c, gates=[cond("ConfigValid", False, "InvalidConfig", "spec.config: woodpecker.x: unknown configuration key")])
    ready = get_condition(st["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidConfig")
    assert "woodpecker.x" in ready["message"]
    assert get_condition(st["conditions"], "ConfigValid") is None  # a gate, not a condition


def test_unchecked_results_are_kept_from_the_previous_pass() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    first = status(c, storage=cond("StorageReady", False, "BucketMissing", "no bucket"))
    later = status(c, old_conditions=first["conditions"], etcd=None, storage=None, now=NOW + timedelta(minutes=1))
    s = get_condition(later["conditions"], "StorageReady")
    assert (s["status"], s["reason"], s["lastTransitionTime"]) == ("False", "BucketMissing", "2025-01-02T03:04:05Z")
    assert get_condition(later["conditions"], "Ready")["reason"] == "BucketMissing"
    fresh = status(c, etcd=None, storage=None)
    assert get_condition(fresh["conditions"], "EtcdReady")["status"] == "Unknown"


def test_statefulset_observation_from_object() -> None:
    obj = {"metadata": {"generation": 4}, "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3,
                                                      "observedGeneration": 4}}
    o = StatefulSetObservation.from_object(obj)
    assert (o.replicas, o.ready_replicas, o.updated_replicas, o.generation, o.observed_generation) == (3, 2, 3, 4, 4)
    assert StatefulSetObservation.from_object(None) is None
    assert StatefulSetObservation.from_object({"metadata": {}}).ready_replicas == 0


def test_tls_gates_ready_unless_the_user_chose_plaintext() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    st = status(c, tls=cond("TLSReady", False, "CertificateWriteFailed", "403"))
    ready = get_condition(st["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CertificateWriteFailed")
    st = status(c, tls=None)  # not checked yet: Unknown, and Ready waits for it
    assert get_condition(st["conditions"], "TLSReady")["status"] == "Unknown"
    assert get_condition(st["conditions"], "Ready")["status"] == "Unknown"
    insecure = parse_cluster(sample("cluster-service.yaml") | {"spec": {**sample("cluster-service.yaml")["spec"],
                                                                         "tls": {"enabled": False}}})
    st = status(insecure, tls=None)
    tls = get_condition(st["conditions"], "TLSReady")
    assert (tls["status"], tls["reason"]) == ("False", "Insecure") and "spec.tls.enabled" in tls["message"]
    assert get_condition(st["conditions"], "Ready")["status"] == "True"


def test_embedded_cluster_has_no_tls_condition() -> None:
    st = status(parse_cluster(sample("cluster-embedded.yaml")), sts=None, tls=None)
    assert get_condition(st["conditions"], "TLSReady") is None
