"""The operator, in-process, against the real control plane, etcd and MinIO:
samples reconcile, children are owned and go with their owner, kwok-Ready
LogStores make the cluster Ready, scale and config changes reach the
StatefulSet, logs are garbage-collected, deletion policies hold."""
from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import boto3
import pytest
import yaml
from opcluster import (ROOT, bucket_keys, condition, cr_path, etcd_keys, kopf_progress, read_entries, wait_condition,
                       wait_for, write_entries, writer_config)

pytestmark = pytest.mark.cluster
SAMPLES = ROOT / "manifests" / "samples"


def load(name: str) -> dict:
    return yaml.safe_load((SAMPLES / name).read_text())


def point_at(obj: dict, ns: str, etcd: Any, minio: Any, bucket: str) -> dict:
    """A sample, rewired to this test's etcd and MinIO (the operator runs in
    this process, so loopback endpoints reach them)."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = ns
    obj["spec"]["etcd"]["endpoints"] = [etcd.endpoint]
    obj["spec"]["etcd"]["rootPath"] = f"{ns}-{obj['metadata']['name']}"
    obj["spec"]["storage"]["endpoint"] = minio.endpoint
    obj["spec"]["storage"]["bucket"] = bucket
    return obj


def s3client(minio: Any) -> Any:
    return boto3.client("s3", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                        aws_secret_access_key=minio.secret_key, region_name="us-east-1")


def secret(api, ns: str, minio: Any) -> None:
    s = load("s3-credentials.yaml")
    s["metadata"]["namespace"] = ns
    s["stringData"] = {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets", s)


def test_service_sample_reconciles_scales_and_rolls(api, kubectl, ns, operator, etcd, minio) -> None:
    secret(api, ns, minio)
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    s3 = s3client(minio)
    s3.create_bucket(Bucket=bucket)
    foreign = {"ID": "milvus-binlogs", "Status": "Enabled", "Filter": {"Prefix": "milvus/"}, "Expiration": {"Days": 30}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})
    wpc = point_at(load("cluster-service.yaml"), ns, etcd, minio, bucket)
    api.call("POST", cr_path("woodpeckerclusters", ns), wpc)

    ready = wait_condition(api, "woodpeckerclusters", ns, "wal", "Ready", "True", timeout=120)
    uid = ready["metadata"]["uid"]
    st = ready["status"]
    assert st["readyReplicas"] == 3 and st["replicas"] == 3
    assert st["seeds"] == [f"wal-server-client.{ns}.svc:18080"]
    assert st["clientConfigMap"] == "wal-client"
    assert condition(ready, "StorageReady")["reason"] == "StorageVerified"
    assert condition(ready, "EtcdReady")["reason"] == "KeyspaceReady"
    assert "picchio.dev/finalizer" in ready["metadata"]["finalizers"]

    # children carry the cluster as controller owner
    children = {
        "ConfigMap": f"/api/v1/namespaces/{ns}/configmaps/wal-config",
        "ConfigMap/client": f"/api/v1/namespaces/{ns}/configmaps/wal-client",
        "Service/headless": f"/api/v1/namespaces/{ns}/services/wal-server-headless",
        "Service/client": f"/api/v1/namespaces/{ns}/services/wal-server-client",
        "Service/metrics": f"/api/v1/namespaces/{ns}/services/wal-server-metrics",
        "StatefulSet": f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server",
        "PDB": f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/wal-server",
    }
    for what, path in children.items():
        obj = api.get(path)
        assert obj is not None, what
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("WoodpeckerCluster", uid, True), what
    assert api.get(children["Service/client"])["spec"]["ports"][0]["port"] == 18080
    assert api.get(children["PDB"])["spec"]["maxUnavailable"] == 1
    client_yaml = yaml.safe_load(api.get(children["ConfigMap/client"])["data"]["woodpecker.yaml"])
    assert client_yaml["woodpecker"]["storage"]["type"] == "service"

    # lifecycle: ours present and scoped, the foreign rule survived
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["milvus-binlogs"]["Expiration"]["Days"] == 30
    assert rules[f"picchio-{ns}-wal-tombstones"]["Filter"]["Prefix"] == "wal/tombstones/"

    out = kubectl("get", "wpc", "-n", ns).stdout
    assert out.splitlines()[1].split()[:5] == ["wal", "service", "3", "3", "Ready"], out

    # kubectl scale → the StatefulSet follows
    kubectl("scale", "wpc/wal", "-n", ns, "--replicas=4")
    wait_for("StatefulSet scaled to 4", lambda: api.get(children["StatefulSet"])["spec"]["replicas"] == 4)
    wait_for("PDB follows the scale", lambda: api.get(children["PDB"])["spec"]["maxUnavailable"] == 2)

    # a config change rolls the pods (new hash in the pod template)
    def template_hash() -> str:
        return api.get(children["StatefulSet"])["spec"]["template"]["metadata"]["annotations"]["picchio.dev/config-hash"]

    before = template_hash()
    api.call("PATCH", cr_path("woodpeckerclusters", ns, "wal"),
             {"spec": {"config": {"woodpecker": {"client": {"segmentRollingPolicy": {"maxSize": "64M"}}}}}},
             "application/merge-patch+json")
    wait_for("pod template hash changes", lambda: template_hash() != before)
    cm = api.get(children["ConfigMap"])["data"]["woodpecker.yaml"]
    assert "maxSize: 64M" in cm

    # a log with data in the cluster's keyspace and bucket prefix
    cfg = writer_config(wpc, etcd.endpoint, minio)
    write_entries(cfg, "kept", 5)
    prefix = f"{wpc['spec']['storage']['rootPath']}/"
    meta = f"{wpc['spec']['etcd']['rootPath']}/woodpecker/"
    objects, keys = bucket_keys(minio, bucket, prefix), etcd_keys(etcd.endpoint, meta)
    assert objects and f"{meta}logs/kept" in keys and any(k.startswith(f"{meta}logs/kept/segments/") for k in keys)

    # delete (Retain): finalizer released, children garbage-collected
    api.call("DELETE", cr_path("woodpeckerclusters", ns, "wal"))
    wait_for("cluster gone", lambda: api.get(cr_path("woodpeckerclusters", ns, "wal")) is None, timeout=60)
    for what, path in children.items():
        wait_for(f"{what} garbage-collected", lambda path=path: api.get(path) is None, timeout=90)
    # Retain keeps the data: every object and every etcd key, and the log reads back
    assert bucket_keys(minio, bucket, prefix) == objects
    assert etcd_keys(etcd.endpoint, meta) == keys
    assert read_entries(cfg, "kept") == [b"e-%03d" % i for i in range(5)]


def test_invalid_config_is_reported_not_crashed(api, ns, operator, etcd, minio) -> None:
    secret(api, ns, minio)
    wpc = point_at(load("cluster-embedded.yaml"), ns, etcd, minio, f"op-{uuid.uuid4().hex[:10]}")
    wpc["spec"]["config"] = {"woodpecker": {"client": {"segmentRollingPolicy": {"maxSzie": "1M"}}}}
    api.call("POST", cr_path("woodpeckerclusters", ns), wpc)
    o = wait_condition(api, "woodpeckerclusters", ns, "wal-embedded", "Ready", "False", reason="InvalidConfig")
    assert "woodpecker.client.segmentRollingPolicy.maxSzie" in condition(o, "Ready")["message"]
    assert api.get(f"/api/v1/namespaces/{ns}/configmaps/wal-embedded-config") is None
    # the user's mistake is not retried in a loop: kopf recorded the create handler as done (its
    # diff base holds the bad config, no retry record or backoff is left), unlike a TemporaryError
    def handled() -> dict | None:
        x = api.get(cr_path("woodpeckerclusters", ns, "wal-embedded"))
        base = (x["metadata"].get("annotations") or {}).get("picchio.dev/last-handled-configuration", "")
        return x if "maxSzie" in base and not kopf_progress(x) else None
    o = wait_for("kopf to record the invalid spec as handled (no retry)", handled, timeout=60)
    assert condition(o, "Ready")["reason"] == "InvalidConfig"
    # fixing the spec reconciles it
    api.call("PATCH", cr_path("woodpeckerclusters", ns, "wal-embedded"), {"spec": {"config": None}},
             "application/merge-patch+json")
    wait_condition(api, "woodpeckerclusters", ns, "wal-embedded", "Ready", "True")
    assert operator.error is None


def write_log(cfg: dict, name: str, n: int) -> list:
    import logstore

    async def go():
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            h = await (c.open_log(name) if await c.log_exists(name) else c.create_log(name))
            async with await h.open_writer() as w:
                return [await w.append(b"e%03d" % i) for i in range(n)]
    return asyncio.run(go())


def test_log_truncated_and_collected_with_delete_policy(api, kubectl, ns, operator, etcd, minio) -> None:
    secret(api, ns, minio)
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    wpc = point_at(load("cluster-embedded.yaml"), ns, etcd, minio, bucket)
    wpc["spec"]["deletionPolicy"] = "Delete"
    api.call("POST", cr_path("woodpeckerclusters", ns), wpc)
    wait_condition(api, "woodpeckerclusters", ns, "wal-embedded", "Ready", "True")

    log = load("log-retention.yaml")
    log["metadata"]["namespace"] = ns
    log["spec"].update({"clusterRef": "wal-embedded", "retention": {}, "deletionPolicy": "Delete"})
    api.call("POST", cr_path("woodpeckerlogs", ns), log)
    wait_condition(api, "woodpeckerlogs", ns, "orders", "Ready", "True")

    cfg = {"etcd.endpoints": [etcd.endpoint], "etcd.rootPath": wpc["spec"]["etcd"]["rootPath"],
           "woodpecker.storage.type": "minio", "minio.address": minio.host, "minio.port": minio.port,
           "minio.accessKeyID": minio.access_key, "minio.secretAccessKey": minio.secret_key,
           "minio.bucketName": bucket, "minio.rootPath": "wal-embedded",
           "woodpecker.client.segmentRollingPolicy.maxBlocks": 1}
    ids = write_log(cfg, "orders", 10)
    wm = ids[4]
    api.call("PATCH", cr_path("woodpeckerlogs", ns, "orders"), {"spec": {"truncateTo": str(wm)}},
             "application/merge-patch+json")
    o = wait_for("reclaimed bytes reported", lambda: (lambda x: x if (x.get("status") or {}).get(
        "reclaimedBytes", 0) > 0 else None)(api.get(cr_path("woodpeckerlogs", ns, "orders"))), timeout=60)
    assert o["status"]["truncatedId"] == str(wm) and o["status"]["segmentsAwaitingGc"] == 0

    def reasons() -> set[str]:
        events = api.call("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        return {e["reason"] for e in events if e["involvedObject"]["name"] == "orders"}

    wait_for("Truncated and GarbageCollected events", lambda: {"Truncated", "GarbageCollected"} <= reasons())
    out = kubectl("get", "wplog", "-n", ns).stdout
    assert out.splitlines()[1].split()[:6] == ["orders", "wal-embedded", "orders", str(o["status"]["segments"]),
                                               str(ids[-1]), str(wm)], out

    # deleting the namespace's objects: log first (Delete), then the cluster (Delete) purges everything
    api.call("DELETE", cr_path("woodpeckerlogs", ns, "orders"))
    api.call("DELETE", cr_path("woodpeckerclusters", ns, "wal-embedded"))
    wait_for("log gone", lambda: api.get(cr_path("woodpeckerlogs", ns, "orders")) is None, timeout=60)
    wait_for("cluster gone", lambda: api.get(cr_path("woodpeckerclusters", ns, "wal-embedded")) is None, timeout=60)
    left = s3client(minio).list_objects_v2(Bucket=bucket, Prefix="wal-embedded/").get("KeyCount", 0)
    assert left == 0
    assert etcd_keys(etcd.endpoint, f"{wpc['spec']['etcd']['rootPath']}/woodpecker/") == {}
