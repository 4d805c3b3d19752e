"""Typed views of the custom resources' specs.

The API server applies the CRD defaults before the operator sees an object;
these parsers apply the same defaults again so the model is correct for any
input (unit tests, objects written before a default existed).  A unit test
checks that the defaults here equal the CRD's.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .constants import SERVICE_PORT, client_service_name


class SpecError(ValueError):
    """The spec cannot be turned into objects (the CRD schema should have
    caught it; this covers objects that bypassed validation)."""


def _get(d: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if not d:
        return default
    v = d.get(key, default)
    return default if v is None else v


@dataclass(frozen=True)
class Quorum:
    ensemble_size: int = 3
    write_quorum: int = 3
    ack_quorum: int = 2


@dataclass(frozen=True)
class EtcdSpec:
    endpoints: tuple[str, ...]
    root_path: str = "by-dev"
    credentials_secret: str | None = None
    tls_secret: str | None = None  # ca.crt, tls.crt, tls.key: TLS (and a client certificate) to etcd


@dataclass(frozen=True)
class LifecycleSpec:
    enabled: bool = True
    abort_incomplete_multipart_upload_days: int = 1
    tombstone_expiration_days: int = 7


@dataclass(frozen=True)
class StorageSpec:
    type: str = "minio"
    endpoint: str | None = None
    region: str = ""
    bucket: str | None = None
    root_path: str = "files"
    credentials_secret: str | None = None
    ca_secret: str | None = None  # ca.crt: the private CA of an https endpoint
    create_bucket: bool = False
    lifecycle: LifecycleSpec = field(default_factory=LifecycleSpec)
    # PVCs of LogStores removed by a scale-down: Delete (once decommissioned) or Retain
    pvc_retention: str = "Delete"

    @property
    def root_prefix(self) -> str:
        """The key prefix every object of the cluster starts with, ending in
        ``/`` so that ``files`` never matches ``files2/...``."""
        return self.root_path.strip("/") + "/"

    def endpoint_parts(self) -> tuple[str, int, bool]:
        """``(host, port, use_ssl)`` of ``endpoint``: ``host:port``, or a URL
        whose scheme decides TLS (default ports 80/443)."""
        ep = (self.endpoint or "").strip()
        if not ep:
            raise SpecError("spec.storage.endpoint is required when spec.storage.type is minio")
        use_ssl = False
        if "://" in ep:
            scheme, ep = ep.split("://", 1)
            if scheme not in ("http", "https"):
                raise SpecError(f"spec.storage.endpoint: scheme must be http or https, got {scheme!r}")
            use_ssl = scheme == "https"
        ep = ep.rstrip("/")
        if "/" in ep:
            raise SpecError(f"spec.storage.endpoint: expected host:port or a URL without a path, got {self.endpoint!r}")
        host, sep, port_s = ep.rpartition(":")
        if not sep:
            return ep, 443 if use_ssl else 80, use_ssl
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise SpecError(f"spec.storage.endpoint: bad port in {self.endpoint!r}")
        return host, int(port_s), use_ssl

    @property
    def endpoint_url(self) -> str:
        host, port, ssl = self.endpoint_parts()
        return f"{'https' if ssl else 'http'}://{host}:{port}"


@dataclass(frozen=True)
class PodTemplate:
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    topology_spread_constraints: tuple[Mapping[str, Any], ...] = ()
    priority_class_name: str | None = None
    service_account_name: str | None = None


@dataclass(frozen=True)
class OrphanGc:
    """spec.gc: the periodic scan for stored objects without metadata (and
    metadata without objects); ``mode`` report or delete."""
    scan_interval_seconds: int = 3600
    grace_seconds: int = 3600
    mode: str = "report"


@dataclass(frozen=True)
class NetworkSpec:
    """spec.network: the NetworkPolicy the operator keeps on the LogStores
    (model.netpol).  A selector is a metav1.LabelSelector dict; None = unset
    (``{}`` is meaningful: every namespace)."""
    policies: bool = True
    client_namespace_selector: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class MonitoringSpec:
    """spec.monitoring: who may scrape the LogStores' HTTP/metrics port;
    None = the cluster's own namespace only."""
    namespace_selector: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TlsSpec:
    """spec.tls: the operator's PKI for the LogStores' gRPC port (service mode).
    90-day leaves (renewed at 30 days left) bound how long a leaked key is
    useful — this PKI has no revocation — while leaving a month to notice an
    operator that stopped renewing; the CA lives a year."""
    enabled: bool = True
    validity_days: int = 90
    ca_validity_days: int = 365
    issuer_ref: Mapping[str, str] | None = None  # cert-manager: accepted, not supported yet


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    etcd: EtcdSpec
    storage: StorageSpec
    mode: str = "embedded"
    replicas: int = 3
    quorum: Quorum = field(default_factory=Quorum)
    image: str = "picchio:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Any] = field(default_factory=dict)
    pod_template: PodTemplate = field(default_factory=PodTemplate)
    storage_size: str | None = None
    storage_class_name: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    deletion_policy: str = "Retain"
    gc: OrphanGc = field(default_factory=OrphanGc)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    tls: TlsSpec = field(default_factory=TlsSpec)

    @property
    def tls_on(self) -> bool:
        """The LogStores serve TLS (service mode with spec.tls.enabled).  With an
        issuerRef the operator issues nothing (not supported yet) and the pods
        wait for the Secret: never a silent fallback to plaintext."""
        return self.service_mode and self.tls.enabled

    @property
    def service_mode(self) -> bool:
        return self.mode == "service"

    @property
    def seeds(self) -> list[str]:
        """Client endpoints of the LogStores (empty in embedded mode)."""
        if not self.service_mode:
            return []
        return [f"{client_service_name(self.name)}.{self.namespace}.svc:{SERVICE_PORT}"]


def parse_cluster(body: Mapping[str, Any]) -> ClusterSpec:
    """A WoodpeckerCluster object (as kopf or the API returns it) → ClusterSpec."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    etcd = _get(spec, "etcd", {})
    storage = _get(spec, "storage", {})
    quorum = _get(spec, "quorum", {})
    lifecycle = _get(storage, "lifecycle", {})
    pt = _get(spec, "podTemplate", {})
    endpoints = tuple(_get(etcd, "endpoints", ()))
    if not endpoints:
        raise SpecError("spec.etcd.endpoints: at least one endpoint is required")
    size = _get(spec, "storageSize")
    network = _get(spec, "network", {})
    return ClusterSpec(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        mode=_get(spec, "mode", "embedded"),
        replicas=int(_get(spec, "replicas", 3)),
        quorum=Quorum(
            ensemble_size=int(_get(quorum, "ensembleSize", 3)),
            write_quorum=int(_get(quorum, "writeQuorum", 3)),
            ack_quorum=int(_get(quorum, "ackQuorum", 2)),
        ),
        image=_get(spec, "image", "picchio:0.1.0"),
        image_pull_policy=_get(spec, "imagePullPolicy", "IfNotPresent"),
        resources=dict(_get(spec, "resources", {})),
        pod_template=PodTemplate(
            labels=dict(_get(pt, "labels", {})),
            annotations=dict(_get(pt, "annotations", {})),
            node_selector=dict(_get(pt, "nodeSelector", {})),
            tolerations=tuple(_get(pt, "tolerations", ())),
            affinity=_get(pt, "affinity"),
            topology_spread_constraints=tuple(_get(pt, "topologySpreadConstraints", ())),
            priority_class_name=_get(pt, "priorityClassName"),
            service_account_name=_get(pt, "serviceAccountName"),
        ),
        storage_size=None if size in (None, "") else str(size),
        storage_class_name=_get(spec, "storageClassName"),
        etcd=EtcdSpec(
            endpoints=endpoints,
            root_path=_get(etcd, "rootPath", "by-dev"),
            credentials_secret=_get(etcd, "credentialsSecret"),
            tls_secret=_get(etcd, "tlsSecret"),
        ),
        storage=StorageSpec(
            type=_get(storage, "type", "minio"),
            endpoint=_get(storage, "endpoint"),
            region=_get(storage, "region", ""),
            bucket=_get(storage, "bucket"),
            root_path=_get(storage, "rootPath", "files"),
            credentials_secret=_get(storage, "credentialsSecret"),
            ca_secret=_get(storage, "caSecret"),
            create_bucket=bool(_get(storage, "createBucket", False)),
            pvc_retention=_get(storage, "pvcRetention", "Delete"),
            lifecycle=LifecycleSpec(
                enabled=bool(_get(lifecycle, "enabled", True)),
                abort_incomplete_multipart_upload_days=int(_get(lifecycle, "abortIncompleteMultipartUploadDays", 1)),
                tombstone_expiration_days=int(_get(lifecycle, "tombstoneExpirationDays", 7)),
            ),
        ),
        config=dict(_get(spec, "config", {})),
        deletion_policy=_get(spec, "deletionPolicy", "Retain"),
        gc=OrphanGc(
            scan_interval_seconds=int(_get(_get(spec, "gc", {}), "orphanScanIntervalSeconds", 3600)),
            grace_seconds=int(_get(_get(spec, "gc", {}), "orphanGraceSeconds", 3600)),
            mode=_get(_get(spec, "gc", {}), "orphans", "report"),
        ),
        network=NetworkSpec(policies=bool(_get(network, "policies", True)),
                            client_namespace_selector=_get(network, "clientNamespaceSelector")),
        monitoring=MonitoringSpec(namespace_selector=_get(_get(spec, "monitoring", {}), "namespaceSelector")),
        tls=TlsSpec(
            enabled=bool(_get(_get(spec, "tls", {}), "enabled", True)),
            validity_days=int(_get(_get(spec, "tls", {}), "validityDays", 90)),
            ca_validity_days=int(_get(_get(spec, "tls", {}), "caValidityDays", 365)),
            issuer_ref=dict(_get(_get(spec, "tls", {}), "issuerRef", {})) or None,
        ),
    )


@dataclass(frozen=True)
class Retention:
    seconds: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class LogSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    cluster_ref: str
    log_name: str
    retention: Retention = field(default_factory=Retention)
    truncate_to: str | None = None
    gc_interval_seconds: int = 60
    gc_dry_run: bool = False
    deletion_policy: str = "Retain"


def parse_log(body: Mapping[str, Any]) -> LogSpec:
    """A WoodpeckerLog object → LogSpec (``logName`` defaults to metadata.name)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    ret = _get(spec, "retention", {})
    gc = _get(spec, "gc", {})
    cluster_ref = _get(spec, "clusterRef")
    if not cluster_ref:
        raise SpecError("spec.clusterRef is required")
    return LogSpec(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        cluster_ref=cluster_ref,
        log_name=_get(spec, "logName") or meta.get("name", ""),
        retention=Retention(
            seconds=None if _get(ret, "seconds") is None else int(ret["seconds"]),
            bytes=None if _get(ret, "bytes") is None else int(ret["bytes"]),
        ),
        truncate_to=_get(spec, "truncateTo"),
        gc_interval_seconds=int(_get(gc, "intervalSeconds", 60)),
        gc_dry_run=bool(_get(gc, "dryRun", False)),
        deletion_policy=_get(spec, "deletionPolicy", "Retain"),
    )
