"""Fixtures every test tier shares: a real etcd and a real S3 server (MinIO, the
Go-module build — never a fallback: without it the ``s3`` fixture fails and
names `make components`), started once per session by the harness, and
per-test configurations isolated by a unique etcd root and storage prefix.

Markers (pyproject.toml): ``slow`` — crash cycles, power cuts, property
tests; ``cluster`` — needs a Go-built component (MinIO, etcd 3.6, Woodpecker, the
Kubernetes control plane, kwok).  Tests that reach one through a fixture (or a
``minio`` parameter) are marked ``cluster`` at collection, and
``make_config("minio")`` fails a test that is not — so ``make test-quick``
(``-m "not slow and not cluster and not faults"``) needs nothing built."""
from __future__ import annotations

import inspect
import re
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


BUILT_FIXTURES = {"s3", "service_cluster", "minio", "k8s_cluster", "etcd36",  # need a Go-built component
                  "wp", "wpctl_bin", "woodpecker_bin", "woodpecker_logstores"}  # the real Woodpecker (tests/interop)


_MINIO_CALL = re.compile(r"""make_config\(\s*["']minio["']""")


def _calls_minio(item) -> bool:
    try:
        return bool(_MINIO_CALL.search(inspect.getsource(item.function)))
    except (OSError, TypeError, AttributeError):
        return False


def pytest_collection_modifyitems(config, items):
    """``cluster`` on every test that reaches a Go-built component — through a
    fixture, a ``minio`` parameter or a ``make_config("minio")`` call — so the
    marker cannot be forgotten (``make_config`` also refuses MinIO to a test
    without it, for whatever this misses)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (BUILT_FIXTURES & set(getattr(item, "fixturenames", ())) or "minio" in params.values()
                or _calls_minio(item)):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def s3(workdir):
    """MinIO.  Not built → the test fails with the command that builds it."""
    server = start_s3(workdir)
    assert server.flavour == "minio"
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
            if request.node.get_closest_marker("cluster") is None:
                pytest.fail(f"{request.node.nodeid} uses MinIO (a Go-built component): mark it `cluster`",
                            pytrace=False)
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


@pytest.fixture
def lazyfs(tmp_path):
    """``lazyfs(name)`` → a mounted power-loss file system at tmp_path/name
    (``picchio_harness.lazyfs``: forgets what was not fsync'd on a power cut);
    killed and unmounted at the end."""
    from picchio_harness.lazyfs import LazyFS

    mounts: list = []

    def make(name: str = "fs"):
        fs = LazyFS(tmp_path / f"{name}.backing", tmp_path / name).mount()
        mounts.append(fs)
        return fs

    yield make
    for fs in mounts:
        if fs.proc is not None:
            fs.resume()
            fs.proc.kill()
            fs.proc.wait(10)
            fs.proc = None
        fs._unmount(lazy=True)
