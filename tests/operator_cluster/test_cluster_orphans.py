"""The orphan scan on the real control plane, etcd and MinIO (issue 11.2):
an object no log knows is reported in status.orphans and an OrphansFound
event, kept in report mode, deleted once the mode is delete — and the log's
own objects are never touched."""
from __future__ import annotations

import uuid

import pytest
from opcluster import (bucket_keys, cr_path, events, merge_patch, read_entries, s3client, secret_body, wait_condition,
                       wait_for, wpc_body, write_entries, writer_config)

pytestmark = pytest.mark.cluster

WPC = "woodpeckerclusters"


def orphans_status(api, ns: str) -> dict:
    return ((api.get(cr_path(WPC, ns, "wal")) or {}).get("status") or {}).get("orphans") or {}


def test_orphans_reported_then_deleted(api, ns, operator, etcd, minio, kubectl) -> None:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    s3 = s3client(minio)
    s3.create_bucket(Bucket=bucket)
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    body = wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket,
                    gc={"orphanScanIntervalSeconds": 10, "orphanGraceSeconds": 0, "orphans": "report"})
    api.call("POST", cr_path(WPC, ns), body)
    wait_condition(api, WPC, ns, "wal", "Ready", "True")
    cfg = writer_config(body, etcd.endpoint, minio)
    write_entries(cfg, "kept", 5)
    ours = set(bucket_keys(minio, bucket, "wal/"))
    assert ours
    orphan = "wal/987654/0/0.blk"  # a log id etcd never had: an interrupted delete, a crash before metadata
    s3.put_object(Bucket=bucket, Key=orphan, Body=b"o" * 42)

    st = wait_for("orphan reported", lambda: (s := orphans_status(api, ns)).get("objects") and s, timeout=90)
    assert st["objects"] == 1 and st["bytes"] == 42 and st["examples"] == [orphan]
    assert st["deleted"] == 0 and st["mode"] == "report" and st["missingSegments"] == 0
    assert orphan in bucket_keys(minio, bucket, "wal/"), "report mode deletes nothing"
    wait_for("OrphansFound event", lambda: "OrphansFound" in [r for _, r, _ in events(api, ns, "wal")], timeout=30)
    header, row = kubectl("get", "wpc", "wal", "-n", ns).stdout.splitlines()[:2]
    at = header.index("ORPHANS")  # by position: the empty SCALEDOWN/TOFLUSH cells print as blanks
    assert row[at:].split()[0] == "1", f"kubectl get wpc shows the orphan count:\n{header}\n{row}"

    merge_patch(api, cr_path(WPC, ns, "wal"), {"spec": {"gc": {"orphans": "delete"}}})
    st = wait_for("orphan deleted", lambda: (s := orphans_status(api, ns)).get("deleted") and s, timeout=90)
    assert st["deleted"] == 1 and st["mode"] == "delete"
    left = set(bucket_keys(minio, bucket, "wal/"))
    assert orphan not in left and ours <= left, "only the orphan went"
    assert read_entries(cfg, "kept") == [b"e-%03d" % i for i in range(5)]
