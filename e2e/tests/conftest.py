"""The e2e suite's session: against the cluster ``KUBECONFIG`` names, install
the CRDs (+ kopf's peering CRDs), the operator (``manifests/`` through
kustomize, image = the project image), an etcd and a MinIO in
``picchio-system``, and wait until all of them are Ready.  On any failure the
report carries ``kubectl get/describe``, events and pod logs.

  KUBECONFIG=~/.cache/picchio/kind/kubeconfig python -m pytest e2e/tests
  (images: PICCHIO_IMAGE, ETCD_IMAGE, MINIO_IMAGE, E2E_PULL_POLICY; E2E_KEEP=1 leaves everything installed)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kube import (ETCD_IMAGE, MINIO_IMAGE, PROJECT_IMAGE, PULL_POLICY, ROOT, SYSTEM_NS, TEST_NS, apply, dump,
                  kubectl, wait_rollout)

MINIO_USER, MINIO_PASSWORD = "picchio-e2e", "picchio-e2e-secret"


def pytest_collection_modifyitems(config, items):
    # no cluster is a usage error, never a silent skip counted as a pass
    if items and not os.environ.get("KUBECONFIG"):
        raise pytest.UsageError("e2e: set KUBECONFIG to the cluster to test (make e2e-kind does it)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        try:
            text = dump()
        except Exception as e:  # noqa: BLE001
            text = f"(dump failed: {e})"
        rep.sections.append(("kubectl diagnostics", text))
        d = os.environ.get("E2E_DUMP_DIR")
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
            (Path(d) / f"{item.name}.txt").write_text(text)


def operator_manifests() -> list[dict]:
    """manifests/ through kustomize, the operator image set to the project image."""
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests")).stdout) if d]
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                c["image"] = PROJECT_IMAGE
                c["imagePullPolicy"] = PULL_POLICY
    return docs


def _svc(name: str, ports: dict[str, int]) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": SYSTEM_NS},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports.items()]}}


def _deploy(name: str, container: dict, volumes: list[dict]) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": SYSTEM_NS},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container], "volumes": volumes}}}}


def dependencies() -> list[dict]:
    """An etcd and a MinIO (single replicas, emptyDir) with Services
    ``etcd.picchio-system.svc:2379`` and ``minio.picchio-system.svc:9000`` —
    the endpoints ``manifests/samples/cluster-service.yaml`` names."""
    etcd = _deploy("etcd", {
        "name": "etcd", "image": ETCD_IMAGE, "imagePullPolicy": PULL_POLICY,
        "command": ["etcd", "--name=etcd", "--data-dir=/var/lib/etcd/data",
                    "--listen-client-urls=http://0.0.0.0:2379",
                    f"--advertise-client-urls=http://etcd.{SYSTEM_NS}.svc:2379",
                    "--listen-peer-urls=http://127.0.0.1:2380",
                    "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                    "--initial-cluster=etcd=http://127.0.0.1:2380",
                    "--quota-backend-bytes=1073741824"],
        "ports": [{"name": "client", "containerPort": 2379}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 2379}, "periodSeconds": 2},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}],
    }, [{"name": "data", "emptyDir": {}}])
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio-credentials", "namespace": SYSTEM_NS},
              "type": "Opaque", "stringData": {"rootUser": MINIO_USER, "rootPassword": MINIO_PASSWORD}}
    minio = _deploy("minio", {
        "name": "minio", "image": MINIO_IMAGE, "imagePullPolicy": PULL_POLICY,
        "command": ["minio", "server", "/data", "--address=:9000", "--console-address=:9001",
                    "--certs-dir=/tmp/certs"],
        "env": [{"name": "MINIO_ROOT_USER", "valueFrom": {"secretKeyRef": {"name": "minio-credentials", "key": "rootUser"}}},
                {"name": "MINIO_ROOT_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "minio-credentials", "key": "rootPassword"}}},
                {"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": "s3", "containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 2},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
    }, [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}])
    return [etcd, _svc("etcd", {"client": 2379}), secret, minio, _svc("minio", {"s3": 9000})]


def s3_secret() -> dict:
    """The S3 credentials the WoodpeckerClusters reference (same shape as
    manifests/samples/s3-credentials.yaml), in the test namespace."""
    s = yaml.safe_load((ROOT / "manifests/samples/s3-credentials.yaml").read_text())
    s["metadata"]["namespace"] = TEST_NS
    s["stringData"] = {"accessKeyID": MINIO_USER, "secretAccessKey": MINIO_PASSWORD}
    return s


def scripts_configmap() -> dict:
    jobs = Path(__file__).resolve().parent / "jobs"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e2e-scripts", "namespace": TEST_NS},
            "data": {p.name: p.read_text() for p in sorted(jobs.glob("*.py"))}}


@pytest.fixture(scope="session")
def installed():
    """CRDs, operator, etcd, MinIO, the test namespace; Ready before any test."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for f in sorted((ROOT / "crds").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") == "CustomResourceDefinition":
                kubectl("wait", "--for=condition=Established", f"crd/{d['metadata']['name']}", "--timeout=60s",
                        timeout=70)
    apply(operator_manifests())
    apply(dependencies())
    kubectl("create", "namespace", TEST_NS, check=False)
    apply([s3_secret(), scripts_configmap()])
    for name in ("etcd", "minio", "picchio-operator"):
        wait_rollout("deployment", name, SYSTEM_NS, timeout=180)
    yield
    if os.environ.get("E2E_KEEP") == "1":
        return
    # Everything the suite made: namespaces first (their finalizers need the operator).
    kubectl("delete", "namespace", TEST_NS, "--ignore-not-found", "--timeout=180s", check=False, timeout=200)
    kubectl("delete", "--ignore-not-found", "--timeout=120s", "-f", "-", input=yaml.safe_dump_all(
        operator_manifests() + dependencies()), check=False, timeout=150)
    kubectl("delete", "--ignore-not-found", "-f", str(ROOT / "crds"), "--timeout=60s", check=False, timeout=90)
