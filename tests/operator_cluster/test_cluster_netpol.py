"""The LogStores' NetworkPolicy on the real control plane (issue "secure by
default"): the operator applies ``<name>-server`` with the selectors the
model renders, follows spec changes, deletes it when
``spec.network.policies`` is switched off (and only one it controls), and
the CRD's CEL rejects a malformed selector naming the field.  Whether a CNI
enforces it is not testable here (no CNI: kwok nodes)."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from opcluster import cr_path, events, merge_patch, s3client, secret_body, wait_for, wpc_body
from picchio_operator.adapters.kube import Kube
from picchio_operator.model.netpol import network_policy
from picchio_operator.model.spec import parse_cluster
from picchio_operator.runtime import operator_namespace

pytestmark = pytest.mark.cluster
WPC = "woodpeckerclusters"


def np_path(ns: str, name: str | None = None) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies" + (f"/{name}" if name else "")


def expected_spec(api, ns: str) -> dict:
    """What the model renders for the cluster as the API server holds it now."""
    return network_policy(parse_cluster(api.get(cr_path(WPC, ns, "wal"))), operator_namespace())["spec"]


def wait_policy(api, ns: str, what: str, pred) -> dict:
    return wait_for(what, lambda: (p := api.get(np_path(ns, "wal-server"))) and pred(p) and p, timeout=60)


def test_policy_applied_updated_and_removed(api, ns, operator, etcd, minio) -> None:
    bucket = f"np-{uuid.uuid4().hex[:10]}"
    s3client(minio).create_bucket(Bucket=bucket)
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    api.call("POST", cr_path(WPC, ns), wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket, mode="service",
                                                 replicas=3))
    wpc = api.get(cr_path(WPC, ns, "wal"))
    assert wpc["spec"]["network"] == {"policies": True}  # the CRD's default

    p = wait_policy(api, ns, "NetworkPolicy wal-server", lambda p: True)
    assert p["spec"] == expected_spec(api, ns)
    grpc, metrics = p["spec"]["ingress"]
    assert {"podSelector": {"matchLabels": {"picchio.dev/client": "wal"}}} in grpc["from"]
    assert metrics["from"] == [{"podSelector": {}}]
    (ref,) = p["metadata"]["ownerReferences"]
    assert ref["uid"] == wpc["metadata"]["uid"] and ref["controller"] is True
    assert p["metadata"]["labels"]["app.kubernetes.io/instance"] == "wal"
    # the policy is applied before the StatefulSet (no pod unprotected): wait for the latter
    sts = wait_for("StatefulSet wal-server", lambda: api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server"),
                   timeout=60)
    assert p["spec"]["podSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()

    # a malformed selector never reaches the operator: CEL names the field
    code, msg = api.status_code("PATCH", cr_path(WPC, ns, "wal"), {"spec": {"monitoring": {"namespaceSelector": {
        "matchExpressions": [{"key": "team", "operator": "In"}]}}}}, "application/merge-patch+json")
    assert code == 422 and "spec.monitoring.namespaceSelector" in msg, msg

    team = {"matchLabels": {"team": "a"}}
    mon = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    merge_patch(api, cr_path(WPC, ns, "wal"), {"spec": {"network": {"clientNamespaceSelector": team},
                                                        "monitoring": {"namespaceSelector": mon}}})
    p = wait_policy(api, ns, "selectors in the policy",
                    lambda p: p["spec"]["ingress"][1]["from"] == [{"namespaceSelector": mon}])
    assert p["spec"] == expected_spec(api, ns)
    assert {"namespaceSelector": team, "podSelector": {"matchLabels": {"picchio.dev/client": "wal"}}} \
        in p["spec"]["ingress"][0]["from"]

    merge_patch(api, cr_path(WPC, ns, "wal"), {"spec": {"network": {"policies": False}}})
    wait_for("NetworkPolicy deleted", lambda: api.get(np_path(ns, "wal-server")) is None, timeout=60)
    wait_for("NetworkPolicyDeleted event",
             lambda: "NetworkPolicyDeleted" in [r for _, r, _ in events(api, ns, "wal")], timeout=30)
    assert api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server"), "only the policy goes"

    # the adapter deletes only a policy the cluster controls: a same-named one of someone else stays
    foreign = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "wal-server", "namespace": ns},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    api.call("POST", np_path(ns), foreign)
    kube: Kube = api._kube
    gone = asyncio.run(kube.delete_owned("networking.k8s.io/v1", "NetworkPolicy", ns, "wal-server",
                                         wpc["metadata"]["uid"]))
    assert gone is False and api.get(np_path(ns, "wal-server")) is not None
    api.call("DELETE", np_path(ns, "wal-server"))

    merge_patch(api, cr_path(WPC, ns, "wal"), {"spec": {"network": {"policies": True}}})
    p = wait_policy(api, ns, "NetworkPolicy back", lambda p: True)
    assert p["spec"] == expected_spec(api, ns)
