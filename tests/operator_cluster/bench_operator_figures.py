"""The operator's figures, printed as one JSON line (``OPERATOR FIGURES {...}``):
apply → children latency, 200 WoodpeckerLogs reconciled and garbage-collected
(wall time, objects/s next to MinIO's raw batch-delete rate in the same run),
operator RSS.

A benchmark, not a test of ``make test``: the file name does not match
``test_*.py``, so ``pytest tests`` never collects it; ``make bench-operator``
runs it by path (pytest collects a file named on its command line).  It still
checks that the figures are real: every log collected, and the objects the
operator reports as reclaimed are exactly the objects gone from MinIO."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import boto3
import pytest

from opcluster import ROOT, cr_path, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
N_LOGS = 200
N_CLUSTERS = 10


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_operator_figures(k8s_cluster: Any, api, ns, etcd, minio, tmp_path) -> None:
    s3 = boto3.client("s3", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                      aws_secret_access_key=minio.secret_key, region_name="us-east-1")
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": ns},
        "stringData": {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}})
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "picchio_operator.main", "--kubeconfig", str(k8s_cluster.kubeconfig), "--standalone",
         "--metrics-port", "0", "--liveness", "", "--tick-seconds", "2", "--resync-seconds", "300"],
        stdout=open(tmp_path / "operator.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    figures: dict[str, Any] = {}

    def listing(prefix: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]
    try:
        def wpc(name: str, mode: str) -> dict:
            spec: dict[str, Any] = {"mode": mode, "etcd": {"endpoints": [etcd.endpoint], "rootPath": f"{ns}-{name}"},
                                    "storage": {"endpoint": minio.endpoint, "bucket": bucket, "rootPath": name,
                                                "credentialsSecret": "s3"}}
            if mode == "service":
                spec.update(replicas=1, quorum={"ensembleSize": 1, "writeQuorum": 1, "ackQuorum": 1})
            return {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
                    "metadata": {"name": name, "namespace": ns}, "spec": spec}

        # 1. apply → children created (service mode: the StatefulSet is the last child applied but the PDB)
        latencies = []
        for i in range(N_CLUSTERS):
            name = f"svc{i}"
            t0 = time.monotonic()
            api.call("POST", cr_path("woodpeckerclusters", ns), wpc(name, "service"))
            wait_for(f"{name} children", lambda name=name: api.get(
                f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}-server"), timeout=60, interval=0.02)
            latencies.append(time.monotonic() - t0)
        figures["apply_to_children_p50_s"] = round(statistics.median(latencies), 3)
        figures["apply_to_children_max_s"] = round(max(latencies), 3)

        # 2. 200 logs, each 4 one-entry segments, written through logstore
        api.call("POST", cr_path("woodpeckerclusters", ns), wpc("emb", "embedded"))
        wait_for("emb Ready", lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in (
            api.get(cr_path("woodpeckerclusters", ns, "emb")).get("status") or {}).get("conditions", [])), 60)
        cfg = {"etcd.endpoints": [etcd.endpoint], "etcd.rootPath": f"{ns}-emb", "woodpecker.storage.type": "minio",
               "minio.address": minio.host, "minio.port": minio.port, "minio.accessKeyID": minio.access_key,
               "minio.secretAccessKey": minio.secret_key, "minio.bucketName": bucket, "minio.rootPath": "emb",
               "woodpecker.client.segmentRollingPolicy.maxBlocks": 1}

        async def write_all() -> dict[str, list]:
            import logstore

            sem = asyncio.Semaphore(16)
            async with logstore.Client(cfg) as c:
                async def one(name: str) -> tuple[str, list]:
                    async with sem:
                        h = await c.create_log(name)
                        async with await h.open_writer() as w:
                            return name, [await w.append(b"x" * 1000) for _ in range(4)]
                return dict(await asyncio.gather(*(one(f"log-{i:03d}") for i in range(N_LOGS))))

        t0 = time.monotonic()
        ids = asyncio.run(write_all())
        figures["write_200_logs_s"] = round(time.monotonic() - t0, 2)

        keys_before = set(listing("emb/"))
        t0 = time.monotonic()
        for name, mids in ids.items():
            api.call("POST", cr_path("woodpeckerlogs", ns), {
                "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog", "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterRef": "emb", "truncateTo": str(mids[2])}})

        def all_collected() -> int | None:
            items = api.call("GET", cr_path("woodpeckerlogs", ns))["items"]
            done = [o for o in items if (o.get("status") or {}).get("reclaimedObjects", 0) > 0
                    and o["status"].get("segmentsAwaitingGc") == 0]
            return sum(o["status"]["reclaimedObjects"] for o in done) if len(done) == N_LOGS else None

        objects = wait_for(f"{N_LOGS} logs reconciled and collected", all_collected, timeout=600, interval=1)
        wall = time.monotonic() - t0
        figures["logs_reconciled_and_gc_wall_s"] = round(wall, 2)
        figures["gc_objects"] = objects
        figures["gc_end_to_end_objects_per_s"] = round(objects / wall, 1)
        figures["operator_rss_mib"] = round(rss_mib(proc.pid), 1)
        deleted = keys_before - set(listing("emb/"))
        assert objects == len(deleted), f"reported {objects} objects reclaimed, {len(deleted)} gone from MinIO"

        # raw limit in the same run: MinIO batch delete of as many objects
        keys = [f"raw/{i}" for i in range(objects)]
        for k in keys:
            s3.put_object(Bucket=bucket, Key=k, Body=b"x" * 1000)
        t0 = time.monotonic()
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        figures["raw_minio_batch_delete_objects_per_s"] = round(len(keys) / (time.monotonic() - t0), 1)
    finally:
        # delete while the operator still runs, so finalizers are honoured
        api.status_code("DELETE", f"/api/v1/namespaces/{ns}")
        try:
            wait_for("namespace deleted", lambda: api.get(f"/api/v1/namespaces/{ns}") is None, timeout=300, interval=1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    print("\nOPERATOR FIGURES " + json.dumps(figures, sort_keys=True), flush=True)
    if os.environ.get("PICCHIO_BENCH_JSON"):  # make bench-operator prints this file
        with open(os.environ["PICCHIO_BENCH_JSON"], "w") as f:
            json.dump(figures, f, sort_keys=True)
