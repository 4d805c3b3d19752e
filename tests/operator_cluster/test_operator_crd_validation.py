"""The API server enforces the CRDs: defaults, printer columns and every CEL
rule, with messages that name the field."""
from __future__ import annotations

import copy

import pytest
from opcluster import cr_path, wait_for

pytestmark = pytest.mark.cluster


def cluster(name: str = "wal", **spec) -> dict:
    base = {"mode": "service", "etcd": {"endpoints": ["etcd:2379"]},
            "storage": {"endpoint": "minio:9000", "bucket": "picchio"}}
    base.update(spec)
    return {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
            "metadata": {"name": name}, "spec": base}


def log(name: str = "orders", **spec) -> dict:
    return {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog", "metadata": {"name": name},
            "spec": {"clusterRef": "wal", **spec}}


def create(api, ns, plural, obj) -> tuple[int, str]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = ns
    return api.status_code("POST", cr_path(plural, ns), obj)


def test_defaults_are_applied(api, ns) -> None:
    assert create(api, ns, "woodpeckerclusters", cluster()) == (200, "")
    got = api.get(cr_path("woodpeckerclusters", ns, "wal"))
    spec = got["spec"]
    assert spec["quorum"] == {"ensembleSize": 3, "writeQuorum": 3, "ackQuorum": 2}
    assert spec["deletionPolicy"] == "Retain" and spec["storage"]["type"] == "minio"
    assert spec["storage"]["lifecycle"]["tombstoneExpirationDays"] == 7
    assert create(api, ns, "woodpeckerlogs", log()) == (200, "")
    assert api.get(cr_path("woodpeckerlogs", ns, "orders"))["spec"]["gc"] == {"intervalSeconds": 60, "dryRun": False}


@pytest.mark.parametrize("spec,field", [
    ({"quorum": {"ensembleSize": 3, "writeQuorum": 3, "ackQuorum": 1}}, "spec.quorum.ackQuorum"),
    ({"quorum": {"ensembleSize": 3, "writeQuorum": 2, "ackQuorum": 3}}, "spec.quorum.ackQuorum"),
    ({"quorum": {"ensembleSize": 2, "writeQuorum": 3, "ackQuorum": 2}}, "spec.quorum.writeQuorum"),
    ({"replicas": 2}, "spec.quorum.ensembleSize"),
    ({"storage": {"type": "gcs", "endpoint": "x:1", "bucket": "bkt"}}, "spec.storage.type"),
    ({"storage": {"type": "minio"}}, "spec.storage.endpoint"),
    ({"mode": "sidecar"}, "spec.mode"),
])
def test_invalid_clusters_are_rejected_naming_the_field(api, ns, spec, field) -> None:
    code, msg = create(api, ns, "woodpeckerclusters", cluster(**spec))
    assert code == 422, msg
    assert field in msg, msg


@pytest.mark.parametrize("spec,field", [
    ({"retention": {"seconds": -1}}, "spec.retention.seconds"),
    ({"retention": {"bytes": -5}}, "spec.retention.bytes"),
    ({"truncateTo": "3"}, "spec.truncateTo"),
    ({"truncateTo": "a:b"}, "spec.truncateTo"),
    ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
])
def test_invalid_logs_are_rejected_naming_the_field(api, ns, spec, field) -> None:
    code, msg = create(api, ns, "woodpeckerlogs", log(**spec))
    assert code == 422, msg
    assert field in msg, msg


def patch(api, ns, plural, name, spec) -> tuple[int, str]:
    return api.status_code("PATCH", cr_path(plural, ns, name), {"spec": spec}, "application/merge-patch+json")


def test_immutable_fields(api, ns) -> None:
    assert create(api, ns, "woodpeckerclusters", cluster(storageSize="1Gi"))[0] == 200
    for spec, field in [({"mode": "embedded"}, "spec.mode is immutable"),
                        ({"storage": {"bucket": "other"}}, "spec.storage.bucket is immutable"),
                        ({"storage": {"rootPath": "elsewhere"}}, "spec.storage.rootPath is immutable"),
                        ({"etcd": {"rootPath": "elsewhere"}}, "spec.etcd.rootPath is immutable"),
                        ({"storageSize": "2Gi"}, "spec.storageSize is immutable")]:
        code, msg = patch(api, ns, "woodpeckerclusters", "wal", spec)
        assert code == 422 and field in msg, (spec, msg)
    # mutable things stay mutable
    assert patch(api, ns, "woodpeckerclusters", "wal", {"replicas": 5, "config": {"woodpecker": {"x": 1}}})[0] == 200

    assert create(api, ns, "woodpeckerlogs", log(truncateTo="3:17"))[0] == 200
    code, msg = patch(api, ns, "woodpeckerlogs", "orders", {"logName": "other"})
    assert code == 422 and "spec.logName is immutable" in msg, msg
    assert patch(api, ns, "woodpeckerlogs", "orders", {"logName": "orders"})[0] == 200  # same as the default
    code, msg = patch(api, ns, "woodpeckerlogs", "orders", {"truncateTo": "3:16"})
    assert code == 422 and "spec.truncateTo may only move forward" in msg, msg
    assert patch(api, ns, "woodpeckerlogs", "orders", {"truncateTo": "4:0"})[0] == 200
    code, msg = patch(api, ns, "woodpeckerlogs", "orders", {"clusterRef": "other"})
    assert code == 422 and "spec.clusterRef is immutable" in msg, msg


def test_printer_columns(kubectl, api, ns) -> None:
    create(api, ns, "woodpeckerclusters", cluster())
    create(api, ns, "woodpeckerlogs", log())
    out = kubectl("get", "wpc,wplog", "-n", ns).stdout
    lines = out.splitlines()
    assert any(line.split()[:9] == ["NAME", "MODE", "REPLICAS", "READY", "STATUS", "SCALEDOWN", "TOFLUSH", "ORPHANS",
                                    "AGE"] for line in lines), out
    assert any(line.split()[:8] == ["NAME", "CLUSTER", "LOG", "SEGMENTS", "LAST", "TRUNCATED", "SIZE", "AGE"]
               for line in lines), out
    explain = kubectl("explain", "wpc.spec.quorum.ackQuorum").stdout
    assert "more than half" in explain


def _object_nodes(schema: dict, path: str):
    """(dotted path, properties) of every object node that kubectl explain
    can show (array items are explained at the array's own path)."""
    props = schema.get("properties") or {}
    if props:
        yield path, props
    for name, sub in props.items():
        node = sub.get("items", sub) if sub.get("type") == "array" else sub
        yield from _object_nodes(node, f"{path}.{name}")


@pytest.mark.parametrize("short,crd", [("wpc", "woodpeckerclusters.picchio.dev.yaml"),
                                       ("wplog", "woodpeckerlogs.picchio.dev.yaml")])
def test_kubectl_explain_documents_every_field(kubectl, crds, short, crd) -> None:
    """Every field's description, as the API server publishes it (OpenAPI v3
    from the CRD), reaches `kubectl explain` — object by object."""
    import yaml
    from opcluster import ROOT

    doc = yaml.safe_load((ROOT / "crds" / crd).read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    def norm(s: str) -> str:
        return " ".join(s.split())

    kubectl("get", short, "-A")  # refreshes kubectl's discovery cache (explain does not on a miss)
    # the API server publishes a new CRD's OpenAPI a few seconds after it is Established
    wait_for(f"OpenAPI of {short}", lambda: kubectl("explain", short, check=False).returncode == 0, timeout=60)
    checked = 0
    for path, props in _object_nodes(schema, short):
        if path.startswith(f"{short}.metadata"):
            continue
        out = norm(kubectl("explain", path).stdout)
        for name, sub in props.items():
            if path == short and name in ("apiVersion", "kind", "metadata"):
                continue  # the API server documents these itself
            desc = norm(sub.get("description", ""))
            assert desc, f"{path}.{name} has no description"
            assert name in out and desc[:40] in out, f"kubectl explain {path}: {name} / {desc[:40]!r} missing:\n{out}"
            checked += 1
    assert checked > 20
