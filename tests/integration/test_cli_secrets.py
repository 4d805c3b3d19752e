"""Secrets hygiene, integration tier: the CLI (with and without ``--json``)
and a LogStore process, run for real against real MinIO and etcd with wrong
or malformed credentials, must not print the credentials they were given.

Each test plants distinctive values (an S3 access key and secret key, an etcd
password, a private key path's contents) and searches *everything* the
process wrote — stdout, stderr, its log — for them, raw and base64-encoded.
Wrong credentials are the interesting case: that is when third-party error
text (botocore, gRPC) is built around the request that carried them."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from logstore.dev.procs import free_port
from tlsenv import ROOT_PW, auth_etcd, etcd_config, pki, tls_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def planted(tag: str) -> str:
    return f"PLANTED-{tag}-{uuid.uuid4().hex}"


def assert_clean(outputs: dict[str, str], secrets: list[str]) -> None:
    """No secret, raw or base64, in any output; the message says where."""
    for s in secrets:
        for form in (s, base64.b64encode(s.encode()).decode()):
            for where, text in outputs.items():
                assert form not in text, f"secret found in {where}: …{text[max(0, text.find(form) - 80):][:200]}…"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), **(env or {})}
    e.pop("PICCHIO_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "logstore.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def write_config(path: Path, values: dict) -> Path:
    from logstore.config import Config

    path.write_text(yaml.safe_dump(Config(values).to_dict(nested=True)))
    return path


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_cli_with_wrong_s3_credentials_prints_no_key(s3, etcd, tmp_path, json_flag) -> None:
    """botocore builds its errors around the signed request: the CLI's output
    (and the library's log lines on stderr) must carry neither key."""
    ak, sk = planted("AK"), planted("SK")
    f = write_config(tmp_path / "wp.yaml", {
        **etcd_config(etcd.endpoint), "woodpecker.storage.type": "minio", "minio.address": s3.host,
        "minio.port": s3.port, "minio.accessKeyID": ak, "minio.secretAccessKey": sk,
        "minio.bucketName": "picchio-hygiene", "minio.createBucket": True, "minio.requestTimeoutMs": 5000})
    out = cli("--config", str(f), *json_flag, "log", "create", "x")
    assert out.returncode == 1 and "error:" in out.stderr, out
    assert "403" in out.stderr or "Forbidden" in out.stderr or "InvalidAccessKeyId" in out.stderr, out.stderr
    assert_clean({"stdout": out.stdout, "stderr": out.stderr}, [ak, sk])
    # the same keys from the environment (how pods get them): same result
    f2 = write_config(tmp_path / "wp2.yaml", {**etcd_config(etcd.endpoint), "woodpecker.storage.type": "minio",
                                              "minio.address": s3.host, "minio.port": s3.port,
                                              "minio.bucketName": "picchio-hygiene"})
    out = cli("--config", str(f2), *json_flag, "log", "list",
              env={"PICCHIO_MINIO_ACCESSKEYID": ak, "PICCHIO_MINIO_SECRETACCESSKEY": sk})
    assert out.returncode == 1, out
    assert_clean({"stdout": out.stdout, "stderr": out.stderr}, [ak, sk])


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_cli_with_wrong_etcd_password_over_tls_prints_no_password(auth_etcd, pki, tmp_path, json_flag) -> None:
    wrong = planted("ETCDPW")
    f = write_config(tmp_path / "wp.yaml", {
        **etcd_config(auth_etcd.endpoint, **pki.etcd_ssl(client_cert=False)), "etcd.auth.enabled": True,
        "etcd.auth.userName": "root", "woodpecker.storage.type": "local",
        "woodpecker.storage.rootPath": str(tmp_path / "wal")})
    for env in ({"PICCHIO_ETCD_AUTH_PASSWORD": wrong}, {"PICCHIO_ETCD_PASSWORD": wrong}):  # canonical, deprecated
        out = cli("--config", str(f), *json_flag, "log", "list", env=env)
        assert out.returncode == 1 and "authentication failed" in out.stderr, out
        assert_clean({"stdout": out.stdout, "stderr": out.stderr}, [wrong, ROOT_PW])
    # config check: the effective configuration, secrets masked (the password set, not shown)
    out = cli(*json_flag, "config", "check", str(f), env={"PICCHIO_ETCD_AUTH_PASSWORD": wrong})
    assert out.returncode == 0 and "etcd.auth.password" in out.stdout, out
    assert_clean({"stdout": out.stdout, "stderr": out.stderr}, [wrong])


def test_logstore_process_logs_no_credentials(auth_etcd, pki, tmp_path) -> None:
    """A LogStore given a wrong etcd password (and S3 keys) exits with one
    error line; its whole output holds none of the values."""
    wrong, ak, sk = planted("LSPW"), planted("LSAK"), planted("LSSK")
    f = write_config(tmp_path / "ls.yaml", {
        **etcd_config(auth_etcd.endpoint, **pki.etcd_ssl(client_cert=False)), "etcd.auth.enabled": True,
        "etcd.auth.userName": "root", "etcd.auth.password": wrong, "minio.accessKeyID": ak,
        "minio.secretAccessKey": sk, "woodpecker.storage.type": "service",
        "woodpecker.storage.rootPath": str(tmp_path / "data"), "woodpecker.logstore.host": "127.0.0.1",
        "woodpecker.logstore.port": free_port(), "woodpecker.logstore.httpPort": free_port()})
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    out = subprocess.run([sys.executable, "-m", "logstore.server.main", "serve", "--config", str(f)],
                         capture_output=True, text=True, timeout=60, env=e)
    assert out.returncode == 1 and "authentication failed" in out.stderr, out
    assert_clean({"stdout": out.stdout, "stderr": out.stderr}, [wrong, ak, sk, ROOT_PW])
