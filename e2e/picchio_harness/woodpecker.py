"""The real Woodpecker (v0.1.35) beside picchio: ``wpctl`` (our CLI over its client,
e2e/cluster/go/woodpecker/wpctl) and a woodpecker.yaml for the same etcd keyspace and storage
as a picchio Config, and Woodpecker's own LogStore servers (``woodpecker server``, service mode:
:func:`start_woodpecker_logstores`).  Used by the interop tests (tests/interop) and the
side-by-side benchmark (``python -m picchio_harness.bench_compare``); both binaries come from
``make components ONLY=interop``.

Payloads are deterministic on both sides: entry ``i`` of tag ``t`` is ``sha256("t/i")``
repeated to the entry size (the same function as wpctl's ``payload``), so each side can check
every byte the other wrote."""
from __future__ import annotations

import base64
import hashlib
import json
import queue
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .procs import Proc, free_port, port_open

#: deadline of one wpctl run (its own --timeout is a little shorter, so it reports first)
RUN_TIMEOUT = 90.0


def payload(tag: str, i: int, size: int) -> bytes:
    seed = hashlib.sha256(f"{tag}/{i}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wp_config(cfg: Any, path: Path, *, storage: str | None = None, auditor_s: int = 10,
              seeds: list[str] | None = None, sync_ms: int | None = 100) -> Path:
    """A woodpecker.yaml (Woodpecker's own key names and units) for the same etcd keyspace and
    storage location as picchio's Config ``cfg``; written to ``path``.  ``sync_ms``: Woodpecker's
    flush timer for object storage (its default 1000 ms; None keeps its default)."""
    kind = storage or cfg["woodpecker.storage.type"]
    doc: dict[str, Any] = {
        "etcd": {"endpoints": list(cfg["etcd.endpoints"]), "rootPath": cfg["etcd.rootPath"],
                 "requestTimeout": 10000},  # ms, as Woodpecker reads it
        "woodpecker": {
            "storage": {"type": kind, "rootPath": str(cfg["woodpecker.storage.rootPath"])},
            "client": {"auditor": {"maxInterval": auditor_s}},
        },
        "minio": {"rootPath": cfg["minio.rootPath"]},
        "log": {"level": "info", "stdout": False},
    }
    if kind in ("minio", "service") and cfg["minio.address"]:
        doc["minio"].update({
            "address": cfg["minio.address"], "port": int(cfg["minio.port"]),
            "accessKeyID": cfg["minio.accessKeyID"], "secretAccessKey": cfg["minio.secretAccessKey"],
            "bucketName": cfg["minio.bucketName"], "createBucket": True,
        })
    if sync_ms is not None:  # Woodpecker acks on a flush timer: 100 ms instead of 1 s keeps tests short
        doc["woodpecker"]["logstore"] = {"segmentSyncPolicy": {"maxInterval": sync_ms}}
    if seeds is not None:
        doc["woodpecker"]["client"]["quorum"] = {
            "quorumBufferPools": [{"name": "default-region-pool", "seeds": seeds}],
            "quorumSelectStrategy": {"replicas": 3, "strategy": "random", "affinityMode": "soft"},
        }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def shipped_sync(path: Path) -> Path:
    """Set the flush timers of the woodpecker.yaml at ``path`` as Woodpecker's shipped
    config/woodpecker.yaml does (200 ms object storage, 10 ms local disk, 1 ms service mode; its
    code defaults are 1000, 5 and 1 ms): what a user of it runs."""
    doc = yaml.safe_load(path.read_text())
    doc["woodpecker"].setdefault("logstore", {})["segmentSyncPolicy"] = {
        "maxInterval": 200, "maxIntervalForLocalStorage": 10, "maxIntervalForService": 1}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class WoodpeckerLogStore:
    """One of Woodpecker's own LogStore servers (``woodpecker server``)."""

    name: str
    port: int        # gRPC (LogStore service)
    gossip_port: int
    http_port: int   # /healthz, /metrics (METRICS_PORT)
    proc: Proc

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop()


def start_woodpecker_logstores(binary: str, cfg: Any, workdir: Path, n: int = 3, *, shipped: bool = False,
                               timeout: float = 60.0) -> list[WoodpeckerLogStore]:
    """``n`` of Woodpecker's own LogStore servers (``binary``: ``woodpecker``), one gossip ring on
    loopback, on the etcd and MinIO of picchio's Config ``cfg`` (storage type service); data dirs,
    config and logs under ``workdir``.  ``shipped``: the flush timers of Woodpecker's shipped
    woodpecker.yaml (:func:`shipped_sync`) instead of :func:`wp_config`'s shorter test timer.
    Ready = gRPC port open and /healthz answering; on failure the ones started are stopped.
    A Woodpecker client finds them through their endpoints as seeds (``wp_config(seeds=…)``);
    picchio's only once registered for it (:func:`register_in_etcd`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
    seeds = [f"127.0.0.1:{p}" for p, _, _ in ports]
    conf = wp_config(cfg, workdir / f"{unique('wp-logstore')}.yaml", storage="service", seeds=seeds,
                     **({"sync_ms": None} if shipped else {}))
    if shipped:
        shipped_sync(conf)
    gossip = ",".join(f"127.0.0.1:{g}" for _, g, _ in ports)
    stores: list[WoodpeckerLogStore] = []
    try:
        for k, (port, gport, hport) in enumerate(ports):
            name = f"wp-logstore-{k}-{port}"
            data = workdir / name
            data.mkdir()
            argv = [binary, "server", "--service-port", str(port), "--gossip-port", str(gport),
                    "--node-name", name, "--data-dir", str(data), "--config", str(conf), "--seeds", gossip,
                    "--advertise-gossip-addr", f"127.0.0.1:{gport}", "--advertise-service-addr", f"127.0.0.1:{port}",
                    "--external-default-config", str(data / "no-default.yaml"),
                    "--external-user-config", str(data / "no-user.yaml")]
            proc = Proc(name, argv, workdir / f"{name}.log", env={"METRICS_PORT": str(hport)}).start()
            stores.append(WoodpeckerLogStore(name, port, gport, hport, proc))
        for s in stores:
            s.proc.wait_ready(lambda s=s: port_open("127.0.0.1", s.port) and _healthy(s.http_port), timeout=timeout)
    except BaseException:
        for s in stores:
            s.stop()
        raise
    return stores


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
        return r.status == 200


def register_in_etcd(cfg, stores: list, timeout: float = 10.0) -> None:
    """Woodpecker's LogStores find each other by gossip and never write to etcd; picchio's client
    picks ensembles from ``{prefix}/logstores/{nodeId}`` registrations.  So the test registers
    Woodpecker's LogStores there itself, as picchio's own LogStores would (no instance id: Woodpecker
    has no data-dir cookie, so no replica identity is checked for them).  Through etcd's JSON gateway."""
    endpoint = cfg["etcd.endpoints"][0]
    for s in stores:
        key = f"{cfg.meta_prefix}/logstores/{s.name}".encode()
        val = json.dumps({"nodeId": s.name, "endpoint": s.endpoint, "zone": "", "tls": False}).encode()
        body = json.dumps({"key": base64.b64encode(key).decode(), "value": base64.b64encode(val).decode()})
        req = urllib.request.Request(f"http://{endpoint}/v3/kv/put", body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            assert r.status == 200


@dataclass
class Wpctl:
    """``wpctl`` bound to one woodpecker.yaml; Woodpecker's own log goes to ``log_file``."""

    binary: str
    config: Path
    log_file: Path

    def argv(self, cmd: str, *args: str, timeout: float = RUN_TIMEOUT - 10) -> list[str]:
        return [self.binary, cmd, "--config", str(self.config), "--log-file", str(self.log_file),
                "--timeout", f"{timeout:.0f}s", *args]

    def run(self, cmd: str, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True) -> list[dict]:
        """Run to completion; the JSON lines it printed.  ``check``: fail unless it exited 0 and
        its last line is ``done``."""
        p = subprocess.run(self.argv(cmd, *args, timeout=timeout - 10), capture_output=True, text=True,
                           timeout=timeout)
        lines = _parse(p.stdout)
        if check and (p.returncode != 0 or not lines or lines[-1].get("op") != "done"):
            raise AssertionError(f"wpctl {cmd} {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\n"
                                 f"stderr:\n{p.stderr[-2000:]}\nwoodpecker log tail:\n{self.log_tail()}")
        return lines

    def start(self, cmd: str, *args: str, timeout: float = RUN_TIMEOUT) -> "Running":
        """Run in the background; its lines arrive on ``Running.lines`` as they are printed."""
        p = subprocess.Popen(self.argv(cmd, *args, timeout=timeout - 10), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        return Running(self, p, time.monotonic() + timeout)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _parse(out: str) -> list[dict]:
    lines = []
    for raw in out.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@dataclass
class Running:
    w: Wpctl
    proc: subprocess.Popen
    deadline: float
    lines: "queue.Queue[tuple[float, dict]]" = field(default_factory=queue.Queue)
    seen: list[tuple[float, dict]] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            raw = raw.strip()
            if raw.startswith("{"):
                self.lines.put((time.monotonic(), json.loads(raw)))

    def next_line(self, timeout: float) -> tuple[float, dict] | None:
        try:
            item = self.lines.get(timeout=max(0.0, min(timeout, self.deadline - time.monotonic())))
        except queue.Empty:
            return None
        self.seen.append(item)
        return item

    def until(self, pred, what: str, timeout: float = 60.0) -> dict:
        """Lines until one satisfies ``pred``; fail naming ``what`` at the deadline."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            item = self.next_line(end - time.monotonic())
            if item and pred(item[1]):
                return item[1]
            if item is None and self.proc.poll() is not None and self.lines.empty():
                break
        raise AssertionError(f"wpctl never printed {what}; lines: {[d for _, d in self.seen][-10:]}\n"
                             f"stderr: {self._stderr()}\nwoodpecker log tail:\n{self.w.log_tail()}")

    def finish(self, timeout: float = 60.0) -> list[dict]:
        """Wait for exit (within ``timeout``); every line it printed."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"wpctl did not exit within {timeout}s; log tail:\n{self.w.log_tail()}")
        while self.next_line(0.5) is not None:
            pass
        return [d for _, d in self.seen]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()[-2000:]
