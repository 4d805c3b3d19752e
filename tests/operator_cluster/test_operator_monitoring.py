"""Monitoring and the Milvus client configuration on the real control plane, etcd and MinIO,
with the operator as a process (its /metrics as Prometheus scrapes it):

* after a service-mode cluster (kwok-Ready LogStores) and a log reconcile, the gauges the
  dashboard and the alerts use are there with the observed values, and the whole exposition
  passes ``promtool check metrics``; deleting the log drops its series;
* the applied client ConfigMap carries ``milvus.yaml`` whose seed is the status' seed (the client
  Service, which exists) and whose ``minio.rootPath`` + ``/wp`` is the cluster's bucket prefix."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from typing import Any

import pytest
import yaml
from opcluster import ROOT, cr_path, s3client, secret_body, wait_condition, wait_for, wpc_body, wplog_body

pytestmark = pytest.mark.cluster


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def value(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_operator_gauges_and_the_milvus_config(k8s_cluster: Any, crds, api, ns, etcd, minio, tmp_path) -> None:
    from picchio_harness.procs import free_port

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make deps` installs Debian's prometheus package"
    bucket = f"mon-{uuid.uuid4().hex[:10]}"
    s3client(minio).create_bucket(Bucket=bucket)
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    metrics = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "picchio_operator.main", "--kubeconfig", str(k8s_cluster.kubeconfig), "--standalone",
         "--namespace", ns, "--liveness", "", "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics),
         "--tick-seconds", "2"],
        stdout=open(tmp_path / "operator.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        body = wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket, mode="service", root="files/wp",
                        replicas=3, quorum={"ensembleSize": 3, "writeQuorum": 3, "ackQuorum": 2})
        api.call("POST", cr_path("woodpeckerclusters", ns), body)
        ready = wait_condition(api, "woodpeckerclusters", ns, "wal", "Ready", "True", timeout=120)
        api.call("POST", cr_path("woodpeckerlogs", ns), wplog_body(ns, "orders", "wal"))
        wait_condition(api, "woodpeckerlogs", ns, "orders", "Ready", "True", timeout=60)

        cl = {"namespace": ns, "cluster": "wal"}
        text = wait_for("the cluster's and the log's gauges", lambda: (
            t if value(t := scrape(metrics), "picchio_operator_cluster_logstores_ready", **cl) == 3
            and value(t, "picchio_operator_log_segments", **cl, log="orders") is not None else None), timeout=60)
        assert value(text, "picchio_operator_cluster_logstores_desired", **cl) == 3
        assert value(text, "picchio_operator_cluster_ack_quorum", **cl) == 2
        assert value(text, "picchio_operator_log_gc_backlog_segments", **cl, log="orders") == 0
        assert value(text, "picchio_operator_log_truncation_lag_seconds", **cl, log="orders") == 0
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        # item 5: the applied ConfigMap, read back from the API server
        cm = api.get(f"/api/v1/namespaces/{ns}/configmaps/wal-client")
        milvus = yaml.safe_load(cm["data"]["milvus.yaml"])
        assert milvus["mq"] == {"type": "woodpecker"} and milvus["woodpecker"]["storage"]["type"] == "service"
        (pool,) = json.loads(milvus["woodpecker"]["client"]["quorum"]["quorumBufferPools"])
        assert pool["seeds"] == ready["status"]["seeds"] == [f"wal-server-client.{ns}.svc:18080"]
        assert api.get(f"/api/v1/namespaces/{ns}/services/wal-server-client")["spec"]["ports"][0]["port"] == 18080
        assert f"{milvus['minio']['rootPath']}/wp" == body["spec"]["storage"]["rootPath"]
        assert milvus["etcd"] == {"endpoints": etcd.endpoint, "rootPath": f"{ns}-wal"}
        assert "accessKeyID" not in milvus["minio"] and "secretAccessKey" not in milvus["minio"]

        api.call("DELETE", cr_path("woodpeckerlogs", ns, "orders"))
        wait_for("the deleted log's series gone",
                 lambda: value(scrape(metrics), "picchio_operator_log_segments", **cl, log="orders") is None, timeout=60)
        assert value(scrape(metrics), "picchio_operator_cluster_logstores_ready", **cl) == 3
        api.call("DELETE", cr_path("woodpeckerclusters", ns, "wal"))  # while the operator runs: its finalizer
        wait_for("the cluster deleted", lambda: api.get(cr_path("woodpeckerclusters", ns, "wal")) is None, timeout=90)
        assert value(scrape(metrics), "picchio_operator_cluster_logstores_ready", **cl) is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
