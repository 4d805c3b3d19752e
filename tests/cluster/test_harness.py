"""Self-test of the local real-component harness: the control plane does what
the operator relies on (namespace finalization, StatefulSets with bound PVCs
on kwok nodes, ownerReference garbage collection, CRDs with a status
subresource, kubectl), and MinIO enforces what the WAL relies on
(If-None-Match: * and past-dated expiration rules).

Every wait is a poll with a deadline; nothing sleeps as a condition."""
from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from picchio_harness.procs import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 10  # seconds for each API call



def _gone(read: Callable[[], Any]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


@pytest.fixture
def core(k8s_cluster: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(k8s_cluster.api)


@pytest.fixture
def namespace(core: Any) -> Iterator[str]:
    name = f"h3-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}}, _request_timeout=TIMEOUT)
    yield name
    core.delete_namespace(name, _request_timeout=TIMEOUT)


# --- Kubernetes -------------------------------------------------------------

def test_kubectl_get_nodes_ready(k8s_cluster: Any) -> None:
    from picchio_harness.build import MissingComponent, component_binary

    try:
        kubectl = component_binary("kubectl")
    except MissingComponent as e:
        pytest.fail(str(e), pytrace=False)
    base = [kubectl, f"--kubeconfig={k8s_cluster.kubeconfig}", "--request-timeout=10s"]
    out = subprocess.run(base + ["get", "nodes", "-o", "json"], capture_output=True, text=True,
                         timeout=30, check=True)
    nodes = json.loads(out.stdout)["items"]
    fake = [n for n in nodes if n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"]
    assert len(fake) >= 2, [n["metadata"]["name"] for n in nodes]
    for n in fake:
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", n["metadata"]["name"]
    table = subprocess.run(base + ["get", "nodes"], capture_output=True, text=True, timeout=30, check=True)
    assert all(f"{n['metadata']['name']}" in table.stdout for n in fake)
    assert " Ready " in table.stdout
    version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30, check=True)
    assert json.loads(version.stdout)["clientVersion"]["gitVersion"].startswith("v1.34.")


def test_namespace_is_finalized_on_delete(core: Any) -> None:
    name = f"h3-ns-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}}, _request_timeout=TIMEOUT)
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}, "data": {"k": "v"}},
                                      _request_timeout=TIMEOUT)
    wait_for("service account default in the new namespace",
             lambda: core.read_namespaced_service_account("default", name, _request_timeout=TIMEOUT))
    core.delete_namespace(name, _request_timeout=TIMEOUT)
    # The namespace controller must empty it and remove the 'kubernetes' finalizer.
    wait_for(f"namespace {name} to be deleted",
             lambda: _gone(lambda: core.read_namespace(name, _request_timeout=TIMEOUT)), timeout=90)


def _statefulset(name: str, replicas: int, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": name}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
        "spec": {
            "replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "main", "image": "picchio/fake:never-pulled",
                                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                      "spec": {"accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }


def test_statefulset_gets_ready_pods_on_kwok_nodes_with_bound_pvcs(k8s_cluster: Any, core: Any,
                                                                   namespace: str) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(k8s_cluster.api)
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }, _request_timeout=TIMEOUT)
    apps.create_namespaced_stateful_set(namespace, _statefulset("web", 3), _request_timeout=TIMEOUT)

    wait_for("3 ready replicas", lambda: (apps.read_namespaced_stateful_set(
        "web", namespace, _request_timeout=TIMEOUT).status.ready_replicas or 0) == 3, timeout=120)

    pods = core.list_namespaced_pod(namespace, label_selector="app=web", _request_timeout=TIMEOUT).items
    assert sorted(p.metadata.name for p in pods) == ["web-0", "web-1", "web-2"]
    fake_nodes = {n.metadata.name for n in core.list_node(_request_timeout=TIMEOUT).items
                  if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"}
    for p in pods:
        assert p.status.phase == "Running", (p.metadata.name, p.status.phase)
        assert p.spec.node_name in fake_nodes, (p.metadata.name, p.spec.node_name)
        assert p.status.pod_ip, p.metadata.name
        assert any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
    pvcs = core.list_namespaced_persistent_volume_claim(namespace, _request_timeout=TIMEOUT).items
    assert sorted(c.metadata.name for c in pvcs) == ["data-web-0", "data-web-1", "data-web-2"]
    for c in pvcs:
        assert c.status.phase == "Bound", (c.metadata.name, c.status.phase)
        assert c.spec.storage_class_name == "standard"
        pv = core.read_persistent_volume(c.spec.volume_name, _request_timeout=TIMEOUT)
        assert pv.spec.claim_ref.uid == c.metadata.uid

    # Deleting a claim releases its volume; the provisioner deletes the PV.
    apps.delete_namespaced_stateful_set("web", namespace, _request_timeout=TIMEOUT)
    volume = pvcs[0].spec.volume_name
    core.delete_namespaced_persistent_volume_claim(pvcs[0].metadata.name, namespace, _request_timeout=TIMEOUT)
    wait_for(f"PV {volume} deleted after its claim",
             lambda: _gone(lambda: core.read_persistent_volume(volume, _request_timeout=TIMEOUT)), timeout=60)


def test_garbage_collector_deletes_owned_statefulset(k8s_cluster: Any, core: Any, namespace: str) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(k8s_cluster.api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}},
                                              _request_timeout=TIMEOUT)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    apps.create_namespaced_stateful_set(namespace, _statefulset("owned", 1, ref), _request_timeout=TIMEOUT)
    wait_for("owned pod created", lambda: core.list_namespaced_pod(
        namespace, label_selector="app=owned", _request_timeout=TIMEOUT).items)
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background",
                                      _request_timeout=TIMEOUT)
    wait_for("garbage collector to delete the owned StatefulSet", lambda: _gone(
        lambda: apps.read_namespaced_stateful_set("owned", namespace, _request_timeout=TIMEOUT)), timeout=60)
    wait_for("its pods to go too", lambda: not core.list_namespaced_pod(
        namespace, label_selector="app=owned", _request_timeout=TIMEOUT).items, timeout=60)


def test_crd_with_status_subresource(k8s_cluster: Any, namespace: str) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(k8s_cluster.api)
    custom = client.CustomObjectsApi(k8s_cluster.api)
    group, plural = "harness.picchio.local", f"widgets{uuid.uuid4().hex[:6]}"
    crd_name = f"{plural}.{group}"
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Widget" + plural[7:].upper()},
            "versions": [{
                "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                }}},
            }],
        },
    }, _request_timeout=TIMEOUT)
    try:
        wait_for("CRD Established", lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (ext.read_custom_resource_definition(crd_name, _request_timeout=TIMEOUT).status.conditions
                      or [])))
        kind = "Widget" + plural[7:].upper()
        body = {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "w1"}, "spec": {"size": 3},
                "status": {"phase": "ignored-on-create"}}
        # Discovery of a brand-new CRD can lag Established by a moment.
        obj = wait_for("create custom object", lambda: custom.create_namespaced_custom_object(
            group, "v1", namespace, plural, body, _request_timeout=TIMEOUT))
        assert "status" not in obj or not obj["status"].get("phase"), obj  # status is its own subresource
        patched = custom.patch_namespaced_custom_object_status(
            group, "v1", namespace, plural, "w1", {"status": {"phase": "Ready"}}, _request_timeout=TIMEOUT)
        assert patched["status"]["phase"] == "Ready"
        custom.patch_namespaced_custom_object(group, "v1", namespace, plural, "w1",
                                              {"spec": {"size": 5}, "status": {"phase": "Hacked"}},
                                              _request_timeout=TIMEOUT)
        got = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w1", _request_timeout=TIMEOUT)
        assert got["spec"]["size"] == 5 and got["status"]["phase"] == "Ready"
    finally:
        ext.delete_custom_resource_definition(crd_name, _request_timeout=TIMEOUT)


# --- MinIO --------------------------------------------------------------------

@pytest.fixture
def s3client(minio: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                        aws_secret_access_key=minio.secret_key, region_name="us-east-1",
                        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}))


def test_minio_conditional_put(minio: Any, s3client: Any) -> None:
    from botocore.exceptions import ClientError

    assert minio.flavour == "minio"
    bucket = f"h3-cond-{uuid.uuid4().hex[:8]}"
    s3client.create_bucket(Bucket=bucket)
    s3client.put_object(Bucket=bucket, Key="seg/0001", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3client.put_object(Bucket=bucket, Key="seg/0001", Body=b"second", IfNoneMatch="*")
    assert exc.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3client.get_object(Bucket=bucket, Key="seg/0001")["Body"].read() == b"first"


def test_minio_enforces_past_dated_expiration(minio: Any, s3client: Any) -> None:
    from botocore.exceptions import ClientError

    bucket = f"h3-lc-{uuid.uuid4().hex[:8]}"
    s3client.create_bucket(Bucket=bucket)
    for key in ("expire/a", "expire/b", "keep/c"):
        s3client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [{
        "ID": "expire-old", "Status": "Enabled", "Filter": {"Prefix": "expire/"},
        "Expiration": {"Date": "2020-01-01T00:00:00Z"},
    }]})

    def expired() -> bool:
        keys = [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        if keys != ["keep/c"]:
            return False
        try:
            s3client.get_object(Bucket=bucket, Key="expire/a")
        except ClientError as e:
            return e.response["Error"]["Code"] == "NoSuchKey"
        return False

    wait_for("expired objects to vanish from List and GET", expired, timeout=60, interval=0.5)
    assert s3client.get_object(Bucket=bucket, Key="keep/c")["Body"].read() == b"keep/c"
