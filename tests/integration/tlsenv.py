"""Real servers with TLS for the integration tests (``test_tls``,
``test_cli_secrets``): a throw-away PKI, etcd 3.6 demanding client
certificates, etcd 3.6 with TLS plus user/password authentication, MinIO
serving https.  Fixtures are module-scoped: each test module starts its own
servers (a few seconds) and stops them."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from picchio_harness.etcd import EtcdServerTLS, enable_auth, etcd36_binary, start_etcd
from picchio_harness.pki import CertificateAuthority, minio_certs_dir
from picchio_harness.s3 import start_s3

from logstore.meta.etcdconn import EtcdTLS

ROOT_PW = "root-pw-" + uuid.uuid4().hex  # planted: must never appear in any output
DEADLINE = 3.0  # etcd.requestTimeout / minio.requestTimeoutMs of the failure tests, seconds


class Pki:
    def __init__(self, d: Path) -> None:
        self.ca = CertificateAuthority(d / "ca")
        self.etcd = self.ca.issue("etcd-server", "etcd", server=True, ips=("127.0.0.1",), dns=("localhost",))
        self.minio = self.ca.issue("minio-server", "minio", server=True, ips=("127.0.0.1",), dns=("localhost",))
        self.client = self.ca.issue("client", "picchio")
        self.other = CertificateAuthority(d / "other", cn="someone-else")  # a CA nobody here trusts

    def etcd_ssl(self, *, client_cert: bool = True, ca: Path | None = None) -> dict:
        d = {"etcd.ssl.enabled": True, "etcd.ssl.tlsCACert": str(ca or self.ca.pair.cert),
             "etcd.ssl.tlsCert": str(self.client.cert) if client_cert else "",
             "etcd.ssl.tlsKey": str(self.client.key) if client_cert else ""}
        return d


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def pki(tls_dir) -> Pki:
    return Pki(tls_dir / "pki")


@pytest.fixture(scope="module")
def cert_etcd(tls_dir, pki):
    """etcd 3.6, TLS only, client certificates required."""
    e = start_etcd(tls_dir, name="etcd-mtls", binary=etcd36_binary(),
                   tls=EtcdServerTLS(pki.etcd.cert, pki.etcd.key, client_ca=pki.ca.pair.cert))
    yield e
    e.stop()


@pytest.fixture(scope="module")
def auth_etcd(tls_dir, pki):
    """etcd 3.6, TLS without client certificates, authentication on (root / ROOT_PW)."""
    e = start_etcd(tls_dir, name="etcd-tls-auth", binary=etcd36_binary(),
                   tls=EtcdServerTLS(pki.etcd.cert, pki.etcd.key))

    enable_auth(e, ROOT_PW, EtcdTLS(ca_file=str(pki.ca.pair.cert)))
    yield e
    e.stop()


@pytest.fixture(scope="module")
def tls_minio(tls_dir, pki):
    """MinIO serving https from a certificate of the test's CA."""
    wd = tls_dir / "minio"
    wd.mkdir()
    s = start_s3(wd, certs_dir=minio_certs_dir(tls_dir / "minio-certs", pki.ca, pki.minio))
    assert s.flavour == "minio" and s.secure
    yield s
    s.stop()


def etcd_config(endpoint: str, **extra) -> dict:
    return {"etcd.endpoints": [endpoint], "etcd.rootPath": f"tls-{uuid.uuid4().hex[:8]}",
            "etcd.requestTimeout": int(DEADLINE * 1000), **extra}


def minio_config(s3, tmp_path: Path, **extra) -> dict:
    return {"woodpecker.storage.type": "minio", "minio.address": s3.host, "minio.port": s3.port,
            "minio.useSSL": True, "minio.accessKeyID": s3.access_key, "minio.secretAccessKey": s3.secret_key,
            "minio.bucketName": "picchio-tls", "minio.createBucket": True,
            "minio.rootPath": f"files-{uuid.uuid4().hex[:8]}", "minio.requestTimeoutMs": int(DEADLINE * 1000),
            **extra}
