"""A real, local Kubernetes control plane for the operator's tests.

etcd 3.6, kube-apiserver, kube-controller-manager and kube-scheduler are the
upstream programs (built from their Go modules, see build.py); kwok plays the
kubelets of 2-3 fake nodes, so pods are scheduled, become Running/Ready and
get pod IPs without any container runtime.  Why not kind: it needs container
images, which cannot be pulled here, and a node image that takes minutes to
boot; this cluster is up in about 10 s and exercises the same API server,
admission, RBAC, StatefulSet controller, garbage collector and scheduler.

Everything binds 127.0.0.1 on free ports.  kwok hands out pod IPs from
127.100.0.0/16 (and node IP 127.0.0.1), so anything that dials a pod IP by
mistake stays on this machine.  The cost: the legacy v1 Endpoints controller
refuses loopback addresses, so Services get EndpointSlices but no Endpoints.

Each process is a :class:`~picchio_harness.procs.Proc` with its own PID; the
state file ``<workdir>/cluster.json`` records them so another process
(``picchio dev cluster down``) can stop exactly those PIDs.
"""
from __future__ import annotations

import os
import shutil
import ssl
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from logstore.dev.state import write_state_file

from .build import component_binary
from .etcd import EtcdServer, etcd36_binary, start_etcd
from .pki import CertificateAuthority, CertPair, service_account_keys, write_kubeconfig
from .procs import Proc, free_port

STATE_FILE = "cluster.json"
SERVICE_CIDR = "10.96.0.0/16"   # allocation only; nothing routes to it
POD_CIDR = "127.100.0.1/16"     # kwok's fake pod IPs: loopback on purpose (see module doc)
NODE_IP = "127.0.0.1"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
_API_TIMEOUT = 10  # seconds per API call during bootstrap


def _tls_context(ca: Path | None, client: CertPair | None = None) -> ssl.SSLContext:
    if ca is None:
        # Only for the loopback health endpoints of kcm/scheduler, which serve
        # a self-signed certificate they made in memory.
        ctx = ssl._create_unverified_context()  # noqa: S323
    else:
        ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
        return r.status == 200


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    """Poll until ``check()`` holds or the deadline passes (exceptions count
    as "not yet"); raise TimeoutError naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - a probe may fail in many ways while starting
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not true after {timeout:.0f}s" + (f" (last error: {last!r})" if last else ""))


@dataclass
class LocalCluster:
    """A running control plane.  ``kubeconfig`` is an admin (system:masters)
    kubeconfig; ``api_client()`` gives a ready kubernetes.client.ApiClient."""

    workdir: Path
    kubeconfig: Path
    server: str
    etcd: EtcdServer | None = None
    procs: list[Proc] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def state(self) -> dict[str, Any]:
        procs = ([self.etcd.proc.record()] if self.etcd else []) + [p.record() for p in self.procs]
        return {"kind": "cluster", "workdir": str(self.workdir), "kubeconfig": str(self.kubeconfig),
                "server": self.server, "etcd": self.etcd.endpoint if self.etcd else None,
                "nodes": self.nodes, "processes": procs}

    def write_state(self) -> Path:
        path = self.workdir / STATE_FILE
        write_state_file(path, self.state())
        return path

    def detach(self) -> None:
        """Let every process outlive this interpreter (CLI ``up``)."""
        for p in self.procs:
            p.detach()
        if self.etcd:
            self.etcd.proc.detach()

    def stop(self) -> None:
        """Stop in reverse start order, etcd last, so no component spends its
        shutdown retrying against a store that is already gone."""
        for p in reversed(self.procs):
            p.stop()
        if self.etcd:
            self.etcd.stop()
        (self.workdir / STATE_FILE).unlink(missing_ok=True)


def _node(name: str, zone: str) -> dict[str, Any]:
    """A Node that kwok manages (annotation) and the scheduler can place pods
    on.  Zone labels let the operator's anti-affinity/topology logic work."""
    cap = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok",
                       "topology.kubernetes.io/zone": zone, "node-role.kubernetes.io/worker": ""},
        },
        "spec": {},
        "status": {"capacity": cap, "allocatable": cap},  # kwok fills in conditions, nodeInfo, addresses
    }


def _apiserver_argv(binary: str, d: Path, port: int, etcd: EtcdServer, ca: CertificateAuthority,
                    serving: CertPair, sa: CertPair) -> list[str]:
    return [
        binary,
        f"--etcd-servers={etcd.url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
        f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={ca.pair.cert}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",  # no kubernetes Endpoints to 127.0.0.1 (invalid anyway)
        "--allow-privileged=true",
        "--profiling=false",
        f"--cert-dir={d / 'apiserver-certs'}",
    ]


def start_cluster(workdir: Path, nodes: int = 3, timeout: float = 120.0) -> LocalCluster:
    """Start etcd, the control plane, kwok and the volume provisioner under
    ``workdir`` (wiped first), create ``nodes`` fake nodes and the default
    StorageClass, and return once nodes are Ready and the default service
    account exists.  On any failure everything started so far is stopped."""
    binaries = {n: component_binary(n) for n in
                ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")}
    etcd_bin = etcd36_binary()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pki = workdir / "pki"
    ca = CertificateAuthority(pki)
    serving = ca.issue("apiserver", "kube-apiserver", server=True,
                       dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                            "kubernetes.default.svc.cluster.local"),
                       ips=("127.0.0.1", "10.96.0.1"))
    admin = ca.issue("admin", "picchio-admin", orgs=("system:masters",))
    kcm_cert = ca.issue("controller-manager", "system:kube-controller-manager")
    sched_cert = ca.issue("scheduler", "system:kube-scheduler")
    kwok_cert = ca.issue("kwok", "kwok-controller", orgs=("system:masters",))
    sa = service_account_keys(pki)

    port = free_port()
    server = f"https://127.0.0.1:{port}"
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", server, ca.pair.cert, admin)
    kcm_kc = write_kubeconfig(workdir / "controller-manager.kubeconfig", server, ca.pair.cert, kcm_cert,
                              user="system:kube-controller-manager")
    sched_kc = write_kubeconfig(workdir / "scheduler.kubeconfig", server, ca.pair.cert, sched_cert,
                                user="system:kube-scheduler")
    kwok_kc = write_kubeconfig(workdir / "kwok.kubeconfig", server, ca.pair.cert, kwok_cert, user="kwok")

    cluster = LocalCluster(workdir, kubeconfig, server)
    logs = workdir / "logs"
    try:
        cluster.etcd = start_etcd(workdir, name="k8s-etcd", binary=etcd_bin)
        api = Proc("kube-apiserver", _apiserver_argv(binaries["kube-apiserver"], workdir, port, cluster.etcd,
                                                       ca, serving, sa), logs / "kube-apiserver.log").start()
        cluster.procs.append(api)
        admin_ctx = _tls_context(ca.pair.cert, admin)
        api.wait_ready(lambda: _https_ok(f"{server}/readyz", admin_ctx), timeout=timeout)

        kcm_port, sched_port, kwok_port = free_port(), free_port(), free_port()
        kcm = Proc("kube-controller-manager", [
            binaries["kube-controller-manager"], f"--kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", "--leader-elect=false",
            f"--root-ca-file={ca.pair.cert}", f"--service-account-private-key-file={sa.key}",
            "--use-service-account-credentials=true",  # each controller acts as its own RBAC subject
            f"--cluster-signing-cert-file={ca.pair.cert}", f"--cluster-signing-key-file={ca.pair.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--cluster-name=picchio",
            "--kube-api-qps=100", "--kube-api-burst=200",
            f"--cert-dir={workdir / 'kcm-certs'}",
        ], logs / "kube-controller-manager.log").start()
        cluster.procs.append(kcm)
        sched = Proc("kube-scheduler", [
            binaries["kube-scheduler"], f"--kubeconfig={sched_kc}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={sched_port}",
            f"--cert-dir={workdir / 'scheduler-certs'}",
        ], logs / "kube-scheduler.log").start()
        cluster.procs.append(sched)
        kwok_cfg = workdir / "kwok.yaml"
        # An explicit (empty) config: kwok would otherwise read ~/.kwok/kwok.yaml.
        kwok_cfg.write_text("apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n")
        kwok = Proc("kwok", [
            binaries["kwok"], f"--kubeconfig={kwok_kc}", f"--config={kwok_cfg}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}", f"--node-ip={NODE_IP}", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{kwok_port}",
        ], logs / "kwok.log").start()
        cluster.procs.append(kwok)
        prov = Proc("provisioner", [
            sys.executable, "-m", "picchio_harness.provisioner", f"--kubeconfig={kubeconfig}",
            f"--root={workdir / 'volumes'}",
        ], logs / "provisioner.log", env={"PYTHONPATH": _harness_pythonpath()}).start()
        cluster.procs.append(prov)

        insecure = _tls_context(None)
        kcm.wait_ready(lambda: _https_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure), timeout=timeout)
        sched.wait_ready(lambda: _https_ok(f"https://127.0.0.1:{sched_port}/healthz", insecure), timeout=timeout)
        kwok.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{kwok_port}/healthz"), timeout=timeout)
        prov.wait_ready(lambda: "provisioner ready" in prov.tail(200), timeout=timeout)

        _bootstrap(cluster, nodes, timeout)
        cluster.write_state()
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _harness_pythonpath() -> str:
    """The provisioner runs as ``python -m picchio_harness.provisioner``; make
    the package importable there even when it is not pip-installed."""
    here = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return f"{here}{os.pathsep}{rest}" if rest else here


def _bootstrap(cluster: LocalCluster, nodes: int, timeout: float) -> None:
    """Objects every test expects: the default StorageClass, Ready fake nodes,
    and the ``default`` service account (pods are refused until it exists)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from .provisioner import storage_class

    api = cluster.api_client()
    try:
        # Any: the client's generated types want model objects; we pass the
        # plain manifests the API server accepts as they are.
        core: Any = client.CoreV1Api(api)
        storage: Any = client.StorageV1Api(api)
        try:
            storage.create_storage_class(storage_class(), _request_timeout=_API_TIMEOUT)
        except ApiException as e:
            if e.status != 409:
                raise
        zones = ["zone-a", "zone-b", "zone-c"]
        for i in range(nodes):
            name = f"kwok-node-{i}"
            try:
                core.create_node(_node(name, zones[i % len(zones)]), _request_timeout=_API_TIMEOUT)
            except ApiException as e:
                if e.status != 409:
                    raise
            cluster.nodes.append(name)

        def nodes_ready() -> bool:
            items = core.list_node(_request_timeout=_API_TIMEOUT).items
            ready = {n.metadata.name for n in items
                     if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))}
            return set(cluster.nodes) <= ready

        def default_sa() -> bool:
            core.read_namespaced_service_account("default", "default", _request_timeout=_API_TIMEOUT)
            return True

        poll("fake nodes Ready", nodes_ready, timeout)
        poll("service account default/default", default_sa, timeout)
    finally:
        api.close()
