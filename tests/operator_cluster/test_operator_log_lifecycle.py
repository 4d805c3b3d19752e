"""WoodpeckerLog handlers on the real control plane, real etcd and MinIO: a
log written through logstore is truncated (truncateTo, retention.bytes) and
garbage-collected by the operator, everything above the watermark stays
readable, a dry run deletes nothing, and a log whose cluster does not exist
says so until the cluster appears.  Events are the real Event objects the
operator posted."""
from __future__ import annotations

import uuid

import pytest
from opcluster import (bucket_keys, condition, cr_path, events, merge_patch, read_entries, s3client, secret_body,
                       wait_condition, wait_for, wpc_body, wplog_body, write_entries, writer_config)

import logstore

pytestmark = pytest.mark.cluster

WPC = "woodpeckerclusters"
WPLOG = "woodpeckerlogs"


@pytest.fixture
def cluster(api, ns, quiet_operator, etcd, minio) -> dict:
    """An embedded cluster (deletionPolicy Delete), Ready."""
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    s3client(minio).create_bucket(Bucket=bucket)
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    body = wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket)
    api.call("POST", cr_path(WPC, ns), body)
    wait_condition(api, WPC, ns, "wal", "Ready", "True")
    return body


def log_status(api, ns: str, name: str) -> dict:
    return (api.get(cr_path(WPLOG, ns, name)) or {}).get("status") or {}


def reasons(api, ns: str, name: str) -> list[str]:
    return [r for _, r, _ in events(api, ns, name)]


def test_log_created_truncated_retained_and_collected(api, ns, cluster, etcd, minio) -> None:
    bucket, root = cluster["spec"]["storage"]["bucket"], "wal/"
    api.call("POST", cr_path(WPLOG, ns), wplog_body(ns, "orders", "wal", gc={"intervalSeconds": 3600}))
    o = wait_condition(api, WPLOG, ns, "orders", "Ready", "True")
    assert o["status"]["logId"] >= 1
    wait_for("LogCreated event", lambda: "LogCreated" in reasons(api, ns, "orders"), timeout=30)

    # a writer fills one-block segments: 12 entries, 12 segments
    cfg = writer_config(cluster, etcd.endpoint, minio, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    ids = write_entries(cfg, "orders", 12)
    segs_before = {i.segment_id for i in ids}
    assert len(segs_before) >= 3
    keys_before = bucket_keys(minio, bucket, root)

    merge_patch(api, cr_path(WPLOG, ns, "orders"), {"spec": {"truncateTo": str(ids[5])}})

    def collected() -> dict | None:
        st = log_status(api, ns, "orders")
        return st if st.get("truncatedId") == str(ids[5]) and st.get("reclaimedBytes", 0) > 0 else None
    st = wait_for("truncated and collected", collected, timeout=60)
    assert st["reclaimedObjects"] > 0
    assert condition({"status": st}, "GarbageCollected")["reason"] == "Collected"
    wait_for("Truncated and GarbageCollected events",
             lambda: {"Truncated", "GarbageCollected"} <= set(reasons(api, ns, "orders")), timeout=30)
    keys_after = bucket_keys(minio, bucket, root)
    assert len(keys_after) < len(keys_before)
    log_id = st["logId"]
    gone = {s for s in segs_before if s < ids[5].segment_id}
    assert gone
    for s in gone:  # the segments wholly below the watermark have no object left
        assert not any(f"/{log_id}/{s}/" in key for key in keys_after), (s, keys_after)
    # everything above the watermark still reads back
    assert read_entries(cfg, "orders", logstore.MessageId(ids[6].segment_id, ids[6].entry_id)) == \
        [b"e-%03d" % i for i in range(6, 12)]

    # retention.bytes: keep at most about one segment
    merge_patch(api, cr_path(WPLOG, ns, "orders"), {"spec": {"retention": {"bytes": 1}}})

    def retained() -> dict | None:
        st2 = log_status(api, ns, "orders")
        wm = st2.get("truncatedId")
        return st2 if wm and logstore.MessageId.parse(wm) > ids[5] and st2.get("segmentsAwaitingGc") == 0 else None
    st2 = wait_for("retention applied and collected", retained, timeout=60)
    assert st2["reclaimedBytes"] > st["reclaimedBytes"]
    assert len(bucket_keys(minio, bucket, root)) < len(keys_after)


def test_dry_run_reports_without_deleting(api, ns, cluster, etcd, minio) -> None:
    bucket = cluster["spec"]["storage"]["bucket"]
    cfg = writer_config(cluster, etcd.endpoint, minio, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    ids = write_entries(cfg, "dry", 4)  # the log exists before its WoodpeckerLog: adopted, not created
    keys = bucket_keys(minio, bucket, "wal/")
    api.call("POST", cr_path(WPLOG, ns), wplog_body(ns, "dry", "wal", truncateTo=str(ids[1]), gc={"dryRun": True}))

    def reported() -> dict | None:
        st = log_status(api, ns, "dry")
        return st if condition({"status": st}, "GarbageCollected").get("reason") == "DryRun" else None
    st = wait_for("dry-run GC reported", reported, timeout=60)
    assert st["truncatedId"] == str(ids[1]) and st.get("reclaimedBytes", 0) == 0
    assert st["segmentsAwaitingGc"] >= 1
    assert bucket_keys(minio, bucket, "wal/") == keys  # nothing deleted
    # events leave in the order they were posted: once GcDryRun is there, a LogCreated would be too
    wait_for("GcDryRun event", lambda: "GcDryRun" in reasons(api, ns, "dry"), timeout=30)
    assert "LogCreated" not in reasons(api, ns, "dry")
    above = logstore.MessageId(ids[2].segment_id, ids[2].entry_id)
    assert read_entries(cfg, "dry", above) == [b"e-002", b"e-003"]  # above the watermark: readable


def test_log_without_cluster_says_so_until_the_cluster_exists(api, ns, quiet_operator, etcd, minio) -> None:
    api.call("POST", cr_path(WPLOG, ns), wplog_body(ns, "lonely", "nowhere"))
    o = wait_condition(api, WPLOG, ns, "lonely", "Ready", "False", reason="ClusterNotFound")
    assert "nowhere" in condition(o, "Ready")["message"]
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    api.call("POST", cr_path(WPC, ns), wpc_body(ns, "nowhere", etcd.endpoint, minio.endpoint, bucket))
    wait_condition(api, WPC, ns, "nowhere", "Ready", "True")
    o = wait_condition(api, WPLOG, ns, "lonely", "Ready", "True", timeout=120)  # a kopf retry picks it up
    assert o["status"]["logId"] >= 1
