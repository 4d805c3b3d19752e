"""``python -m picchio_harness.demo_cluster``: the operator's tour on real
components, in about a minute.

A local control plane (kube-apiserver, controller-manager, scheduler, kwok
nodes), etcd 3.6 and MinIO start on loopback in a temporary directory; the
CRDs and ``manifests/`` are installed; the operator runs as a process
(``picchio operator run --standalone``: the Deployment's pod is only
simulated by kwok, so it does no work); the samples are applied, rewired to
the harness' etcd and MinIO; a log is written through the ``logstore`` API
with the configuration the operator published for applications (ConfigMap
``<cluster>-client``); ``spec.truncateTo`` is set, and the demo waits until
the operator has deleted the truncated segments (``status.reclaimedBytes``);
finally ``kubectl get wpc,wplog`` is printed.  Everything started is stopped
at the end, on failure too, and the work directory is removed (set
``PICCHIO_KEEP_WORKDIR=1`` to keep it and its logs).
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .etcd import etcd36_binary, start_etcd
from .procs import Proc, find_binary, free_port
from .s3 import start_s3

ROOT = Path(__file__).resolve().parents[2]
NS = "demo"
T = TypeVar("T")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = fn()
        except Exception as e:  # noqa: BLE001 - a transient state counts as "not yet"
            got, last = None, e
        if got:
            return got
        last = got if last is None else last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        binary = find_binary("PICCHIO_KUBECTL_BIN", "kubectl", ["/usr/bin/kubectl", "/usr/local/bin/kubectl"])
        if not binary:
            raise RuntimeError("no kubectl: run `make components` (it builds kubectl)")
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        out = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                             capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def apply(self, obj: dict[str, Any]) -> None:
        self("apply", "--server-side", "--field-manager=picchio-demo", "-f", "-", stdin=json.dumps(obj))

    def get(self, *what: str) -> dict[str, Any]:
        return json.loads(self("get", *what, "-o", "json"))


def sample(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifests" / "samples" / name).read_text())


def rewire(wpc: dict[str, Any], etcd_ep: str, s3: Any, bucket: str) -> dict[str, Any]:
    """A shipped sample, pointed at the harness' etcd and MinIO (the operator
    runs on this machine, so loopback endpoints reach them)."""
    wpc = copy.deepcopy(wpc)
    wpc["metadata"]["namespace"] = NS
    wpc["spec"]["etcd"]["endpoints"] = [etcd_ep]
    wpc["spec"]["storage"].update({"endpoint": s3.endpoint, "bucket": bucket})
    return wpc


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def write_entries(client_yaml: str, s3: Any, log_name: str, n: int) -> list[Any]:
    """Append ``n`` entries the way an application would: the operator's
    client configuration plus credentials (here passed as PICCHIO_* values)."""
    import logstore

    cfg = logstore.Config.from_dict(yaml.safe_load(client_yaml)).with_env({
        "PICCHIO_MINIO_ACCESSKEYID": s3.access_key, "PICCHIO_MINIO_SECRETACCESSKEY": s3.secret_key,
        # one block per segment, so a few entries make several segments to collect
        "PICCHIO_WOODPECKER_CLIENT_SEGMENTROLLINGPOLICY_MAXBLOCKS": "1"})
    async with logstore.Client(cfg) as client:
        h = await client.open_log(log_name)
        async with await h.open_writer() as w:
            return [await w.append(b"order-%03d" % i) for i in range(n)]


def main() -> int:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="picchio-demo-cluster-"))
    started: list[Any] = []  # stopped in reverse order, whatever happens
    ok = False
    try:
        from .k8s import start_cluster

        say(f"starting etcd 3.6, MinIO and a local control plane with kwok nodes (work dir {work})")
        etcd = start_etcd(work, name="wal-etcd", binary=etcd36_binary())
        started.append(etcd)
        s3 = start_s3(work, prefer="minio")
        started.append(s3)
        cluster = start_cluster(work / "cluster")
        started.append(cluster)
        kubectl = Kubectl(cluster.kubeconfig)
        print(f"API server {cluster.server}; etcd {etcd.endpoint}; MinIO {s3.endpoint}")

        say("installing the CRDs and manifests/ (kubectl apply -f crds/; kubectl apply -k manifests/)")
        print(kubectl("apply", "--server-side", "-f", str(ROOT / "crds")).strip())
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/woodpeckerclusters.picchio.dev",
                "crd/woodpeckerlogs.picchio.dev")
        print(kubectl("apply", "-k", str(ROOT / "manifests")).strip())

        say("starting the operator: picchio operator run --standalone")
        live = free_port()
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "e2e"),
                                              os.environ.get("PYTHONPATH", "")])}
        op = Proc("picchio-operator", [
            sys.executable, "-m", "logstore.cli.main", "operator", "run", "--standalone",
            "--kubeconfig", str(cluster.kubeconfig), "--liveness", f"http://127.0.0.1:{live}/healthz",
            "--metrics-port", "0", "--tick-seconds", "2", "--resync-seconds", "30", "--log-format", "plain",
        ], work / "operator.log", env=env).start()
        started.append(op)
        op.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{live}/healthz"), timeout=60)
        print(f"operator pid {op.pid}, log {op.log_path}")

        say("applying the samples (rewired to this etcd and MinIO)")
        kubectl("create", "namespace", NS)
        secret = sample("s3-credentials.yaml")
        secret["metadata"]["namespace"] = NS
        secret["stringData"] = {"accessKeyID": s3.access_key, "secretAccessKey": s3.secret_key}
        kubectl.apply(secret)
        embedded = rewire(sample("cluster-embedded.yaml"), etcd.endpoint, s3, "picchio-demo")
        service = rewire(sample("cluster-service.yaml"), etcd.endpoint, s3, "picchio-demo")
        log = sample("log-retention.yaml")
        log["metadata"]["namespace"] = NS
        log["spec"]["clusterRef"] = embedded["metadata"]["name"]
        for obj in (embedded, service, log):
            kubectl.apply(obj)
            print(f"applied {obj['kind']} {obj['metadata']['name']}")
        for name in (embedded["metadata"]["name"], service["metadata"]["name"]):
            wait_for(f"wpc/{name} Ready", lambda name=name: condition(
                kubectl.get("wpc", name, "-n", NS), "Ready").get("status") == "True", timeout=90)
        wait_for("wplog/orders Ready", lambda: condition(
            kubectl.get("wplog", "orders", "-n", NS), "Ready").get("status") == "True", timeout=60)
        print(f"clusters Ready after {time.monotonic() - t0:.0f}s; the operator created log 'orders'")

        client_cm = f"{embedded['metadata']['name']}-client"
        say(f"writing 12 entries with the logstore API (configuration from ConfigMap {client_cm})")
        client_yaml = kubectl.get("configmap", client_cm, "-n", NS)["data"]["woodpecker.yaml"]
        ids = asyncio.run(write_entries(client_yaml, s3, "orders", 12))
        print(f"appended {ids[0]} … {ids[-1]} ({len({i.segment_id for i in ids})} segments)")

        mark = ids[7]
        say(f"kubectl patch wplog/orders: spec.truncateTo={mark}; waiting for the operator's GC")
        kubectl("patch", "wplog", "orders", "-n", NS, "--type=merge", "-p",
                json.dumps({"spec": {"truncateTo": str(mark)}}))
        def collected() -> dict[str, Any] | None:
            o = kubectl.get("wplog", "orders", "-n", NS)
            return o if (o.get("status") or {}).get("reclaimedBytes", 0) > 0 else None

        done = wait_for("status.reclaimedBytes > 0", collected, timeout=60)
        st = done["status"]
        print(f"truncated to {st['truncatedId']}; garbage-collected {st['reclaimedObjects']} objects, "
              f"{st['reclaimedBytes']} bytes; {st['segments']} segments left")
        events = kubectl("get", "events", "-n", NS, "--field-selector", "involvedObject.name=orders",
                         "-o", "custom-columns=REASON:.reason,MESSAGE:.message")
        print(events.rstrip())

        say("kubectl get wpc,wplog")
        print(kubectl("get", "wpc,wplog", "-n", NS).rstrip())
        ok = True
    except Exception as e:  # noqa: BLE001 - reported, then everything is stopped
        print(f"\ndemo failed: {type(e).__name__}: {e}", file=sys.stderr)
        for p in started:
            if isinstance(p, Proc):
                print(f"--- {p.name} log tail ---\n{p.tail(30)}", file=sys.stderr)
    finally:
        say("stopping everything")
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                print(f"stopping {thing!r}: {e}", file=sys.stderr)
        if os.environ.get("PICCHIO_KEEP_WORKDIR"):
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'done' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s", flush=True)
    return 0 if ok else 1


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


if __name__ == "__main__":
    sys.exit(main())
