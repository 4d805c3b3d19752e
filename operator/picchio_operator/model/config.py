"""Render a cluster's ``woodpecker.yaml`` from its spec and ``spec.config``.

The WoodpeckerCluster spec owns the connection settings (etcd, storage); users
may override only ``woodpecker.*`` tuning keys through ``spec.config``.  Those
are Woodpecker's own keys and units (``segmentSyncPolicy.maxInterval: 200`` is
milliseconds, ``maxSize: 256M`` is binary) plus picchio's extras, so a
Woodpecker/Milvus user's settings carry over and the rendered file is one they
recognise.  The overrides are validated against picchio's single configuration
table (``logstore.config.SETTINGS``), so an unknown or mistyped key becomes a
status condition naming the key instead of a pod that crash-loops on start.
Milvus's spelling of a key (``segmentCompactionPolicy.maxSize``) is rendered
under Woodpecker's name (``maxBytes``).

Secrets never land in the ConfigMap: credentials reach the pods as environment
variables (``constants.ENV_SECRET_KEYS``), and the operator's own clients get
them merged in by ``client_config``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from logstore.config import SETTINGS, go_path_join, parse_size, validate_overrides
from logstore.errors import ConfigError

from .milvus import WOODPECKER_POOL, render_milvus_config, woodpecker_replicas
from .constants import (CLIENT_TLS_DIR, ETCD_TLS_DIR, LOGSTORE_TLS_DIR, STORAGE_CA_DIR, TLS_CA, TLS_CERT, TLS_KEY,
                        client_tls_secret_name, etcd_client_secret_name, reader_tls_secret_name)
from .spec import ClusterSpec, SpecError

_BY_KEY = {s.key: s for s in SETTINGS}
# woodpecker.* keys that the spec itself decides; overriding them through
# spec.config would silently contradict the spec.
_SPEC_OWNED = {
    "woodpecker.storage.type": "spec.storage.type",
    "woodpecker.client.quorum.ensembleSize": "spec.quorum.ensembleSize",
    "woodpecker.client.quorum.writeQuorum": "spec.quorum.writeQuorum",
    "woodpecker.client.quorum.ackQuorum": "spec.quorum.ackQuorum",
    "woodpecker.client.quorum.quorumSelectStrategy.replicas": "spec.quorum",
    **{f"woodpecker.logstore.tls.{key}": "spec.tls" for key in (
        "enabled", "certFile", "keyFile", "caFile", "requireClientCert", "clientCertFile", "clientKeyFile")},
}
_TLS = "woodpecker.logstore.tls."
_SERVER_ONLY_TLS = (_TLS + "certFile", _TLS + "keyFile", _TLS + "requireClientCert")


class InvalidConfig(ValueError):
    """spec.config (or the spec) cannot be rendered; the message names the key."""


@dataclass(frozen=True)
class RenderedConfig:
    values: dict[str, Any]  # dotted key → value as written in woodpecker.yaml
    text: str               # the woodpecker.yaml document
    hash: str               # sha256 of text (and milvus), 16 hex digits
    milvus: str = ""        # client config only: the milvus.yaml sections (render_milvus_config)

    @property
    def meta_prefix(self) -> str:
        """etcd prefix of the cluster's metadata ({etcd.rootPath}/{woodpecker.meta.prefix})."""
        prefix = go_path_join(self.values["etcd.rootPath"], self.values.get("woodpecker.meta.prefix", "woodpecker"))
        return prefix if prefix not in ("", ".") else "woodpecker"


def _flatten_raw(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested-or-dotted mapping → {full key: value as the user wrote it}.
    Only called after ``validate_overrides`` accepted ``d``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        full = f"{prefix}{k}"
        s = _BY_KEY.get(full)
        if s is not None:
            target = _BY_KEY.get(s.alias_of)
            same_unit = target is not None and (target.type, target.unit) == (s.type, s.unit)
            out[target.key if same_unit else full] = v
        elif isinstance(v, Mapping):
            out.update(_flatten_raw(v, full + "."))
    return out


def validate_user_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check spec.config; return the overrides by dotted key (values as written,
    so ``"128M"`` stays ``"128M"`` in the rendered file)."""
    try:
        validate_overrides(config)
    except ConfigError as e:
        raise InvalidConfig(f"spec.config: {e}") from None
    raw = _flatten_raw(config)
    for key in raw:
        if not key.startswith("woodpecker."):
            raise InvalidConfig(f"spec.config: {key}: only woodpecker.* keys may be set here "
                                f"(connection settings come from spec.etcd and spec.storage)")
        if key in _SPEC_OWNED:
            raise InvalidConfig(f"spec.config: {key}: set {_SPEC_OWNED[key]} instead")
    return raw


def spec_values(c: ClusterSpec) -> dict[str, Any]:
    """The connection settings the spec decides, by dotted key."""
    v: dict[str, Any] = {
        "etcd.endpoints": list(c.etcd.endpoints),
        "etcd.rootPath": c.etcd.root_path,
        "woodpecker.storage.type": c.storage.type,
        "minio.rootPath": c.storage.root_path.strip("/"),
    }
    if c.storage.type == "minio":
        try:
            host, port, ssl = c.storage.endpoint_parts()
        except SpecError as e:
            raise InvalidConfig(str(e)) from None
        if not c.storage.bucket:
            raise InvalidConfig("spec.storage.bucket is required when spec.storage.type is minio")
        v.update({
            "minio.address": host,
            "minio.port": port,
            "minio.useSSL": ssl,
            "minio.bucketName": c.storage.bucket,
            "minio.region": c.storage.region,
            # The operator creates the bucket (spec.storage.createBucket);
            # LogStores and clients must not need that permission.
            "minio.createBucket": False,
        })
    if c.etcd.credentials_secret:
        v["etcd.auth.enabled"] = True  # the credentials themselves come as environment variables
    if c.etcd.tls_secret:  # files of the mounted Secret (model.cluster.statefulset), never their contents
        v.update({"etcd.ssl.enabled": True,
                  "etcd.ssl.tlsCACert": f"{ETCD_TLS_DIR}/{TLS_CA}",
                  "etcd.ssl.tlsCert": f"{ETCD_TLS_DIR}/{TLS_CERT}",
                  "etcd.ssl.tlsKey": f"{ETCD_TLS_DIR}/{TLS_KEY}"})
    if c.storage.type == "minio" and c.storage.ca_secret:
        if not v["minio.useSSL"]:
            raise InvalidConfig("spec.storage.caSecret needs an https:// spec.storage.endpoint")
        v["minio.ssl.tlsCACert"] = f"{STORAGE_CA_DIR}/{TLS_CA}"
    if c.tls_on:  # files of the mounted <name>-logstore-tls (model.pki); the LogStores reload them in place
        v.update({_TLS + "enabled": True, _TLS + "certFile": f"{LOGSTORE_TLS_DIR}/{TLS_CERT}",
                  _TLS + "keyFile": f"{LOGSTORE_TLS_DIR}/{TLS_KEY}", _TLS + "caFile": f"{LOGSTORE_TLS_DIR}/{TLS_CA}",
                  _TLS + "requireClientCert": True})
    if c.service_mode and c.storage_size:
        # the LogStores' staging budget is their own volume, not the fill level of whatever
        # file system backs it (a shared node disk would make them refuse writes)
        try:
            v["woodpecker.logstore.disk.maxBytes"] = parse_size(c.storage_size, "spec.storageSize")
        except ConfigError:
            pass  # an exotic quantity: leave the file-system check in force
    return v


def render_config(c: ClusterSpec) -> RenderedConfig:
    """spec + validated spec.config → woodpecker.yaml (nested, keys sorted)."""
    values = spec_values(c)
    values.update(validate_user_config(c.config))
    try:  # the whole file must load with the same table the pods use
        validate_overrides(values)
    except ConfigError as e:
        raise InvalidConfig(str(e)) from None
    text = "# Rendered by picchio-operator from WoodpeckerCluster " \
           f"{c.namespace}/{c.name}; edit the custom resource, not this file.\n" \
           + yaml.safe_dump(nest(values), sort_keys=True, default_flow_style=False)
    return RenderedConfig(values=values, text=text, hash=hashlib.sha256(text.encode()).hexdigest()[:16])


def render_client_config(c: ClusterSpec, server: RenderedConfig | None = None) -> RenderedConfig:
    """The woodpecker.yaml an *application* uses (ConfigMap ``<name>-client``).

    Same connection settings and tuning as the LogStores' file, except: in
    service mode ``woodpecker.storage.type`` is ``service`` (appends go to the
    LogStores, which clients find through their registrations in etcd; sealed
    segments are read from the bucket, hence the minio settings) and the
    client's quorum comes from ``spec.quorum``.  In embedded mode it is the
    storage the clients write to themselves.  No credentials."""
    values = dict((server or render_config(c)).values)
    if c.service_mode:
        values.update({
            "woodpecker.storage.type": "service",
            "woodpecker.client.quorum.ensembleSize": c.quorum.ensemble_size,
            "woodpecker.client.quorum.writeQuorum": c.quorum.write_quorum,
            "woodpecker.client.quorum.ackQuorum": c.quorum.ack_quorum,
            # what Woodpecker's own (Go) client reads from this file: it asks a seed
            # (SelectNodes) for an ensemble; picchio's client ignores the key and reads
            # the LogStores' registrations in etcd
            "woodpecker.client.quorum.quorumBufferPools": [{"name": WOODPECKER_POOL, "seeds": list(c.seeds)}],
        })
        replicas = woodpecker_replicas(c)
        if replicas is not None:
            values["woodpecker.client.quorum.quorumSelectStrategy.replicas"] = replicas
    if c.tls_on:  # the client side of spec.tls: a writer/reader certificate mounted at CLIENT_TLS_DIR
        for key in _SERVER_ONLY_TLS:
            values.pop(key, None)
        values.update({_TLS + "caFile": f"{CLIENT_TLS_DIR}/{TLS_CA}",
                       _TLS + "clientCertFile": f"{CLIENT_TLS_DIR}/{TLS_CERT}",
                       _TLS + "clientKeyFile": f"{CLIENT_TLS_DIR}/{TLS_KEY}"})
    try:
        validate_overrides(values)
    except ConfigError as e:
        raise InvalidConfig(str(e)) from None
    lines = [f"# Client configuration of WoodpeckerCluster {c.namespace}/{c.name}, rendered by picchio-operator.",
             "# Credentials are not in this file; pass them as environment variables:"]
    if c.etcd.credentials_secret:
        lines.append(f"#   PICCHIO_ETCD_AUTH_USERNAME/PICCHIO_ETCD_AUTH_PASSWORD from Secret "
                     f"{etcd_client_secret_name(c.name)} (keys username/password)")
    if c.storage.type == "minio" and c.storage.credentials_secret:
        lines.append(f"#   PICCHIO_MINIO_ACCESSKEYID/PICCHIO_MINIO_SECRETACCESSKEY from Secret "
                     f"{c.storage.credentials_secret} (keys accessKeyID/secretAccessKey)")
    if len(lines) == 2:
        lines[1] = "# No credentials are configured for this cluster."
    if c.service_mode:
        lines += ["# quorumBufferPools is for Woodpecker's own client (it asks a seed for an ensemble);",
                  "# picchio's client finds the LogStores in etcd and lists the key as no-effect at start-up."]
    if c.etcd.tls_secret:
        lines.append(f"# Mount Secret {c.etcd.tls_secret} (ca.crt, tls.crt, tls.key) at {ETCD_TLS_DIR}: "
                     "etcd.ssl.* below name its files.")
    if c.storage.type == "minio" and c.storage.ca_secret:
        lines.append(f"# Mount Secret {c.storage.ca_secret} (ca.crt) at {STORAGE_CA_DIR}: "
                     "minio.ssl.tlsCACert below names it.")
    if c.tls_on:
        lines += [f"# Mount Secret {client_tls_secret_name(c.name)} (writer; {reader_tls_secret_name(c.name)} to only read) "
                  f"at {CLIENT_TLS_DIR}",
                  "# as a whole volume (no subPath: renewed certificates reach you): woodpecker.logstore.tls.* "
                  "names its files."]
    text = "\n".join(lines) + "\n" + yaml.safe_dump(nest(values), sort_keys=True, default_flow_style=False)
    milvus = render_milvus_config(c, values)
    return RenderedConfig(values=values, text=text, milvus=milvus,
                          hash=hashlib.sha256((text + milvus).encode()).hexdigest()[:16])


def client_config(rendered: RenderedConfig, secrets: Mapping[str, str]) -> dict[str, Any]:
    """The dotted configuration the operator's own ``logstore.Client`` uses:
    the rendered file plus credentials (``minio.accessKeyID`` …) from Secrets."""
    out = dict(rendered.values)
    out.update({k: v for k, v in secrets.items() if v is not None})
    return out


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b.c": 1} → {"a": {"b": {"c": 1}}} (the woodpecker.yaml layout)."""
    root: dict[str, Any] = {}
    for key in sorted(values):
        node = root
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = values[key]
    return root
