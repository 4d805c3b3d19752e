"""Session fixtures that hand tests real components.

Load with ``pytest_plugins = ["picchio_harness.pytest_plugin"]`` in a root
conftest.  Fixture names avoid ``etcd`` and ``s3`` (tests/conftest.py owns
those).  A missing build is a test *error* with the command that fixes it,
never a skip: a suite that silently skips its cluster tests would pass
without testing anything.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .build import MissingComponent


@dataclass
class K8sCluster:
    """What a test needs from the cluster: an admin kubeconfig path and a
    ready ``kubernetes.client.ApiClient``.  ``local`` is the harness-started
    cluster (None when KUBECONFIG pointed at an existing one)."""

    kubeconfig: Path
    api: Any
    local: Any = None


def pytest_configure(config: pytest.Config) -> None:
    """Turn SIGTERM (CI timeouts, `kill`) into KeyboardInterrupt, so session
    fixtures tear down as on Ctrl-C.  Needed because every component runs in
    its own session: a signal to pytest's process group never reaches them,
    and at-exit handlers do not run on an unhandled SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, _term)


def _workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[K8sCluster]:
    """A real control plane with kwok nodes (see picchio_harness.k8s).  If
    ``$KUBECONFIG`` names an existing file, that cluster is used instead
    (e.g. one from ``picchio dev cluster up``) and left running."""
    from kubernetes import config

    external = os.environ.get("KUBECONFIG")
    if external and Path(external).is_file():
        api = config.new_client_from_config(config_file=external)
        try:
            yield K8sCluster(Path(external), api)
        finally:
            api.close()
        return
    from .k8s import start_cluster

    workdir = _workdir("picchio-cluster-")
    try:
        cluster = start_cluster(workdir / "cluster")
    except MissingComponent as e:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"local Kubernetes cluster unavailable: {e}", pytrace=False)
    except BaseException:
        # start_cluster already stopped what it started; keep the logs for
        # the report only if asked to, else leave no litter in /tmp.
        if not os.environ.get("PICCHIO_KEEP_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    api = cluster.api_client()
    try:
        yield K8sCluster(cluster.kubeconfig, api, cluster)
    finally:
        api.close()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def minio() -> Iterator[Any]:
    """Always the real MinIO build (lifecycle rules are enforced; moto only
    stores them).  Yields a picchio_harness.s3.S3Server."""
    from .s3 import minio_binary, start_s3

    if not minio_binary():
        pytest.fail("MinIO is not built: run `make components ONLY=minio` "
                    "(or set PICCHIO_MINIO_BIN)", pytrace=False)
    workdir = _workdir("picchio-minio-")
    try:
        server = start_s3(workdir, prefer="minio")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd36() -> Iterator[Any]:
    """etcd 3.6 from the Go-module build (the version kube-apiserver needs);
    the lead's ``etcd`` fixture may fall back to Debian's 3.4."""
    from .etcd import etcd36_binary, start_etcd

    try:
        binary = etcd36_binary()
    except MissingComponent as e:
        pytest.fail(str(e), pytrace=False)
    workdir = _workdir("picchio-etcd36-")
    server = start_etcd(workdir, name="etcd36", binary=binary)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
