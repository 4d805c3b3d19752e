"""Killing the operator (SIGKILL, a real process) in the middle of
reconciling, then starting it again: no duplicate logs, one finalizer per
object, the keyspace initialised once, everything Ready, and deletion is not
wedged.

"In the middle" is made certain, not hoped for: the clusters' storage sits
behind a relay that holds every connection (a hung S3), so each reconcile
blocks inside its storage check — after it protected the Secret and started
on etcd, before it applied any child or wrote any status.  The test kills the
operator while the relay holds its connections and checks exactly that state
(started, not finished) before restarting it with storage answering again."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from opcluster import ROOT, TcpProxy, cr_path, dump, etcd_keys, wait_for

pytestmark = pytest.mark.cluster


def start_operator(kubeconfig: str, log_path: str, ns: str) -> subprocess.Popen:
    """``picchio operator run`` serving only the test's namespace (so the
    leftovers of earlier tests in other namespaces do not queue before it)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator")]))
    return subprocess.Popen(
        [sys.executable, "-m", "picchio_operator.main", "--kubeconfig", kubeconfig, "--standalone", "-n", ns,
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
    secret_path = f"/api/v1/namespaces/{ns}/secrets/picchio-s3"
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    proxy = TcpProxy(minio.host, minio.port)
    proxy.set_mode("hold")  # a hung S3: connections accepted, never answered
    clusters = [f"c{i}" for i in range(3)]
    logs = [(f"log-{i}", clusters[i % 3]) for i in range(9)]
    for name in clusters:
        api.call("POST", cr_path("woodpeckerclusters", ns), {
            "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster", "metadata": {"name": name, "namespace": ns},
            "spec": {"mode": "embedded", "etcd": {"endpoints": [etcd.endpoint], "rootPath": f"{ns}-{name}"},
                     "storage": {"endpoint": proxy.endpoint, "bucket": bucket, "rootPath": name,
                                 "credentialsSecret": "picchio-s3", "createBucket": True},
                     "deletionPolicy": "Delete"}})
    for name, cl in logs:
        api.call("POST", cr_path("woodpeckerlogs", ns), {
            "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterRef": cl, "deletionPolicy": "Delete"}})

    def instance_ids() -> dict[str, bytes]:
        return {c: etcd_keys(etcd.endpoint, f"{ns}-{c}/woodpecker/").get(f"{ns}-{c}/woodpecker/instance", b"")
                for c in clusters}

    t0 = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - t0, 1)
        print(f"restart test: {name} at {phases[name]}s", flush=True)

    log_file = str(tmp_path / "operator.log")
    first = start_operator(str(k8s_cluster.kubeconfig), log_file, ns)
    try:
        # inside a reconcile: the Secret is protected (the pass's first step) and the storage
        # check of every cluster is blocked on the relay
        wait_for("every cluster's reconcile blocked in its storage check", lambda: proxy.accepted["hold"] >= 3
                 and "picchio.dev/in-use" in (api.get(secret_path)["metadata"].get("finalizers") or []), timeout=60)
        wait_for("the etcd keyspaces initialised (the concurrent etcd check)", lambda: all(instance_ids().values()),
                 timeout=30)
    finally:
        kill(first)
        phase("first operator killed")
    assert first.returncode == -signal.SIGKILL  # it was still running: our kill ended it, not a crash of its own
    # the state the SIGKILL left: started but not finished — no child applied, no status written
    for name in clusters:
        o = api.get(cr_path("woodpeckerclusters", ns, name))
        assert not (o.get("status") or {}).get("conditions"), dump(o)
        assert api.get(f"/api/v1/namespaces/{ns}/configmaps/{name}-config") is None, name
        assert api.get(f"/api/v1/namespaces/{ns}/configmaps/{name}-client") is None, name
    instances = instance_ids()
    assert all(instances.values()), instances

    proxy.set_mode("forward")  # storage answers again
    second = start_operator(str(k8s_cluster.kubeconfig), log_file, ns)
    try:
        for name in clusters:
            wait_for(f"{name} Ready", lambda name=name: _ready(api.get(cr_path("woodpeckerclusters", ns, name))), 180)
        phase("clusters Ready")
        for name, _ in logs:
            wait_for(f"{name} Ready", lambda name=name: _ready(api.get(cr_path("woodpeckerlogs", ns, name))), 180)
        phase("logs Ready")
        for plural, names in (("woodpeckerclusters", clusters), ("woodpeckerlogs", [n for n, _ in logs])):
            for name in names:
                o = api.get(cr_path(plural, ns, name))
                assert o["metadata"]["finalizers"] == ["picchio.dev/finalizer"], dump(o["metadata"])
        assert api.get(secret_path)["metadata"]["finalizers"] == ["picchio.dev/in-use"]
        # the keyspaces the killed pass initialised were kept, not initialised again
        assert instance_ids() == instances
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
        wait_for("namespace gone", lambda: api.get(f"/api/v1/namespaces/{ns}") is None, timeout=180)
        phase("namespace gone")
        # and the restarted operator still stops cleanly
        os.killpg(second.pid, signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        kill(second)
        proxy.close()


def _ready(o: dict | None) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in ((o or {}).get("status") or {}).get("conditions", []))
