"""Fixtures every test tier shares: a real etcd and a real S3 server (MinIO when
built, else moto), started once per session by the harness, and per-test
configurations isolated by a unique etcd root and storage prefix."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "e2e", ROOT / "operator"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from picchio_harness.etcd import start_etcd  # noqa: E402
from picchio_harness.s3 import start_s3  # noqa: E402

import importlib.util  # noqa: E402

if importlib.util.find_spec("picchio_harness.pytest_plugin"):  # k8s_cluster, minio fixtures
    pytest_plugins = ["picchio_harness.pytest_plugin"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("components")


@pytest.fixture(scope="session")
def etcd(workdir):
    server = start_etcd(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(workdir):
    server = start_s3(workdir)
    yield server
    server.stop()


@pytest.fixture
def make_config(etcd, tmp_path, request):
    """``make_config("local"|"minio", **overrides)`` → a Config whose etcd root
    and storage location belong to this test alone."""
    from logstore import Config

    def make(kind: str = "local", **overrides):
        uid = uuid.uuid4().hex[:10]
        d = {
            "etcd.endpoints": [etcd.endpoint],
            "etcd.rootPath": f"test-{uid}",
            "woodpecker.storage.type": kind,
            "woodpecker.storage.rootPath": str(tmp_path / "wal"),
            "minio.rootPath": f"files-{uid}",
        }
        if kind == "minio":
            server = request.getfixturevalue("s3")
            d.update({
                "minio.address": server.host, "minio.port": server.port,
                "minio.accessKeyID": server.access_key, "minio.secretAccessKey": server.secret_key,
                "minio.bucketName": "picchio-test", "minio.createBucket": True,
            })
        d.update({k.replace("__", "."): v for k, v in overrides.items()})
        return Config.from_dict(d)

    return make


@pytest.fixture(params=["local", "minio"])
def backend_kind(request) -> str:
    return request.param
