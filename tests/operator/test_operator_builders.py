"""Golden YAML of every object the operator builds from a WoodpeckerCluster."""
from __future__ import annotations

import copy

import pytest
import yaml
from opsupport import check_golden, cluster_body, sample
from picchio_operator.model import cluster as b
from picchio_operator.model import constants as k
from picchio_operator.model.config import InvalidConfig, render_client_config, render_config
from picchio_operator.model.spec import parse_cluster

from logstore import Config

BUILDERS = {
    "configmap": lambda c, cfg: b.configmap(c, cfg),
    "statefulset": lambda c, cfg: b.statefulset(c, cfg),
    "service-headless": lambda c, cfg: b.headless_service(c),
    "service-client": lambda c, cfg: b.client_service(c),
    "service-metrics": lambda c, cfg: b.metrics_service(c),
    "pdb": lambda c, cfg: b.pdb(c),
}


@pytest.mark.parametrize("what", sorted(BUILDERS))
def test_service_mode_sample_golden(what: str) -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    check_golden(f"service-{what}.yaml", BUILDERS[what](c, render_config(c)))


def test_embedded_sample_is_only_configmaps() -> None:
    c = parse_cluster(sample("cluster-embedded.yaml"))
    children = b.desired_children(c, render_config(c))
    assert [(o["kind"], o["metadata"]["name"]) for o in children] == [
        ("ConfigMap", "wal-embedded-config"), ("ConfigMap", "wal-embedded-client")]
    check_golden("embedded-configmap.yaml", children[0])
    check_golden("embedded-client-configmap.yaml", children[1])


def test_service_mode_client_configmap_golden() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    check_golden("service-client-configmap.yaml", b.client_configmap(c, render_client_config(c)))


def client_values(body: dict) -> dict:
    c = parse_cluster(body)
    cm = b.desired_children(c, render_config(c))[1]
    assert cm["metadata"]["name"] == k.client_configmap_name(c.name)
    return Config.from_dict(yaml.safe_load(cm["data"]["woodpecker.yaml"]))  # the WAL's own loader


def test_client_config_is_what_an_application_needs_and_no_secret() -> None:
    """Loaded with the WAL's own Config: service mode → storage type service
    with spec.quorum; embedded → the storage the clients write to."""
    svc = sample("cluster-service.yaml")
    svc["spec"]["quorum"] = {"ensembleSize": 3, "writeQuorum": 2, "ackQuorum": 2}
    svc["spec"]["etcd"]["credentialsSecret"] = "etcd-admin"
    cfg = client_values(svc)
    assert cfg.storage_type == "service"
    assert (cfg["woodpecker.client.quorum.ensembleSize"], cfg["woodpecker.client.quorum.writeQuorum"],
            cfg["woodpecker.client.quorum.ackQuorum"]) == (3, 2, 2)
    assert cfg["etcd.endpoints"] == ["etcd.picchio-system.svc:2379"] and cfg["etcd.rootPath"] == "wal"
    assert (cfg["minio.bucketName"], cfg["minio.rootPath"]) == ("picchio", "wal")
    assert cfg["woodpecker.client.segmentRollingPolicy.maxSize"] == 128 << 20  # spec.config reaches clients (128M, binary)
    c = parse_cluster(svc)
    text = b.desired_children(c, render_config(c))[1]["data"]["woodpecker.yaml"]
    body = yaml.safe_load(text)
    assert body["etcd"]["auth"] == {"enabled": True}  # Woodpecker's switch; user and password come from env
    assert "username" not in body["etcd"] and "password" not in body["etcd"]
    assert "accessKeyID" not in body["minio"] and "secretAccessKey" not in body["minio"]
    assert "minioadmin" not in text
    assert "Secret wal-etcd-client" in text and "Secret picchio-s3" in text  # where the credentials are
    emb = client_values(sample("cluster-embedded.yaml"))
    assert emb.storage_type == "minio"
    assert (emb["minio.address"], emb["minio.port"]) == ("minio.picchio-system.svc", 9000)


def test_spec_quorum_cannot_be_contradicted_by_spec_config() -> None:
    body = cluster_body(config={"woodpecker": {"client": {"quorum": {"ackQuorum": 3}}}})
    with pytest.raises(InvalidConfig, match="spec.quorum.ackQuorum"):
        render_config(parse_cluster(body))


def test_minimal_service_cluster_golden() -> None:
    """Defaults only: emptyDir buffer, no resources, no scheduling constraints."""
    body = {"metadata": {"name": "mini", "namespace": "ns", "uid": "u-mini", "generation": 1},
            "spec": {"mode": "service", "etcd": {"endpoints": ["etcd:2379"]},
                     "storage": {"endpoint": "https://s3.example:443", "bucket": "bkt"}}}
    c = parse_cluster(body)
    check_golden("minimal-statefulset.yaml", b.statefulset(c, render_config(c)))


def test_service_mode_children_in_apply_order_with_owner_refs() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    children = b.desired_children(c, render_config(c))
    assert [o["kind"] for o in children] == [
        "ConfigMap", "ConfigMap", "NetworkPolicy", "Service", "Service", "Service", "StatefulSet",
        "PodDisruptionBudget"]
    for o in children:
        (ref,) = o["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster", "name": "wal",
                       "uid": "0000-uid", "controller": True, "blockOwnerDeletion": True}
        assert o["metadata"]["namespace"] == "team-a"
    names = {o["metadata"]["name"] for o in children if o["kind"] == "Service"}
    assert names == {"wal-server-headless", "wal-server-client", "wal-server-metrics"}


def test_client_service_port_and_seeds() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    svc = b.client_service(c)
    assert svc["metadata"]["name"] == "wal-server-client"
    assert svc["spec"]["ports"][0]["port"] == 18080
    assert c.seeds == ["wal-server-client.team-a.svc:18080"]


def test_selector_matches_pod_labels() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    sts = b.statefulset(c, render_config(c))
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for key, val in sts["spec"]["selector"]["matchLabels"].items():
        assert pod_labels[key] == val
    assert b.selector_string(c) == ",".join(f"{a}={v}" for a, v in sorted(sts["spec"]["selector"]["matchLabels"].items()))


def test_pod_template_labels_cannot_override_selector_labels() -> None:
    body = cluster_body(podTemplate={"labels": {k.LABEL_INSTANCE: "evil", "team": "a"}})
    c = parse_cluster(body)
    labels = b.statefulset(c, render_config(c))["spec"]["template"]["metadata"]["labels"]
    assert labels[k.LABEL_INSTANCE] == "wal" and labels["team"] == "a"


def test_config_change_rolls_pods_and_nothing_else_does() -> None:
    base = parse_cluster(sample("cluster-service.yaml"))
    h0 = b.statefulset(base, render_config(base))["spec"]["template"]["metadata"]["annotations"][k.CONFIG_HASH_ANNOTATION]
    same = parse_cluster(sample("cluster-service.yaml"))
    assert b.statefulset(same, render_config(same))["spec"]["template"]["metadata"]["annotations"][
        k.CONFIG_HASH_ANNOTATION] == h0
    body = cluster_body(config={"woodpecker": {"client": {"segmentRollingPolicy": {"maxSize": "64M"}}}})
    changed = parse_cluster(body)
    cfg = render_config(changed)
    assert cfg.hash != h0
    assert b.statefulset(changed, cfg)["spec"]["template"]["metadata"]["annotations"][k.CONFIG_HASH_ANNOTATION] == cfg.hash
    assert b.configmap(changed, cfg)["metadata"]["annotations"][k.CONFIG_HASH_ANNOTATION] == cfg.hash
    # Scaling changes replicas but not the pod template (no roll).
    scaled = parse_cluster(cluster_body(replicas=5))
    t_scaled = b.statefulset(scaled, render_config(scaled))
    t_base = b.statefulset(base, render_config(base))
    assert t_scaled["spec"]["replicas"] == 5
    assert t_scaled["spec"]["template"] == t_base["spec"]["template"]


@pytest.mark.parametrize("replicas,ack,expected", [(3, 2, 1), (5, 2, 3), (5, 3, 2), (2, 2, 0), (1, 1, 0)])
def test_pdb_never_lets_evictions_go_below_ack_quorum(replicas: int, ack: int, expected: int) -> None:
    body = cluster_body(replicas=replicas, quorum={"ensembleSize": ack, "writeQuorum": ack, "ackQuorum": ack})
    c = parse_cluster(body)
    pdb = b.pdb(c)
    assert pdb["spec"]["maxUnavailable"] == expected
    assert replicas - pdb["spec"]["maxUnavailable"] >= ack


def test_secrets_reach_pods_as_env_never_in_configmap() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    cfg = render_config(c)
    assert "secretAccessKey" not in cfg.text and "accessKeyID" not in cfg.text
    env = {e["name"]: e for e in b.statefulset(c, cfg)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PICCHIO_MINIO_SECRETACCESSKEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "picchio-s3", "key": "secretAccessKey"}
    assert "PICCHIO_ETCD_PASSWORD" not in env  # no etcd credentials configured


def test_pod_command_and_config_mount() -> None:
    c = parse_cluster(sample("cluster-service.yaml"))
    pod = b.statefulset(c, render_config(c))["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert ctr["command"] == ["picchio", "logstore", "serve", "--config", "/etc/picchio/woodpecker.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
    assert mounts["config"] == "/etc/picchio"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["config"]["configMap"]["name"] == "wal-config"
    assert "data" not in vols  # the sample has storageSize: a PVC template, not an emptyDir


def test_builders_do_not_mutate_their_input() -> None:
    body = sample("cluster-service.yaml")
    before = copy.deepcopy(body)
    c = parse_cluster(body)
    b.desired_children(c, render_config(c))
    assert body == before


@pytest.mark.parametrize("policy,when_deleted", [("Retain", "Retain"), ("Delete", "Delete")])
def test_staging_volumes_follow_the_deletion_policy_and_bound_the_disk_budget(policy, when_deleted) -> None:
    body = sample("cluster-service.yaml")
    body["spec"]["deletionPolicy"] = policy
    body["spec"]["storageSize"] = "2Gi"
    c = parse_cluster(body)
    cfg = render_config(c)
    sts = b.statefulset(c, cfg)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == when_deleted
    assert Config.from_dict(cfg.values)["woodpecker.logstore.disk.maxBytes"] == 2 << 30
    body["spec"]["config"] = {"woodpecker.logstore.disk.maxBytes": "1Gi"}  # spec.config still wins
    values = render_config(parse_cluster(body)).values
    assert Config.from_dict(values)["woodpecker.logstore.disk.maxBytes"] == 1 << 30


def test_pods_never_get_the_admin_secret() -> None:
    """With spec.etcd.credentialsSecret (an etcd admin), the LogStores' etcd
    credentials come from the operator's scoped Secret <name>-etcd-client."""
    c = parse_cluster({"metadata": {"name": "wal", "namespace": "team-a", "uid": "u", "generation": 1},
                       "spec": {"mode": "service",
                                "etcd": {"endpoints": ["etcd:2379"], "credentialsSecret": "etcd-admin"},
                                "storage": {"endpoint": "http://minio:9000", "bucket": "b"}}})
    sts = b.statefulset(c, render_config(c))
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    for var, key in (("PICCHIO_ETCD_AUTH_USERNAME", "username"), ("PICCHIO_ETCD_AUTH_PASSWORD", "password")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "wal-etcd-client", "key": key}
    assert "etcd-admin" not in str(sts)
