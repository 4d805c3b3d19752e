"""The operator process: ``picchio operator run`` → :func:`run`.

kopf does the watching, retries, finalizers and peering; this module decides
the settings that make it fit the house style:

* handler progress and the diff base live in annotations under
  ``picchio.dev/`` — the CRDs' structural status schema would prune kopf's
  default ``status.kopf`` block;
* peering: every instance gets a random priority, so among several replicas
  exactly one (the highest) is active and the others pause — kopf freezes
  *all* instances that share one priority;
* events are posted only for warnings (handler INFO logs would flood them);
* the liveness endpoint is kopf's; metrics are served by :mod:`.metrics`;
* SIGTERM/SIGINT stop kopf gracefully; log clients and the API client are
  closed in the cleanup handler.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from .adapters.kube import Kube
from .handlers import build_registry
from .metrics import MetricsServer
from .model.constants import ANNOTATION_PREFIX, FINALIZER
from .runtime import KopfLogger, Runtime, Tunables, operator_namespace

log = logging.getLogger("picchio_operator")


@dataclass
class Options:
    namespaces: list[str]
    peering: str | None
    priority: int
    peering_lifetime: int
    liveness: str | None
    metrics_host: str
    metrics_port: int
    log_format: str
    verbose: bool
    kubeconfig: str | None
    resync_seconds: float
    tick_seconds: float
    tls_overlap_seconds: float = 600.0


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="picchio operator run",
                                description="Run the picchio operator (WoodpeckerCluster, WoodpeckerLog).")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="serve only this namespace (repeatable; default: all namespaces)")
    p.add_argument("--peering", default="picchio-operator",
                   help="kopf peering object name (ClusterKopfPeering, or KopfPeering with --namespace)")
    p.add_argument("--standalone", action="store_true", help="no peering (a single instance, or tests)")
    p.add_argument("--priority", type=int, default=None,
                   help="peering priority (default: random, so exactly one replica is active)")
    p.add_argument("--peering-lifetime", type=int, default=60,
                   help="seconds a silent peer counts as alive: after the active instance dies, a standby "
                        "takes over within about this long")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                   help="liveness/readiness endpoint URL ('' disables)")
    p.add_argument("--metrics-host", default="0.0.0.0")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0 disables)")
    p.add_argument("--log-format", choices=("plain", "full", "json"), default="full")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster config, else $KUBECONFIG/~/.kube/config")
    p.add_argument("--resync-seconds", type=float, default=60.0, help="full WoodpeckerCluster re-check interval")
    p.add_argument("--tick-seconds", type=float, default=10.0, help="WoodpeckerLog status refresh interval")
    p.add_argument("--tls-overlap-seconds", type=float, default=600.0,
                   help="spec.tls CA rotation: seconds a new CA is trusted before it signs, and an old one after")
    a = p.parse_args(list(argv) if argv is not None else None)
    return Options(
        namespaces=a.namespace, peering=None if a.standalone else a.peering,
        priority=a.priority if a.priority is not None else random.SystemRandom().randint(1, 2**30),
        peering_lifetime=a.peering_lifetime,
        liveness=a.liveness or None, metrics_host=a.metrics_host, metrics_port=a.metrics_port,
        log_format=a.log_format, verbose=a.verbose, kubeconfig=a.kubeconfig,
        resync_seconds=a.resync_seconds, tick_seconds=a.tick_seconds, tls_overlap_seconds=a.tls_overlap_seconds)


def make_api_client(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return config.new_client_from_config(config_file=kubeconfig or os.environ.get("KUBECONFIG") or None)


def make_settings(o: Options) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.persistence.finalizer = FINALIZER
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    s.posting.level = logging.WARNING
    s.scanning.disabled = True  # CRDs are installed before the operator; no CRD watch permission needed
    s.networking.request_timeout = 60.0
    s.networking.connect_timeout = 10.0
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    if o.peering:
        s.peering.name = o.peering
        s.peering.priority = o.priority
        s.peering.lifetime = o.peering_lifetime
        s.peering.stealth = True
    else:
        s.peering.standalone = True
    return s


def build(o: Options, api: Any) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings, kopf.Memo]:
    """Everything ``kopf.operator`` needs; separate from :func:`run` so tests
    can run the operator in-process with their own API client."""
    rt = Runtime(kube=Kube(api), tunables=Tunables(cluster_resync_seconds=o.resync_seconds,
                                                   log_tick_seconds=o.tick_seconds,
                                                   tls_overlap_seconds=o.tls_overlap_seconds),
                 operator_namespace=operator_namespace())
    registry = build_registry(resync_seconds=o.resync_seconds, tick_seconds=o.tick_seconds)
    server = MetricsServer(rt.metrics, o.metrics_host, o.metrics_port) if o.metrics_port else None

    async def startup(logger: KopfLogger, **_: Any) -> None:
        if server:
            await server.start()
            logger.info("metrics on http://%s:%d/metrics", o.metrics_host, o.metrics_port)

    # Log records (ours, and kopf's — which it also posts as Events at WARNING) are redacted of
    # every Secret value the operator has read: installed on the handlers present at start-up.
    filtered: list[logging.Handler] = []

    async def install_redaction(**_: Any) -> None:
        for lg in (logging.getLogger(), logging.getLogger("kopf.objects"), logging.getLogger("kopf")):
            for h in lg.handlers:
                if rt.kube.redactor not in h.filters:
                    h.addFilter(rt.kube.redactor)
                    filtered.append(h)

    async def cleanup(logger: KopfLogger, **_: Any) -> None:
        for h in filtered:
            h.removeFilter(rt.kube.redactor)
        rt.tls_files.close()
        await rt.logs.close()
        if server:
            await server.stop()
        logger.info("operator stopped")

    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(api)

    kopf.on.startup(registry=registry)(install_redaction)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.login(registry=registry)(login)
    return registry, make_settings(o), kopf.Memo(rt=rt)


def connection_info(api: Any) -> kopf.ConnectionInfo:
    """kopf authenticates with the same credentials as our API client (one
    source of truth for in-cluster, kubeconfig and test clusters)."""
    cfg = api.configuration
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None, scheme=scheme, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file)


async def serve(o: Options, api: Any, *, stop_flag: Any = None, ready_flag: Any = None) -> None:
    registry, settings, memo = build(o, api)
    await kopf.operator(
        registry=registry, settings=settings, memo=memo,
        clusterwide=not o.namespaces, namespaces=o.namespaces,
        standalone=o.peering is None, priority=o.priority if o.peering else None,
        peering_name=o.peering, liveness_endpoint=o.liveness,
        stop_flag=stop_flag, ready_flag=ready_flag)


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``picchio operator run``; returns the exit code."""
    o = parse_args(argv)
    kopf.configure(verbose=o.verbose, log_format=kopf.LogFormat[o.log_format.upper()])
    api = make_api_client(o.kubeconfig)
    try:
        asyncio.run(serve(o, api))
    except KeyboardInterrupt:
        pass
    finally:
        api.close()
    return 0


class InProcessOperator:
    """Run the operator in a background thread (tests, ``make demo``):
    ``with InProcessOperator(api, ["--standalone"]): ...``."""

    def __init__(self, api: Any, argv: Sequence[str] = ("--standalone", "--metrics-port", "0", "--liveness", "")):
        self.options = parse_args(argv)
        self.api = api
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="picchio-operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(serve(self.options, self.api, stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as e:  # noqa: BLE001 - reported to the test through .error
            self.error = e

    def __enter__(self) -> InProcessOperator:
        self._thread.start()
        if not self._ready.wait(60) and self.error is None:
            raise TimeoutError("operator did not become ready in 60s")
        if self.error:
            raise RuntimeError("operator failed to start") from self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


if __name__ == "__main__":  # python -m picchio_operator.main
    sys.exit(run())
