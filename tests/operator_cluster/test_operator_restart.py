"""Killing the operator (SIGKILL, a real process) in the middle of
reconciling, then starting it again: no duplicate logs, one finalizer per
object, everything Ready, and deletion is not wedged."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest
from opcluster import ROOT, cr_path, dump, wait_for

pytestmark = pytest.mark.cluster


def start_operator(kubeconfig: str, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator")]))
    return subprocess.Popen(
        [sys.executable, "-m", "picchio_operator.main", "--kubeconfig", kubeconfig, "--standalone",
         "--metrics-port", "0", "--liveness", "", "--tick-seconds", "2", "--resync-seconds", "30"],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_kill_mid_reconcile_then_restart(k8s_cluster: Any, api, ns, etcd, minio, tmp_path) -> None:
    s = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "picchio-s3", "namespace": ns},
         "stringData": {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}}
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets", s)
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    clusters = [f"c{i}" for i in range(3)]
    logs = [(f"log-{i}", clusters[i % 3]) for i in range(9)]
    for name in clusters:
        api.call("POST", cr_path("woodpeckerclusters", ns), {
            "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster", "metadata": {"name": name, "namespace": ns},
            "spec": {"mode": "embedded", "etcd": {"endpoints": [etcd.endpoint], "rootPath": f"{ns}-{name}"},
                     "storage": {"endpoint": minio.endpoint, "bucket": bucket, "rootPath": name,
                                 "credentialsSecret": "picchio-s3", "createBucket": True},
                     "deletionPolicy": "Delete"}})
    for name, cl in logs:
        api.call("POST", cr_path("woodpeckerlogs", ns), {
            "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterRef": cl, "deletionPolicy": "Delete"}})

    log_file = str(tmp_path / "operator.log")
    first = start_operator(str(k8s_cluster.kubeconfig), log_file)
    try:
        # kill as soon as the operator has started working (a finalizer appeared)
        wait_for("the first operator to start reconciling", lambda: any(
            (api.get(cr_path("woodpeckerclusters", ns, c)) or {}).get("metadata", {}).get("finalizers")
            for c in clusters), timeout=60)
    finally:
        kill(first)

    second = start_operator(str(k8s_cluster.kubeconfig), log_file)
    try:
        for name in clusters:
            wait_for(f"{name} Ready", lambda name=name: _ready(api.get(cr_path("woodpeckerclusters", ns, name))), 90)
        for name, _ in logs:
            wait_for(f"{name} Ready", lambda name=name: _ready(api.get(cr_path("woodpeckerlogs", ns, name))), 90)
        for plural, names in (("woodpeckerclusters", clusters), ("woodpeckerlogs", [n for n, _ in logs])):
            for name in names:
                o = api.get(cr_path(plural, ns, name))
                assert o["metadata"]["finalizers"] == ["picchio.dev/finalizer"], dump(o["metadata"])
        # exactly the declared logs exist in each cluster, each created once (ids 1..n, no gaps from retries)
        import logstore

        async def names_and_ids(cl: str) -> list[tuple[str, int]]:
            cfg = {"etcd.endpoints": [etcd.endpoint], "etcd.rootPath": f"{ns}-{cl}",
                   "woodpecker.storage.type": "minio", "minio.address": minio.host, "minio.port": minio.port,
                   "minio.accessKeyID": minio.access_key, "minio.secretAccessKey": minio.secret_key,
                   "minio.bucketName": bucket, "minio.rootPath": cl}
            async with logstore.Client(cfg) as c:
                return sorted([(n, (await c.open_log(n)).log_id) for n in await c.list_logs()])

        for cl in clusters:
            got = asyncio.run(names_and_ids(cl))
            want = sorted(n for n, c in logs if c == cl)
            assert [n for n, _ in got] == want
            assert sorted(i for _, i in got) == list(range(1, len(want) + 1))

        # deletion is not wedged: everything goes (logs before their clusters)
        api.call("DELETE", f"/api/v1/namespaces/{ns}")
        wait_for("namespace gone", lambda: api.get(f"/api/v1/namespaces/{ns}") is None, timeout=120)
    finally:
        kill(second)
    assert second.returncode == -signal.SIGKILL


def _ready(o: dict | None) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in ((o or {}).get("status") or {}).get("conditions", []))
