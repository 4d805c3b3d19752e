"""Fixtures of the operator's cluster tier: the real control plane and MinIO
from the harness, the CRDs installed once, a namespace per test, and the
operator running in-process (same code as ``picchio operator run``)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "e2e", ROOT / "operator", ROOT, Path(__file__).parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

if importlib.util.find_spec("picchio_harness") is not None:
    from picchio_harness.pytest_plugin import k8s_cluster, minio  # noqa: F401

from opcluster import CRD_NAMES, Api, wait_for


@pytest.fixture(scope="session")
def api(k8s_cluster: Any) -> Api:
    return Api(k8s_cluster.api)


@pytest.fixture(scope="session")
def kubectl(k8s_cluster: Any) -> Callable[..., subprocess.CompletedProcess]:
    from picchio_harness.procs import find_binary

    binary = find_binary("PICCHIO_KUBECTL_BIN", "kubectl", ["/usr/bin/kubectl", "/usr/local/bin/kubectl"])
    assert binary, "no kubectl: run `make components` (it builds kubectl)"

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run([binary, f"--kubeconfig={k8s_cluster.kubeconfig}", *args], capture_output=True,
                             text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out

    return run


@pytest.fixture(scope="session")
def crds(kubectl: Callable[..., subprocess.CompletedProcess]) -> list[str]:
    kubectl("apply", "--server-side", "--field-manager=picchio-tests", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in CRD_NAMES])
    return CRD_NAMES


@pytest.fixture
def ns(api: Api, crds: list[str]) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for("default service account", lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"))
    yield name
    api.status_code("DELETE", f"/api/v1/namespaces/{name}")


def _in_process_operator(k8s_cluster: Any, resync_seconds: int) -> Iterator[Any]:
    from picchio_operator.main import InProcessOperator

    op = InProcessOperator(k8s_cluster.api, ["--standalone", "--metrics-port", "0", "--liveness", "",
                                             "--resync-seconds", str(resync_seconds), "--tick-seconds", "2"])
    with op:
        yield op
    assert op.error is None, op.error


@pytest.fixture(scope="module")
def operator(k8s_cluster: Any, crds: list[str]) -> Iterator[Any]:
    yield from _in_process_operator(k8s_cluster, 15)


@pytest.fixture(scope="module")
def quiet_operator(k8s_cluster: Any, crds: list[str]) -> Iterator[Any]:
    """The operator with its resync timer out of reach (600 s): whatever a
    test sees happen came from a watch event, a kopf retry or a deletion
    handler, never from a periodic full pass."""
    yield from _in_process_operator(k8s_cluster, 600)
