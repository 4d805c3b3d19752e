"""The CRDs: structural schemas with a description on every field, defaults
that agree with the model's, printer columns, scale subresource, CEL rules.

(The CEL rules themselves are exercised against a real API server in
tests/operator_cluster; here we check they exist and name their field.)"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from opsupport import REPO
from picchio_operator.model.spec import parse_cluster, parse_log

CRDS = REPO / "crds"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / name).read_text())


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return v["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


OURS = ["woodpeckerclusters.picchio.dev.yaml", "woodpeckerlogs.picchio.dev.yaml"]


@pytest.mark.parametrize("name", OURS)
def test_every_field_is_described_and_structural(name: str) -> None:
    undocumented, untyped = [], []
    for path, node in walk(schema(load(name))):
        if path in (".metadata",):
            continue
        if not path.endswith("{}") and not node.get("description"):  # map values share their map's text
            undocumented.append(path or "<root>")
        if "type" not in node and not node.get("x-kubernetes-int-or-string") and not node.get(
                "x-kubernetes-preserve-unknown-fields"):
            untyped.append(path)
    assert undocumented == []
    assert untyped == []


@pytest.mark.parametrize("name,short,kind", [(OURS[0], "wpc", "WoodpeckerCluster"), (OURS[1], "wplog", "WoodpeckerLog")])
def test_names_group_version_status(name: str, short: str, kind: str) -> None:
    crd = load(name)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["spec"]["group"] == "picchio.dev" and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == kind and short in crd["spec"]["names"]["shortNames"]
    (v,) = crd["spec"]["versions"]
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"]["status"] == {}
    conds = schema(crd)["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map" and conds["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conds["items"]["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert "phase" not in schema(crd)["properties"]["status"]["properties"]


def test_cluster_scale_subresource_and_columns() -> None:
    (v,) = load(OURS[0])["spec"]["versions"]
    assert v["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas",
                                          "statusReplicasPath": ".status.replicas",
                                          "labelSelectorPath": ".status.selector"}
    assert [c["name"].upper() for c in v["additionalPrinterColumns"]] == ["MODE", "REPLICAS", "READY", "STATUS",
                                                                          "SCALEDOWN", "TOFLUSH", "ORPHANS", "AGE"]


def test_log_columns() -> None:
    (v,) = load(OURS[1])["spec"]["versions"]
    assert [c["name"].upper() for c in v["additionalPrinterColumns"]] == [
        "CLUSTER", "LOG", "SEGMENTS", "LAST", "TRUNCATED", "SIZE", "AGE"]


def rules(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for _, n in walk(node) for r in n.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize("field", ["spec.mode", "spec.quorum.ackQuorum", "spec.quorum.writeQuorum",
                                   "spec.quorum.ensembleSize", "spec.storageSize", "spec.storage.type",
                                   "spec.storage.bucket", "spec.storage.rootPath", "spec.etcd.rootPath",
                                   "spec.network.clientNamespaceSelector", "spec.monitoring.namespaceSelector"])
def test_cluster_cel_rules_name_their_field(field: str) -> None:
    assert any(field in r["message"] for r in rules(schema(load(OURS[0])))), field


@pytest.mark.parametrize("field", ["spec.logName", "spec.clusterRef", "spec.truncateTo"])
def test_log_cel_rules_name_their_field(field: str) -> None:
    assert any(field in r["message"] for r in rules(schema(load(OURS[1])))), field


def test_log_schema_enums_and_minimums() -> None:
    spec = schema(load(OURS[1]))["properties"]["spec"]["properties"]
    assert spec["retention"]["properties"]["seconds"]["minimum"] == 0
    assert spec["retention"]["properties"]["bytes"]["minimum"] == 0
    assert spec["truncateTo"]["pattern"] == "^[0-9]+:[0-9]+$"
    cspec = schema(load(OURS[0]))["properties"]["spec"]["properties"]
    assert cspec["storage"]["properties"]["type"]["enum"] == ["minio", "local"]
    assert cspec["mode"]["enum"] == ["embedded", "service"]


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """The API server's defaulting, enough for our schemas: defaults of absent
    properties, recursively (a defaulted ``{}`` gets its own defaults)."""
    if not isinstance(value, dict) or "properties" not in node:
        return value
    out = dict(value)
    for name, sub in node["properties"].items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


def test_model_defaults_equal_crd_defaults_for_clusters() -> None:
    minimal = {"metadata": {"name": "x", "namespace": "n", "uid": "u", "generation": 1},
               "spec": {"etcd": {"endpoints": ["e:2379"]}, "storage": {"endpoint": "m:9000", "bucket": "bkt"}}}
    defaulted = apply_defaults(schema(load(OURS[0])), minimal)
    assert defaulted["spec"]["quorum"] == {"ensembleSize": 3, "writeQuorum": 3, "ackQuorum": 2}
    assert parse_cluster(defaulted) == parse_cluster(minimal)


def test_model_defaults_equal_crd_defaults_for_logs() -> None:
    minimal = {"metadata": {"name": "x", "namespace": "n", "uid": "u", "generation": 1}, "spec": {"clusterRef": "c"}}
    defaulted = apply_defaults(schema(load(OURS[1])), minimal)
    assert defaulted["spec"]["gc"] == {"intervalSeconds": 60, "dryRun": False}
    assert parse_log(defaulted) == parse_log(minimal)


def test_peering_crds_are_shipped() -> None:
    docs = list(yaml.safe_load_all((CRDS / "kopf.dev-peerings.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs} == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
