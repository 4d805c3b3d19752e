"""The ``milvus.yaml`` sections that make a Milvus 2.6 use a WoodpeckerCluster
as its WAL (data key ``milvus.yaml`` of the client ConfigMap ``<name>-client``).

Milvus reads its own ``etcd:``, ``minio:`` and ``woodpecker:`` sections and
builds Woodpecker's configuration from them (milvus
``pkg/streaming/walimpls/impls/wp/builder.go``, ``setCustomWpConfig``), so only
keys *Woodpecker* defines are rendered, in the forms Milvus parses:

* picchio's extras mean nothing there.  The quorum becomes Woodpecker's
  ``quorumSelectStrategy.replicas`` (ensemble = write quorum = replicas, ack =
  majority; only 3 and 5) and the LogStores are found through
  ``quorumBufferPools``, a JSON *string* in Milvus (it ``json.Unmarshal``\\ s the
  value), whose seed is the cluster's client Service: any LogStore answers
  Woodpecker's ``SelectNodes`` from the registrations in etcd.
* Woodpecker's durations go out with their unit (``200ms``, ``10m``): Milvus
  parses them with ``time.ParseDuration``-like rules where a bare number means
  seconds, while Woodpecker's own files mean milliseconds for some keys.
* ``etcd.endpoints`` is the comma-separated string Milvus ships.
* Milvus stores its Woodpecker objects under ``<minio.rootPath>/wp`` (the rest
  of ``minio.rootPath`` holds its binlogs), so a cluster whose
  ``spec.storage.rootPath`` is ``X/wp`` is rendered as ``minio.rootPath: X``.
  Any other root cannot be expressed: the key is left out and a comment says
  what to change — rendering it anyway would put Milvus's WAL outside the
  prefix the operator collects and scans, and its binlogs inside it.
* ``minio.createBucket`` is dropped (Milvus forces it on for Woodpecker).

No secrets: the comments say which Secret holds them.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from logstore.config import SETTINGS, Config

from .constants import etcd_client_secret_name
from .spec import ClusterSpec

WOODPECKER_POOL = "default-region-pool"  # Woodpecker's default quorumBufferPools name
MILVUS_WAL_SUFFIX = "/wp"  # builder.go: wpConfig.Minio.RootPath = minio.rootPath + "/wp"

_BY_KEY = {s.key: s for s in SETTINGS}
_POOLS = "woodpecker.client.quorum.quorumBufferPools"
_STRATEGY = "woodpecker.client.quorum.quorumSelectStrategy."
# Woodpecker keys of the client file that are not carried over, and why
_DROPPED = {
    "minio.createBucket": "Milvus sets it itself",
    "minio.rootPath": "mapped: Milvus appends /wp",
    _POOLS: "re-rendered as the JSON string Milvus decodes",
}


def woodpecker_replicas(c: ClusterSpec) -> int | None:
    """``spec.quorum`` as Woodpecker's ``replicas`` when Woodpecker can say it
    exactly (ensemble = write = 3 or 5, ack = majority), else None."""
    q = c.quorum
    if q.ensemble_size == q.write_quorum and q.ensemble_size in (3, 5) and q.ack_quorum == q.ensemble_size // 2 + 1:
        return q.ensemble_size
    return None


def _go_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    ms = seconds * 1000
    return f"{int(ms)}ms" if float(ms).is_integer() else f"{round(seconds * 1e6)}us"


def _milvus_value(key: str, parsed: Any) -> Any:
    s = _BY_KEY[key]
    if s.type == "list[str]":
        return ",".join(parsed)
    if s.type == "duration":
        if key.startswith("woodpecker."):
            return _go_duration(parsed)
        return round(parsed * 1000) if s.unit == "ms" else round(parsed)  # Milvus reads etcd/minio ones as ints
    return parsed  # sizes as bytes; ints (retentionPolicy.ttl: seconds, as Woodpecker's file), strings, booleans


def render_milvus_config(c: ClusterSpec, values: Mapping[str, Any]) -> str:
    """The client configuration ``values`` (dotted, as in woodpecker.yaml) →
    the ``mq``/``etcd``/``minio``/``woodpecker`` sections of a milvus.yaml;
    "" when the cluster's storage is not object storage (Milvus's Woodpecker
    keeps a service-mode or embedded WAL in minio)."""
    from .config import nest  # config imports this module

    if c.storage.type != "minio":
        return ""
    parsed = Config.from_dict(values)
    out: dict[str, Any] = {"mq.type": "woodpecker"}
    notes: list[list[str]] = []  # each a few comment lines
    for key in sorted(values):
        s = _BY_KEY[key]
        if s.kind in ("woodpecker", "inert") and not s.secret and key not in _DROPPED:
            out[key] = _milvus_value(key, parsed[key])
    root = str(values.get("minio.rootPath", "")).strip("/")
    if root.endswith(MILVUS_WAL_SUFFIX) and len(root) > len(MILVUS_WAL_SUFFIX):
        out["minio.rootPath"] = root[: -len(MILVUS_WAL_SUFFIX)]
    else:
        notes += [[f"minio.rootPath is not set: Milvus keeps its WAL under <minio.rootPath>{MILVUS_WAL_SUFFIX} and its",
                  f"binlogs under <minio.rootPath>, but this cluster's spec.storage.rootPath is {root!r}. For a",
                  f"Milvus WAL, create the cluster with spec.storage.rootPath: <Milvus minio.rootPath>{MILVUS_WAL_SUFFIX}",
                  "(e.g. files/wp); this file then sets minio.rootPath to match."]]
    if c.service_mode:
        out["woodpecker.storage.type"] = "service"
        out[_POOLS] = json.dumps([{"name": WOODPECKER_POOL, "seeds": list(c.seeds)}], separators=(",", ":"))
        replicas = woodpecker_replicas(c)
        if replicas is None:
            replicas = c.quorum.ensemble_size if c.quorum.ensemble_size in (3, 5) else 3
            q = c.quorum
            notes += [[f"spec.quorum {q.ensemble_size}/{q.write_quorum}/{q.ack_quorum} (ensemble/write/ack) has no "
                      f"Woodpecker equivalent: replicas: {replicas}",
                      f"means {replicas}/{replicas}/{replicas // 2 + 1} for Milvus's writers."]]
        out[_STRATEGY + "replicas"] = replicas
        out[_STRATEGY + "strategy"] = "random"
        if c.tls_on:
            notes += [["the LogStores demand TLS client certificates (spec.tls), but picchio's",
                      "woodpecker.logstore.tls.* keys are not Woodpecker's, so this file sets none: until",
                      "Milvus's client can present one, a Milvus WAL needs spec.tls.enabled: false."]]
        if values.get("woodpecker.client.quorum.strategy") == "zone-spread":
            notes += [["woodpecker.client.quorum.strategy zone-spread applies to picchio clients; the LogStores answer",
                      "Woodpecker's SelectNodes without spreading zones, so Milvus's ensembles are random."]]
    lines = [f"# milvus.yaml sections for a Milvus 2.6 whose WAL is WoodpeckerCluster {c.namespace}/{c.name}",
             "# (rendered by picchio-operator): merge them into milvus.yaml or a user.yaml overlay.",
             "# Credentials are not in this file; give Milvus its own:"]
    if c.storage.credentials_secret:
        lines.append(f"#   minio.accessKeyID/minio.secretAccessKey (Secret {c.storage.credentials_secret}, "
                     "keys accessKeyID/secretAccessKey)")
    if c.etcd.credentials_secret:
        lines.append(f"#   etcd.auth.userName/etcd.auth.password (Secret {etcd_client_secret_name(c.name)} grants "
                     "only this cluster's woodpecker prefix; Milvus's own metadata under etcd.rootPath needs more)")
    if len(lines) == 3:
        lines[2] = "# No credentials are configured for this cluster."
    lines += [f"# NOTE: {n}" if i == 0 else f"#   {n}" for note in notes for i, n in enumerate(note)]
    return "\n".join(lines) + "\n" + yaml.safe_dump(nest(out), sort_keys=True, default_flow_style=False)
