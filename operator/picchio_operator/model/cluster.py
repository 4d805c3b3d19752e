"""WoodpeckerCluster → the Kubernetes objects that run it.

Embedded mode needs only the ConfigMaps (the LogStores' ``<name>-config`` and
the applications' ``<name>-client``); service mode adds the LogStore
StatefulSet, its headless Service (stable pod DNS for quorum membership), the
client Service ``<name>-server-client:18080``, a metrics Service and a
PodDisruptionBudget.  With etcd authentication, the handler also applies the
scoped user's Secret (``etcd_client_secret``).

Every object carries the cluster as its controller ownerReference, so the API
server's garbage collector removes them with the cluster and the operator never
has to delete children itself — except the LogStores' NetworkPolicy when
``spec.network.policies`` is switched off (``model.netpol``).
"""
from __future__ import annotations

import base64
from typing import Any

from . import constants as k
from .config import RenderedConfig, render_client_config
from .netpol import network_policies
from .spec import ClusterSpec

Obj = dict[str, Any]


def selector_labels(c: ClusterSpec) -> dict[str, str]:
    """Labels that select the LogStore pods; never change them (StatefulSet
    selectors are immutable)."""
    return {k.LABEL_NAME: k.APP_NAME, k.LABEL_INSTANCE: c.name, k.LABEL_COMPONENT: k.COMPONENT_LOGSTORE}


def selector_string(c: ClusterSpec) -> str:
    """``status.selector`` for the scale subresource (``kubectl scale`` / HPA)."""
    return ",".join(f"{key}={val}" for key, val in sorted(selector_labels(c).items()))


def common_labels(c: ClusterSpec, component: str) -> dict[str, str]:
    return {
        k.LABEL_NAME: k.APP_NAME,
        k.LABEL_INSTANCE: c.name,
        k.LABEL_COMPONENT: component,
        k.LABEL_MANAGED_BY: k.MANAGED_BY,
        k.LABEL_PART_OF: "picchio",
    }


def owner_reference(c: ClusterSpec) -> Obj:
    return {
        "apiVersion": k.API_VERSION,
        "kind": k.CLUSTER_KIND,
        "name": c.name,
        "uid": c.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(c: ClusterSpec, name: str, component: str) -> Obj:
    return {
        "name": name,
        "namespace": c.namespace,
        "labels": common_labels(c, component),
        "ownerReferences": [owner_reference(c)],
    }


def configmap(c: ClusterSpec, cfg: RenderedConfig) -> Obj:
    meta = _meta(c, k.configmap_name(c.name), k.COMPONENT_CONFIG)
    meta["annotations"] = {k.CONFIG_HASH_ANNOTATION: cfg.hash}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {k.CONFIG_FILE: cfg.text}}


def _service_ports() -> list[Obj]:
    return [{"name": "service", "port": k.SERVICE_PORT, "targetPort": "service", "protocol": "TCP"}]


def headless_service(c: ClusterSpec) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(c, k.headless_service_name(c.name), k.COMPONENT_LOGSTORE),
        "spec": {
            "clusterIP": "None",
            # LogStores find each other before they are Ready (they form the quorum).
            "publishNotReadyAddresses": True,
            "selector": selector_labels(c),
            "ports": _service_ports(),
        },
    }


def client_service(c: ClusterSpec) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(c, k.client_service_name(c.name), k.COMPONENT_LOGSTORE),
        "spec": {"type": "ClusterIP", "selector": selector_labels(c), "ports": _service_ports()},
    }


def metrics_service(c: ClusterSpec) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(c, k.metrics_service_name(c.name), k.COMPONENT_LOGSTORE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(c),
            "ports": [{"name": "metrics", "port": k.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
        },
    }


def pdb_max_unavailable(c: ClusterSpec) -> int:
    """Voluntary evictions may take away only the LogStores above the ack
    quorum: with ``replicas - ackQuorum`` unavailable, ackQuorum remain and
    every entry can still be acknowledged.  0 when replicas == ackQuorum (then
    drains wait for the operator's user to scale up first — by design)."""
    return max(c.replicas - c.quorum.ack_quorum, 0)


def pdb(c: ClusterSpec) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(c, k.pdb_name(c.name), k.COMPONENT_LOGSTORE),
        "spec": {
            "maxUnavailable": pdb_max_unavailable(c),
            "selector": {"matchLabels": selector_labels(c)},
            # A crash-looping pod does not count as healthy anyway; letting it be
            # evicted keeps node drains from wedging on it.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _secret_env(c: ClusterSpec) -> list[Obj]:
    env: list[Obj] = []
    pairs: list[tuple[str, str | None, str]] = []
    if c.storage.type == "minio" and c.storage.credentials_secret:
        pairs += [("minio.accessKeyID", c.storage.credentials_secret, "accessKeyID"),
                  ("minio.secretAccessKey", c.storage.credentials_secret, "secretAccessKey")]
    if c.etcd.credentials_secret:
        # Not the admin credentials the spec names: the operator-owned Secret
        # of the user that may touch only this cluster's prefix.
        own = k.etcd_client_secret_name(c.name)
        pairs += [("etcd.auth.userName", own, "username"), ("etcd.auth.password", own, "password")]
    for cfg_key, secret, secret_key in pairs:
        env.append({"name": k.ENV_SECRET_KEYS[cfg_key],
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}})
    return env


def _tls_volumes(c: ClusterSpec) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(volume, Secret, mount path, keys) of the TLS Secrets the pods mount."""
    out = []
    if c.etcd.tls_secret:
        out.append(("etcd-tls", c.etcd.tls_secret, k.ETCD_TLS_DIR, k.ETCD_TLS_KEYS))
    if c.storage.type == "minio" and c.storage.ca_secret:
        out.append(("storage-ca", c.storage.ca_secret, k.STORAGE_CA_DIR, k.STORAGE_CA_KEYS))
    if c.tls_on:  # spec.tls (model.pki); no hash of it in the pod template: renewals reload in place
        out.append(("logstore-tls", k.logstore_tls_secret_name(c.name), k.LOGSTORE_TLS_DIR, k.ETCD_TLS_KEYS))
    return out


def statefulset(c: ClusterSpec, cfg: RenderedConfig) -> Obj:
    labels = {**c.pod_template.labels, **common_labels(c, k.COMPONENT_LOGSTORE)}
    annotations = {**c.pod_template.annotations, k.CONFIG_HASH_ANNOTATION: cfg.hash}
    env: list[Obj] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "PICCHIO_ADVERTISE_ADDRESS",
         "value": f"$(POD_NAME).{k.headless_service_name(c.name)}.$(POD_NAMESPACE).svc:{k.SERVICE_PORT}"},
        *_secret_env(c),
    ]
    container: Obj = {
        "name": "logstore",
        "image": c.image,
        "imagePullPolicy": c.image_pull_policy,
        "command": ["picchio", "logstore", "serve", "--config", f"{k.CONFIG_DIR}/{k.CONFIG_FILE}"],
        "env": env,
        "ports": [
            {"name": "service", "containerPort": k.SERVICE_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": k.METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"tcpSocket": {"port": "service"}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "service"}, "initialDelaySeconds": 10, "periodSeconds": 10,
                          "failureThreshold": 6},
        "volumeMounts": [
            {"name": "config", "mountPath": k.CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": k.DATA_DIR},
        ],
    }
    if c.resources:
        container["resources"] = dict(c.resources)
    volumes: list[Obj] = [{"name": "config", "configMap": {"name": k.configmap_name(c.name)}}]
    for vol, secret, path, keys in _tls_volumes(c):
        # read-only files (0444: the image runs as uid 65532 and the pod sets no fsGroup, so an
        # owner-only mode would leave them unreadable); the ConfigMap names the paths
        volumes.append({"name": vol, "secret": {"secretName": secret, "defaultMode": 0o444,
                                                "items": [{"key": key, "path": key} for key in keys]}})
        container["volumeMounts"].append({"name": vol, "mountPath": path, "readOnly": True})
    pod_spec: Obj = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
    }
    pt = c.pod_template
    if pt.node_selector:
        pod_spec["nodeSelector"] = dict(pt.node_selector)
    if pt.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pt.tolerations]
    if pt.affinity:
        pod_spec["affinity"] = dict(pt.affinity)
    if pt.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = [dict(t) for t in pt.topology_spread_constraints]
    if pt.priority_class_name:
        pod_spec["priorityClassName"] = pt.priority_class_name
    if pt.service_account_name:
        pod_spec["serviceAccountName"] = pt.service_account_name
    spec: Obj = {
        "replicas": c.replicas,
        "serviceName": k.headless_service_name(c.name),
        # LogStores are peers, not a chain: start and replace them in parallel.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector_labels(c)},
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
    }
    if c.storage_size:
        pvc_spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": c.storage_size}}}
        if c.storage_class_name:
            pvc_spec["storageClassName"] = c.storage_class_name
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": pvc_spec}]
        # deletionPolicy Delete purges the cluster's data: its staging volumes go with it.  The operator
        # lowers replicas only once the leaving LogStores are decommissioned (scaledown.py), so whenScaled
        # Delete removes exactly the volumes that hold nothing outside object storage any more.
        when_deleted = "Delete" if c.deletion_policy == "Delete" else "Retain"
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": when_deleted,
                                                        "whenScaled": c.storage.pvc_retention}
    else:
        volumes.append({"name": "data", "emptyDir": {}})
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(c, k.statefulset_name(c.name), k.COMPONENT_LOGSTORE),
        "spec": spec,
    }


def client_configmap(c: ClusterSpec, client: RenderedConfig) -> Obj:
    """``<name>-client``: the woodpecker.yaml an application mounts to use this
    cluster (see ``config.render_client_config``).  Credentials are not in
    it; the application takes them from the Secrets as environment
    variables (``PICCHIO_ETCD_AUTH_USERNAME`` …), like the LogStores do."""
    meta = _meta(c, k.client_configmap_name(c.name), k.COMPONENT_CLIENT)
    meta["annotations"] = {k.CONFIG_HASH_ANNOTATION: client.hash}
    if c.tls_on:  # the Secret to mount at CLIENT_TLS_DIR (the file's comment says so too)
        meta["annotations"][k.CLIENT_TLS_SECRET_ANNOTATION] = k.client_tls_secret_name(c.name)
    data = {k.CONFIG_FILE: client.text}
    if client.milvus:
        data[k.MILVUS_CONFIG_FILE] = client.milvus
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def etcd_client_secret(c: ClusterSpec, username: str, password: str) -> Obj:
    """The scoped etcd user's credentials, owned by the cluster (deleted with
    it).  ``data`` rather than ``stringData``: the latter is write-only, so a
    server-side apply of it would never compare equal and would rewrite the
    Secret on every pass."""
    def enc(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(c, k.etcd_client_secret_name(c.name), k.COMPONENT_CREDENTIALS),
        "type": "Opaque",
        "data": {"username": enc(username), "password": enc(password)},
    }


def desired_children(c: ClusterSpec, cfg: RenderedConfig, client: RenderedConfig | None = None, *,
                     operator_namespace: str = k.DEFAULT_OPERATOR_NAMESPACE) -> list[Obj]:
    """Every child object, in apply order (config before the pods that mount
    it, the NetworkPolicy before the pods it guards).  ``client`` is the
    applications' configuration (``<name>-client``), rendered from ``cfg``
    when not given; ``operator_namespace`` is where the operator's pods run
    (a NetworkPolicy peer)."""
    objs = [configmap(c, cfg), client_configmap(c, client or render_client_config(c, cfg))]
    objs += network_policies(c, operator_namespace)
    if c.service_mode:
        objs += [headless_service(c), client_service(c), metrics_service(c), statefulset(c, cfg), pdb(c)]
    return objs
