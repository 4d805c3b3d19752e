"""The LogStores' NetworkPolicy (model.netpol): golden YAML, who each port
admits, the switch, and that its peers match the operator's manifests."""
from __future__ import annotations

import yaml
from opsupport import REPO, check_golden, cluster_body, sample
from picchio_operator.model import constants as k
from picchio_operator.model import netpol
from picchio_operator.model.cluster import desired_children, selector_labels, statefulset
from picchio_operator.model.config import render_config
from picchio_operator.model.spec import parse_cluster
from picchio_operator.runtime import operator_namespace

TEAM = {"matchLabels": {"team": "a"}}
MON = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}


def policy(ns: str = "picchio-system", **spec) -> dict:
    (p,) = netpol.network_policies(parse_cluster(cluster_body(**spec)), ns)
    return p


def test_service_sample_golden() -> None:
    check_golden("service-networkpolicy.yaml", policy())


def test_selectors_golden() -> None:
    check_golden("service-networkpolicy-selectors.yaml",
                 policy("ops", network={"clientNamespaceSelector": TEAM}, monitoring={"namespaceSelector": MON}))


def test_grpc_port_admits_clients_logstores_and_the_operator_only() -> None:
    c = parse_cluster(cluster_body())
    p = policy("ops")
    assert p["spec"]["podSelector"] == {"matchLabels": selector_labels(c)}
    assert p["spec"]["policyTypes"] == ["Ingress"]  # egress (etcd, object storage) stays open
    grpc, metrics = p["spec"]["ingress"]
    assert grpc["ports"] == [{"port": 18080, "protocol": "TCP"}]
    assert grpc["from"] == [
        {"podSelector": {"matchLabels": {"picchio.dev/client": "wal"}}},  # this namespace only
        {"podSelector": {"matchLabels": selector_labels(c)}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "picchio-operator"}}},
    ]
    assert metrics["ports"] == [{"port": 9091, "protocol": "TCP"}]
    assert metrics["from"] == [{"podSelector": {}}]  # default: every pod of the cluster's namespace


def test_selectors_reach_the_policy() -> None:
    grpc, metrics = policy(network={"clientNamespaceSelector": TEAM},
                           monitoring={"namespaceSelector": MON})["spec"]["ingress"]
    # clients elsewhere still need the label: namespace AND pod in one peer
    assert {"namespaceSelector": TEAM, "podSelector": {"matchLabels": {"picchio.dev/client": "wal"}}} in grpc["from"]
    assert metrics["from"] == [{"namespaceSelector": MON}]
    # {} is a selector too: every namespace (not "unset")
    (m,) = policy(monitoring={"namespaceSelector": {}})["spec"]["ingress"][1]["from"]
    assert m == {"namespaceSelector": {}}


def test_logstore_peer_selects_the_statefulset_pods() -> None:
    c = parse_cluster(cluster_body(podTemplate={"labels": {"picchio.dev/client": "other"}}))
    pod_labels = statefulset(c, render_config(c))["spec"]["template"]["metadata"]["labels"]
    (p,) = netpol.network_policies(c)
    assert p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_switch_off_and_embedded_render_none() -> None:
    off = parse_cluster(cluster_body(network={"policies": False}))
    assert netpol.network_policies(off) == []
    assert netpol.unwanted(off) == [("networking.k8s.io/v1", "NetworkPolicy", "wal-server")]
    assert "NetworkPolicy" not in [o["kind"] for o in desired_children(off, render_config(off))]
    emb = parse_cluster(sample("cluster-embedded.yaml"))
    assert netpol.network_policies(emb) == [] and netpol.unwanted(emb) == []  # never had one
    on = parse_cluster(cluster_body())
    assert netpol.unwanted(on) == []


def test_applied_before_the_pods_owned_and_labelled() -> None:
    c = parse_cluster(cluster_body())
    children = desired_children(c, render_config(c), operator_namespace="ops")
    kinds = [o["kind"] for o in children]
    assert kinds.index("NetworkPolicy") < kinds.index("StatefulSet")
    p = children[kinds.index("NetworkPolicy")]
    assert p == policy("ops")
    assert p["metadata"]["ownerReferences"][0]["uid"] == "0000-uid"
    assert p["metadata"]["labels"][k.LABEL_MANAGED_BY] == k.MANAGED_BY


def test_operator_peer_matches_the_deployment() -> None:
    (dep,) = [d for d in yaml.safe_load_all((REPO / "manifests" / "deployment.yaml").read_text()) if d]
    assert k.OPERATOR_POD_LABELS == dep["spec"]["selector"]["matchLabels"]
    assert k.OPERATOR_POD_LABELS.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["metadata"]["namespace"] == k.DEFAULT_OPERATOR_NAMESPACE
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[k.OPERATOR_NAMESPACE_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_operator_namespace_from_env_then_service_account_then_default(tmp_path) -> None:
    sa = tmp_path / "namespace"
    sa.write_text("from-sa\n")
    assert operator_namespace({"POD_NAMESPACE": "from-env"}, str(sa)) == "from-env"
    assert operator_namespace({}, str(sa)) == "from-sa"
    assert operator_namespace({}, str(tmp_path / "absent")) == "picchio-system"
