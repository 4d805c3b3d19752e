"""A real etcd on loopback: the Go-module build (3.6) when cached, else
Debian's etcd-server (3.4), which is enough for the WAL's metadata."""
from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, find_binary, free_port


@dataclass
class EtcdServer:
    endpoint: str  # host:port, as etcd.endpoints takes it
    data_dir: Path
    proc: Proc
    binary: str

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def stop(self) -> None:
        self.proc.stop()


def etcd_binary() -> str:
    b = find_binary("PICCHIO_ETCD_BIN", "etcd", ["/usr/bin/etcd", "/usr/local/bin/etcd"])
    if not b:
        raise RuntimeError("no etcd binary: run `make deps` (apt-get install etcd-server) or build it")
    return b


def _version(binary: str) -> str:
    import subprocess
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout


def etcd36_binary() -> str:
    """The Go-module build of etcd 3.6 only: kube-apiserver 1.34 refuses the
    3.4 that Debian ships (it wants >= 3.5.11)."""
    from .build import component_binary

    return component_binary("etcd")


def start_etcd(workdir: Path, name: str = "picchio-etcd", binary: str | None = None) -> EtcdServer:
    """Start a single-member etcd on two free loopback ports and wait until
    /health answers.  ``binary`` picks a specific build (see etcd36_binary)."""
    binary = binary or etcd_binary()
    data = workdir / f"{name}.data"
    shutil.rmtree(data, ignore_errors=True)
    client, peer = free_port(), free_port()
    argv = [
        binary, "--name", name, "--data-dir", str(data),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{peer}",
    ]
    if "3.4." not in _version(binary):
        argv.append("--unsafe-no-fsync")  # test data only: keeps metadata tests fast
    proc = Proc(name, argv, workdir / f"{name}.log", env={"ETCD_UNSUPPORTED_ARCH": ""}).start()

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as r:
            return json.loads(r.read()).get("health") == "true"

    proc.wait_ready(healthy, timeout=30)
    return EtcdServer(f"127.0.0.1:{client}", data, proc, binary)
