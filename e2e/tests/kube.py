"""kubectl helpers of the e2e suite (a plain module, imported by conftest.py
and the tests).  Everything goes through the ``kubectl`` binary against the
cluster ``KUBECONFIG`` names; every wait polls with a deadline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from picchio_harness.procs import wait_for as harness_wait_for

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

SYSTEM_NS = "picchio-system"   # operator (manifests/), etcd and MinIO
TEST_NS = "picchio-e2e"        # the WoodpeckerClusters, logs and client Jobs


def _kubectl_binary() -> str:
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    try:  # the pinned build of `make components`
        sys.path.insert(0, str(ROOT / "e2e"))
        from picchio_harness.build import component_binary

        p = Path(component_binary("kubectl"))
        if p.exists():
            return str(p)
    except Exception:  # noqa: BLE001 - fall back to PATH
        pass
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: set KUBECTL or put kubectl on PATH")
    return found


KUBECTL = _kubectl_binary()


def _images_env() -> dict[str, str]:
    f = Path(os.environ.get("PICCHIO_CACHE", Path.home() / ".cache/picchio")) / "kind" / "images.env"
    out: dict[str, str] = {}
    if f.exists():
        for line in f.read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep and not line.startswith("#"):
                out[k.strip()] = v.strip()
    return out


_IMAGES = _images_env()
PROJECT_IMAGE = os.environ.get("PICCHIO_IMAGE", "picchio.local/picchio:dev")
ETCD_IMAGE = os.environ.get("ETCD_IMAGE") or _IMAGES.get("ETCD_IMAGE", "quay.io/coreos/etcd:v3.6.5")
MINIO_IMAGE = os.environ.get("MINIO_IMAGE") or _IMAGES.get("MINIO_IMAGE", "quay.io/minio/minio:latest")
# Never for images loaded into kind (`kind load docker-image`); set
# E2E_PULL_POLICY=IfNotPresent when the images come from a registry.
PULL_POLICY = os.environ.get("E2E_PULL_POLICY", "Never")


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [KUBECTL, *args]
    p = subprocess.run(cmd, check=False, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def apply(objs: Any) -> None:
    docs = objs if isinstance(objs, list) else [objs]
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=e2e", "-f", "-",
            input=yaml.safe_dump_all(docs))


def get(kind: str, name: str | None = None, ns: str | None = TEST_NS, selector: str | None = None) -> Any:
    """The object (or list) as JSON; None when it does not exist."""
    args = ["get", kind] + ([name] if name else []) + (["-n", ns] if ns else []) + (["-l", selector] if selector else [])
    p = kubectl(*args, "-o", "json", check=False)
    if p.returncode != 0:
        if "NotFound" in p.stderr or "not found" in p.stderr:
            return None
        raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr}")
    return json.loads(p.stdout)


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 120.0, interval: float = 1.0) -> T:
    """The harness's poller, with the slower defaults a real cluster needs."""
    return harness_wait_for(what, fn, timeout, interval)


def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def pod_ready(pod: dict) -> bool:
    return (pod.get("metadata", {}).get("deletionTimestamp") is None
            and condition(pod, "Ready").get("status") == "True")


def wait_rollout(kind: str, name: str, ns: str, timeout: float = 180) -> None:
    kubectl("rollout", "status", f"{kind}/{name}", "-n", ns, f"--timeout={int(timeout)}s", timeout=timeout + 10)


def dump(namespaces: tuple[str, ...] = (SYSTEM_NS, TEST_NS), log_lines: int = 150) -> str:
    """Everything useful after a failure: objects, descriptions, events, pod logs."""
    out: list[str] = []

    def section(title: str, *args: str) -> None:
        try:
            p = kubectl(*args, check=False, timeout=60)
            out.append(f"---- {title}\n{p.stdout}{p.stderr}")
        except Exception as e:  # noqa: BLE001 - a dump never fails the dump
            out.append(f"---- {title}: {e}")

    section("kubectl get -A", "get", "nodes,pods,svc,sts,deploy,jobs,pvc,pdb,wpc,wplog", "-A", "-o", "wide")
    for ns in namespaces:
        section(f"describe wpc,wplog -n {ns}", "describe", "wpc,wplog", "-n", ns)
        section(f"describe pods -n {ns}", "describe", "pods", "-n", ns)
        section(f"events -n {ns}", "get", "events", "-n", ns, "--sort-by=.lastTimestamp")
        pods = get("pods", ns=ns) or {"items": []}
        for p in pods["items"]:
            name = p["metadata"]["name"]
            section(f"logs {ns}/{name}", "logs", "-n", ns, name, "--all-containers", f"--tail={log_lines}")
            if any((cs.get("restartCount") or 0) > 0 for cs in (p.get("status") or {}).get("containerStatuses") or []):
                section(f"previous logs {ns}/{name}", "logs", "-n", ns, name, "--all-containers", "--previous",
                        f"--tail={log_lines}")
    return "\n".join(out)


def _docker_binary() -> str:
    found = os.environ.get("DOCKER") or shutil.which("docker")
    if not found:
        raise RuntimeError("no docker client: the crash test SIGKILLs a container from its kind node "
                           "(set DOCKER or put docker on PATH)")
    return found


def crash_container(pod: dict, container: str) -> str:
    """SIGKILL the main process of ``container`` in ``pod`` from the node it
    runs on — a crash: no SIGTERM, no grace period, no API-server deletion
    (the kubelet restarts the container in the same pod).  A kind node is a
    docker container named after the node; ``crictl`` in it names the
    process.  Returns the killed container's id."""
    node = pod["spec"]["nodeName"]
    cid = next(cs["containerID"] for cs in pod["status"]["containerStatuses"] if cs["name"] == container)
    cid = cid.split("://", 1)[1]
    docker = _docker_binary()

    def run(*args: str) -> str:
        p = subprocess.run([docker, "exec", node, *args], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"docker exec {node} {' '.join(args)} -> {p.returncode}: {p.stderr}")
        return p.stdout.strip()

    pid = run("crictl", "inspect", "--output", "go-template", "--template", "{{.info.pid}}", cid)
    assert pid.isdigit() and int(pid) > 1, f"crictl gave pid {pid!r} for {cid}"
    run("kill", "-KILL", pid)
    return cid


class KubectlWatch:
    """``kubectl get KIND -w --output-watch-events -o json`` in the
    background: every state the API server stores for the selected objects
    reaches ``on_event(type, object)`` — no sampling interval, no missed
    transition.  An exception in ``on_event`` or a stream that ends early is
    raised by :meth:`stop`, never swallowed."""

    def __init__(self, kind: str, on_event: Callable[[str, dict], None], ns: str = TEST_NS,
                 selector: str | None = None, name: str | None = None) -> None:
        import threading

        args = [KUBECTL, "get", kind, "-n", ns, "-w", "--output-watch-events", "-o", "json"]
        if selector:
            args += ["-l", selector]
        if name:
            args += ["--field-selector", f"metadata.name={name}"]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._on_event = on_event
        self.error: BaseException | None = None
        self.count = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"watch {kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        try:
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                buf += line
                while True:
                    stripped = buf.lstrip()
                    if not stripped:
                        buf = ""
                        break
                    try:
                        ev, end = decoder.raw_decode(stripped)
                    except ValueError:
                        break  # an object still arriving
                    buf = stripped[end:]
                    self._on_event(ev["type"], ev["object"])
                    self.count += 1
            if not self._stopping:
                raise RuntimeError(f"kubectl watch ended early: {self._proc.stderr.read() if self._proc.stderr else ''}")
        except BaseException as e:  # noqa: BLE001 - re-raised by stop()
            if not self._stopping:
                self.error = e

    def stop(self) -> None:
        self._stopping = True
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._thread.join(10)
        if self.error is not None:
            raise AssertionError(f"watch failed: {self.error!r}") from self.error
