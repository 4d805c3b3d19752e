"""The NetworkPolicy of a service-mode cluster's LogStores (secure by default).

Without it any pod in the cluster can open the LogStores' gRPC port and
append to, fence or read any log: the gRPC API has no authentication of its
own.  One policy, ``<name>-server``, selects the LogStore pods and allows
ingress only

* to the gRPC port (``service``, 18080) from pods labelled
  ``picchio.dev/client: <name>`` in the cluster's namespace (and, with
  ``spec.network.clientNamespaceSelector``, in the namespaces it selects),
  from the LogStores themselves, and from the operator's pods (the
  Deployment's selector, in the operator's namespace);
* to the HTTP/metrics port (9091) from the namespaces
  ``spec.monitoring.namespaceSelector`` selects (unset: the cluster's own).

Kubelet probes (tcpSocket on the gRPC port) come from the pod's own node;
Kubernetes defines node-to-local-pod traffic as always allowed and the common
CNIs (Calico, Cilium, kube-network-policies/kindnet) implement it so, hence no
rule for them.  Egress is not restricted: the LogStores need etcd and object
storage, wherever those are.  ``spec.network.policies: false`` renders none
(the handler then deletes the one it made) for clusters whose CNI or admins
manage policies otherwise.  Pure: the operator's namespace is a parameter.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from . import constants as k
from .spec import ClusterSpec

# model.cluster (labels, metadata) is imported inside the functions: it imports this module.
Obj = dict[str, Any]
API_VERSION, KIND = "networking.k8s.io/v1", "NetworkPolicy"


def _selector(sel: Mapping[str, Any]) -> Obj:
    """A deep copy of a metav1.LabelSelector holding only its two fields."""
    return {key: copy.deepcopy(sel[key]) for key in ("matchLabels", "matchExpressions") if sel.get(key)}


def _port(port: int) -> Obj:
    return {"port": port, "protocol": "TCP"}


def client_peers(c: ClusterSpec, operator_namespace: str) -> list[Obj]:
    """Who may open the gRPC port."""
    from .cluster import selector_labels

    def clients() -> Obj:
        return {"matchLabels": {k.CLIENT_LABEL: c.name}}

    peers: list[Obj] = [{"podSelector": clients()}]
    if c.network.client_namespace_selector is not None:  # labelled pods there: namespace AND label
        peers.append({"namespaceSelector": _selector(c.network.client_namespace_selector),
                      "podSelector": clients()})
    peers.append({"podSelector": {"matchLabels": selector_labels(c)}})
    peers.append({"namespaceSelector": {"matchLabels": {k.NAMESPACE_NAME_LABEL: operator_namespace}},
                  "podSelector": {"matchLabels": dict(k.OPERATOR_POD_LABELS)}})
    return peers


def metrics_peers(c: ClusterSpec) -> list[Obj]:
    """Who may scrape: every pod of the selected namespaces (Prometheus lives
    in a namespace of its own, its pod labels vary by installation)."""
    sel = c.monitoring.namespace_selector
    if sel is None:
        return [{"podSelector": {}}]  # the cluster's own namespace
    return [{"namespaceSelector": _selector(sel)}]


def network_policy(c: ClusterSpec, operator_namespace: str) -> Obj:
    from .cluster import _meta, selector_labels

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _meta(c, k.networkpolicy_name(c.name), k.COMPONENT_LOGSTORE),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(c)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [_port(k.SERVICE_PORT)], "from": client_peers(c, operator_namespace)},
                {"ports": [_port(k.METRICS_PORT)], "from": metrics_peers(c)},
            ],
        },
    }


def enabled(c: ClusterSpec) -> bool:
    return c.service_mode and c.network.policies


def network_policies(c: ClusterSpec, operator_namespace: str = k.DEFAULT_OPERATOR_NAMESPACE) -> list[Obj]:
    """The policies to apply: one, or none (embedded mode has no LogStores;
    ``spec.network.policies: false``)."""
    return [network_policy(c, operator_namespace)] if enabled(c) else []


def unwanted(c: ClusterSpec) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of policies this cluster must not have: the
    one a switch-off leaves behind.  Owned children normally go only with
    their owner (garbage collection); a switch-off is the one case the
    operator deletes a child itself."""
    if not c.service_mode or c.network.policies:  # embedded mode (immutable) never had one
        return []
    return [(API_VERSION, KIND, k.networkpolicy_name(c.name))]
