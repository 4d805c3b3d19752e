"""What every handler shares, held in kopf's memo: the Kubernetes adapter,
the pool of log clients, per-object locks, metrics and tunables.

Why per-object locks: kopf runs an object's change handlers, its timer and
the StatefulSet watcher concurrently; each computes conditions from a fresh
read and writes the whole list, so two passes on one object must not
interleave (last writer would erase the other's transition times)."""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from logstore.redact import redact

from .adapters.kube import Kube
from .adapters.logs import LogClients
from .adapters.tlsfiles import TlsFiles
from .metrics import Metrics
from .model.constants import DEFAULT_OPERATOR_NAMESPACE, OPERATOR_NAMESPACE_ENV

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass
class Tunables:
    cluster_resync_seconds: float = 60.0   # full cluster reconcile (drift, storage re-check)
    log_tick_seconds: float = 10.0         # WoodpeckerLog status refresh; GC when due
    etcd_timeout: float = 5.0
    s3_timeout: float = 10.0
    log_call_timeout: float = 60.0
    orphan_scan_timeout: float = 600.0     # one whole scan (100,000 objects: see the README's figures)
    purge_batch_objects: int = 50_000      # objects deleted per deletion pass (then retried)
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    # spec.tls CA rotation: how long a new CA is trusted before it signs, and the old one after.  Covers the
    # kubelet's refresh of mounted Secrets (about a minute or two by default) and the LogStores' reload.
    tls_overlap_seconds: float = 600.0


KopfLogger = logging.Logger | logging.LoggerAdapter[Any]  # what kopf passes as ``logger``


class Events:
    """Kubernetes events, posted through kopf's queue (never blocks a
    handler).  ``kopf.event`` rather than ``kopf.info``: the latter obeys the
    posting level, which the operator raises to WARNING so that handler logs
    do not flood events — these are the events users asked for.  A separate
    object so tests can record events instead."""

    redactor: Any = None  # the Kube adapter's SecretFilter (set by Runtime): messages are redacted

    def _clean(self, message: str) -> str:
        return redact(message, self.redactor.secrets) if self.redactor is not None else message

    def info(self, body: Any, reason: str, message: str) -> None:
        kopf.event(body, type="Normal", reason=reason, message=self._clean(message))

    def warn(self, body: Any, reason: str, message: str) -> None:
        kopf.event(body, type="Warning", reason=reason, message=self._clean(message))


class Locks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: str) -> None:
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]


@dataclass
class Runtime:
    kube: Kube
    logs: LogClients = field(default_factory=LogClients)
    locks: Locks = field(default_factory=Locks)
    metrics: Metrics = field(default_factory=Metrics)
    tunables: Tunables = field(default_factory=Tunables)
    events: Events = field(default_factory=Events)
    tls_files: TlsFiles = field(default_factory=TlsFiles)  # Secrets' TLS material as files for our own clients
    operator_certs: dict[str, Any] = field(default_factory=dict)  # cluster uid → our admin:operator model.pki.Pair
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE  # where our pods run: a NetworkPolicy peer

    def __post_init__(self) -> None:
        if isinstance(self.events, Events):  # tests may record events with an object of their own
            self.events.redactor = getattr(self.kube, "redactor", None)

    def backoff(self, retry: int) -> float:
        """Delay before kopf retries a failed handler: exponential, capped."""
        return min(self.tunables.backoff_max, self.tunables.backoff_base * 2 ** min(max(retry, 0), 10))


def operator_namespace(env: dict[str, str] | None = None, sa_file: str = SA_NAMESPACE_FILE) -> str:
    """The namespace the operator's pods run in, for the LogStores'
    NetworkPolicy: the downward API's ``POD_NAMESPACE``
    (manifests/deployment.yaml), else the service account's namespace file
    (any in-cluster pod), else the manifests' ``picchio-system`` (an operator
    outside the cluster: its traffic does not come from a pod anyway)."""
    value = (os.environ if env is None else env).get(OPERATOR_NAMESPACE_ENV, "").strip()
    if value:
        return value
    try:
        with open(sa_file, encoding="utf-8") as f:
            return f.read().strip() or DEFAULT_OPERATOR_NAMESPACE
    except OSError:
        return DEFAULT_OPERATOR_NAMESPACE


def utcnow() -> datetime:
    return datetime.now(UTC)
