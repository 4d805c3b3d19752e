"""A real etcd on loopback for ``picchio dev etcd`` and ``picchio bench``: the
newest cached Go-module build (``$PICCHIO_CACHE/bin/etcd-*``, etcd 3.6) when
there is one, else Debian's etcd-server (3.4), which is enough for the WAL's
own metadata (only kube-apiserver needs ≥ 3.5.11)."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .procs import ComponentMissing, Proc, find_binary, free_port


class EtcdNotFound(ComponentMissing):
    """No etcd binary anywhere we look; the message says how to get one."""


@dataclass(frozen=True)
class EtcdServerTLS:
    """TLS for the client port: etcd's serving certificate and key, and the CA
    whose client certificates it accepts (``--client-cert-auth``; None: TLS
    without client certificates)."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    max_version: str = ""  # e.g. "TLS1.2" (--tls-max-version): an etcd that cannot do TLS 1.3


@dataclass
class EtcdServer:
    endpoint: str  # host:port, as etcd.endpoints takes it
    data_dir: Path
    proc: Proc
    binary: str
    tls: bool = False  # the client port serves TLS (the endpoint needs etcd.ssl.enabled or https://)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    def stop(self) -> None:
        self.proc.stop()


def etcd_binary() -> str:
    """``$PICCHIO_ETCD_BIN``, else the newest cached build, else a system etcd."""
    b = find_binary("PICCHIO_ETCD_BIN", "etcd", ["/usr/bin/etcd", "/usr/local/bin/etcd"])
    if not b:
        raise EtcdNotFound("no etcd binary: `apt-get install etcd-server` (or `make deps`), "
                           "or set PICCHIO_ETCD_BIN")
    return b


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout


def start_etcd(workdir: Path, name: str = "picchio-etcd", binary: str | None = None,
               tls: EtcdServerTLS | None = None) -> EtcdServer:
    """Start a single-member etcd on two free loopback ports and wait until
    /health answers.  ``binary`` picks a specific build.  With ``tls`` the
    client port serves TLS only (``--cert-file/--key-file``, and with a
    client CA ``--client-cert-auth --trusted-ca-file``); /health is then read
    from a separate plaintext metrics port, so the readiness check needs no
    client certificate."""
    binary = binary or etcd_binary()
    data = workdir / f"{name}.data"
    shutil.rmtree(data, ignore_errors=True)
    client, peer = free_port(), free_port()
    scheme = "https" if tls else "http"
    argv = [
        binary, "--name", name, "--data-dir", str(data),
        "--listen-client-urls", f"{scheme}://127.0.0.1:{client}",
        "--advertise-client-urls", f"{scheme}://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{peer}",
    ]
    if "3.4." not in _version(binary):
        argv.append("--unsafe-no-fsync")  # throw-away data only: keeps metadata-heavy runs fast
    health = client
    if tls:
        health = free_port()
        argv += ["--cert-file", str(tls.cert), "--key-file", str(tls.key),
                 "--listen-metrics-urls", f"http://127.0.0.1:{health}"]
        if tls.client_ca:
            argv += ["--client-cert-auth", "--trusted-ca-file", str(tls.client_ca)]
        if tls.max_version:
            argv += ["--tls-max-version", tls.max_version]
    proc = Proc(name, argv, workdir / f"{name}.log", env={"ETCD_UNSUPPORTED_ARCH": ""}).start()

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/health", timeout=1) as r:
            return json.loads(r.read()).get("health") == "true"

    proc.wait_ready(healthy, timeout=30)
    return EtcdServer(f"127.0.0.1:{client}", data, proc, binary, tls=tls is not None)

