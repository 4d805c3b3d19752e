"""The operator with etcd over TLS and S3 over TLS with a private CA, on the
real control plane — and the secrets-hygiene search of everything it wrote.

etcd 3.6 serves TLS only, demands client certificates (``--client-cert-auth``)
and has authentication on (root user); MinIO serves https from a certificate
of the test's CA.  A service-mode WoodpeckerCluster names the TLS material
through ``spec.etcd.tlsSecret`` and ``spec.storage.caSecret``: the operator's
keyspace adapter, bucket adapter and own ``logstore`` client (a
WoodpeckerLog is created through it) must all work over TLS, and the pods
must mount the Secrets while the ConfigMaps name only file paths.

Then the credentials are made wrong (an S3 secret key and an etcd admin
password, both planted values), so that error text from botocore and gRPC
flows into conditions, events and log lines; and every event, status,
ConfigMap, StatefulSet and operator log record is searched for every secret
value (raw and base64) the test planted or the operator generated."""
from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from picchio_harness.etcd import EtcdServerTLS, enable_auth, etcd36_binary, start_etcd
from picchio_harness.pki import CertificateAuthority, minio_certs_dir
from picchio_harness.s3 import start_s3

from opcluster import cr_path, events, secret_body, wait_condition, wait_for, wplog_body

from logstore.meta.etcdconn import EtcdTLS

pytestmark = pytest.mark.cluster
NS_ROOT_PW = "root-" + uuid.uuid4().hex


class Captured(logging.Handler):
    """Every log record the operator process emits, formatted (with tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def env():
    d = Path(tempfile.mkdtemp(prefix="picchio-optls-"))
    ca = CertificateAuthority(d / "ca")
    etcd_cert = ca.issue("etcd", "etcd", server=True, ips=("127.0.0.1",), dns=("localhost",))
    minio_cert = ca.issue("minio", "minio", server=True, ips=("127.0.0.1",), dns=("localhost",))
    client = ca.issue("client", "picchio-operator")
    etcd = start_etcd(d, name="etcd-optls", binary=etcd36_binary(),
                      tls=EtcdServerTLS(etcd_cert.cert, etcd_cert.key, client_ca=ca.pair.cert))

    (d / "minio").mkdir()
    minio = None
    try:
        enable_auth(etcd, NS_ROOT_PW, EtcdTLS(ca_file=str(ca.pair.cert), cert_file=str(client.cert),
                                              key_file=str(client.key)))
        minio = start_s3(d / "minio", certs_dir=minio_certs_dir(d / "minio-certs", ca, minio_cert))
        yield {"ca": ca, "client": client, "etcd": etcd, "minio": minio}
    finally:
        if minio is not None:
            minio.stop()
        etcd.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def captured_operator(k8s_cluster, crds):
    """The operator in-process (5 s resync), its log records captured from the
    start — the handler is on the root logger before the operator installs
    its redaction, as a real process's output handler is."""
    from picchio_operator.main import InProcessOperator

    cap = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(cap)
    root.setLevel(logging.DEBUG)
    try:
        with InProcessOperator(k8s_cluster.api, ["--standalone", "--metrics-port", "0", "--liveness", "",
                                                 "--resync-seconds", "5", "--tick-seconds", "2"]) as op:
            yield cap
        assert op.error is None, op.error
    finally:
        root.removeHandler(cap)
        root.setLevel(old_level)


def put_secret(api, ns: str, name: str, data: dict[str, str]) -> None:
    path = f"/api/v1/namespaces/{ns}/secrets"
    if api.get(f"{path}/{name}") is None:
        api.call("POST", path, secret_body(ns, name, data))
    else:
        api.call("PUT", f"{path}/{name}", secret_body(ns, name, data))


def test_tls_cluster_works_and_nothing_secret_leaks(api, ns, env, captured_operator) -> None:
    ca, client, etcd, minio = env["ca"], env["client"], env["etcd"], env["minio"]
    put_secret(api, ns, "etcd-tls", {"ca.crt": ca.pair.cert.read_text(), "tls.crt": client.cert.read_text(),
                                     "tls.key": client.key.read_text()})
    put_secret(api, ns, "s3-ca", {"ca.crt": ca.pair.cert.read_text()})
    put_secret(api, ns, "etcd-admin", {"username": "root", "password": NS_ROOT_PW})
    put_secret(api, ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key})
    bucket = f"optls-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
            "metadata": {"name": "wal", "namespace": ns},
            "spec": {"mode": "service", "replicas": 3,
                     "etcd": {"endpoints": [etcd.endpoint], "rootPath": f"{ns}-wal", "tlsSecret": "etcd-tls",
                              "credentialsSecret": "etcd-admin"},
                     "storage": {"endpoint": minio.endpoint, "bucket": bucket, "rootPath": "wal",
                                 "createBucket": True, "credentialsSecret": "s3", "caSecret": "s3-ca"},
                     # Retain: the test ends with wrong credentials, and its servers stop with the module
                     "deletionPolicy": "Retain"}}
    assert minio.endpoint.startswith("https://")
    api.call("POST", cr_path("woodpeckerclusters", ns), body)

    # -- works over TLS: keyspace + scoped user (etcd adapter), bucket checks (bucket adapter) ...
    wait_condition(api, "woodpeckerclusters", ns, "wal", "EtcdReady", "True", timeout=120)
    wait_condition(api, "woodpeckerclusters", ns, "wal", "StorageReady", "True", timeout=60)
    # ... and the operator's own logstore client (a WoodpeckerLog is created through it)
    api.call("POST", cr_path("woodpeckerlogs", ns), wplog_body(ns, "orders", "wal"))
    wait_condition(api, "woodpeckerlogs", ns, "orders", "Ready", "True", timeout=90)

    # -- the pods mount the Secrets; the ConfigMaps name files, never contents
    sts = api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server")
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert vols["etcd-tls"]["secret"]["secretName"] == "etcd-tls"
    assert vols["storage-ca"]["secret"]["secretName"] == "s3-ca"
    cms = [api.get(f"/api/v1/namespaces/{ns}/configmaps/{n}") for n in ("wal-config", "wal-client")]
    for cm in cms:
        text = cm["data"]["woodpecker.yaml"]
        assert "/etc/picchio-tls/etcd/tls.key" in text and "/etc/picchio-tls/storage-ca/ca.crt" in text
        assert "BEGIN" not in text

    # -- now wrong credentials: third-party error text flows into conditions, events and logs
    wrong_sk, wrong_pw = "PLANTED-SK-" + uuid.uuid4().hex, "PLANTED-PW-" + uuid.uuid4().hex
    put_secret(api, ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": wrong_sk})
    put_secret(api, ns, "etcd-admin", {"username": "root", "password": wrong_pw})
    wait_condition(api, "woodpeckerclusters", ns, "wal", "StorageReady", "False", timeout=60)
    wait_condition(api, "woodpeckerclusters", ns, "wal", "EtcdReady", "False", reason="EtcdAuthFailed", timeout=60)
    wait_for("a warning event", lambda: any(t == "Warning" for t, _, _ in events(api, ns)), timeout=30)

    # -- the search
    scoped = api.get(f"/api/v1/namespaces/{ns}/secrets/wal-etcd-client")
    scoped_pw = base64.b64decode(scoped["data"]["password"]).decode()
    key_body = [ln for ln in client.key.read_text().splitlines() if "-----" not in ln]
    secrets = [NS_ROOT_PW, wrong_pw, minio.secret_key, wrong_sk, minio.access_key, scoped_pw, *key_body]
    for name, key in (("wal-cluster-ca", "ca.key"), ("wal-logstore-tls", "tls.key"), ("wal-client-tls", "tls.key"),
                      ("wal-reader-tls", "tls.key")):  # the private keys of the operator's own PKI (spec.tls)
        pem = base64.b64decode(api.get(f"/api/v1/namespaces/{ns}/secrets/{name}")["data"][key]).decode()
        secrets += [ln for ln in pem.splitlines() if "-----" not in ln]
    outputs = {
        "events": "\n".join(f"{t} {r} {m}" for t, r, m in events(api, ns)),
        "cluster": str(api.get(cr_path("woodpeckerclusters", ns, "wal"))),
        "log": str(api.get(cr_path("woodpeckerlogs", ns, "orders"))),
        "configmaps": str(cms),
        "statefulset": str(api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server")),
        "operator log": "\n".join(captured_operator.lines),
    }
    assert "StorageReady" in outputs["cluster"] and outputs["operator log"]
    # every client of the operator's own (adapters, log passes, orphan scan, scale-down) used its private
    # copies of the TLS Secrets, never the pods' mount paths
    assert "cannot read /etc/picchio-tls" not in outputs["operator log"]
    try:
        for s in secrets:
            for form in (s, base64.b64encode(s.encode()).decode()):
                for where, text in outputs.items():
                    i = text.find(form)
                    assert i < 0, f"a secret in {where}: …{text[max(0, i - 120):i + 40]}…"
    finally:  # gone before this module's operator, etcd and MinIO stop (nothing left for the next module)
        api.call("DELETE", cr_path("woodpeckerlogs", ns, "orders"))
        api.call("DELETE", cr_path("woodpeckerclusters", ns, "wal"))
        wait_for("log and cluster deleted", lambda: api.get(cr_path("woodpeckerclusters", ns, "wal")) is None
                 and api.get(cr_path("woodpeckerlogs", ns, "orders")) is None, timeout=90)
