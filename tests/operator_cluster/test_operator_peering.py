"""Two operator processes with peering (not --standalone), as two replicas of
the Deployment would run: both record themselves in the peering object,
exactly one is active (it reconciles; the other stays paused and reconciles
nothing), and after the active one is SIGKILLed the other takes over within
the peering lifetime.

The priorities are explicit and the higher one starts first.  Why not the
default random ones in any order: when a higher-priority peer joins *after* a
lower one has started watching, kopf pauses the lower one but closes its
watch streams lazily — it can still handle the next event on each open
stream (observed: one update ~1 s after "Pausing operations").  The
handlers are idempotent (server-side apply, etcd compare-and-swap), so that
window is harmless, but a test asserting "the standby reconciled nothing"
must not race it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from opcluster import ROOT, cr_path, dump, wait_for

pytestmark = pytest.mark.cluster

LIFETIME = 8  # --peering-lifetime: how long a dead peer still counts as alive


class OperatorProc:
    """One ``picchio operator run`` process serving only ``ns``, peering on
    the namespace's KopfPeering ``peering``."""

    def __init__(self, name: str, kubeconfig: Path, ns: str, peering: str, log_dir: Path, priority: int) -> None:
        from picchio_harness.procs import free_port

        self.name = name
        self.live, self.metrics = free_port(), free_port()
        self.log_path = log_dir / f"{name}.log"
        # POD_ID is kopf's peer identity (the Deployment sets it to the pod name)
        env = dict(os.environ, POD_ID=name,
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "e2e")]))
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "picchio_operator.main", "--kubeconfig", str(kubeconfig), "-n", ns,
                 "--peering", peering, "--priority", str(priority), "--peering-lifetime", str(LIFETIME),
                 "--liveness", f"http://127.0.0.1:{self.live}/healthz", "--metrics-host", "127.0.0.1",
                 "--metrics-port", str(self.metrics), "--tick-seconds", "2", "--resync-seconds", "300",
                 "--log-format", "full"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def reconciles(self) -> float:
        """WoodpeckerCluster passes this process has run (its /metrics)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=2) as r:
            text = r.read().decode()
        return sum(float(v) for v in re.findall(
            r'^picchio_operator_reconciles_total\{kind="WoodpeckerCluster",result="\w+"\} (\S+)$', text,
            re.MULTILINE))

    def live_ok(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.live}/healthz", timeout=2) as r:
            return r.status == 200

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(15)


def peers(api, ns: str, peering: str) -> dict[str, Any]:
    obj = api.get(f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/{peering}") or {}
    return dict(obj.get("status") or {})


def test_two_operators_one_active_and_takeover(k8s_cluster: Any, api, ns, etcd, minio, tmp_path) -> None:
    peering = "picchio-operator"
    api.call("POST", f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings",
             {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering, "namespace": ns}})
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "picchio-s3", "namespace": ns},
        "stringData": {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}})

    ops: list[OperatorProc] = []
    try:
        # the active one first, then the standby (see the module docstring)
        for name, priority in (("op-a", 200), ("op-b", 100)):
            op = OperatorProc(name, k8s_cluster.kubeconfig, ns, peering, tmp_path, priority)
            ops.append(op)
            wait_for(f"{op.name} liveness", op.live_ok, timeout=60)
            wait_for(f"{op.name} in the peering object", lambda op=op: op.name in peers(api, ns, peering), timeout=30)
        active, standby = ops
        recs = peers(api, ns, peering)
        assert {n: r["priority"] for n, r in recs.items()} == {"op-a": 200, "op-b": 100}, recs
        assert "Resuming operations" in active.log() and "Resuming operations" not in standby.log()

        # a new cluster is reconciled by the active one only
        name = "wal"
        api.call("POST", cr_path("woodpeckerclusters", ns), {
            "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"mode": "embedded", "etcd": {"endpoints": [etcd.endpoint], "rootPath": f"{ns}-{name}"},
                     "storage": {"endpoint": minio.endpoint, "bucket": f"op-{uuid.uuid4().hex[:10]}",
                                 "rootPath": name, "credentialsSecret": "picchio-s3", "createBucket": True}}})

        def ready(gen: int | None = None) -> dict | None:
            o = api.get(cr_path("woodpeckerclusters", ns, name)) or {}
            st = o.get("status") or {}
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
            return o if ok and (gen is None or st.get("observedGeneration") == gen) else None

        wait_for("cluster Ready", ready, timeout=60)
        assert active.reconciles() >= 1
        assert standby.reconciles() == 0, standby.log()[-2000:]
        assert "Pausing operations" not in active.log()

        # the active one dies without a goodbye; the standby takes over
        active.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        gen = api.call("PATCH", cr_path("woodpeckerclusters", ns, name),
                       {"spec": {"config": {"woodpecker": {"client": {"segmentRollingPolicy": {"maxSize": "64M"}}}}}},
                       "application/merge-patch+json")["metadata"]["generation"]
        try:
            wait_for("the standby to reconcile the change", lambda: ready(gen), timeout=LIFETIME + 45)
        except AssertionError:
            raise AssertionError(f"no takeover: {dump(api.get(cr_path('woodpeckerclusters', ns, name)))}\n"
                                 f"{standby.log()[-3000:]}") from None
        took = time.monotonic() - killed_at
        assert standby.reconciles() >= 1
        assert "Resuming operations" in standby.log()  # it was paused until now
        cm = api.get(f"/api/v1/namespaces/{ns}/configmaps/{name}-config")
        assert "maxSize: 64M" in cm["data"]["woodpecker.yaml"]
        print(f"takeover after SIGKILL: {took:.1f}s (peering lifetime {LIFETIME}s)")
        # the survivor also finishes deletions (else the namespace would hang on the finalizer)
        api.call("DELETE", cr_path("woodpeckerclusters", ns, name))
        wait_for("cluster deleted by the survivor", lambda: api.get(cr_path("woodpeckerclusters", ns, name)) is None,
                 timeout=60)
    finally:
        for op in ops:
            op.kill(signal.SIGKILL)
