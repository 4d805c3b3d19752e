"""A real S3 server on loopback: MinIO (the Go-module build, `make components`).

No silent fallback: when MinIO is not built, ``start_s3`` fails and names the
command that builds it.  The moto server (``prefer="moto"``) is only for a
caller that asks for it by name and says why — moto does not check
credentials and never applies lifecycle rules."""
from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, find_binary, free_port

ACCESS_KEY = "picchioadmin"
SECRET_KEY = "picchio-secret-key"


@dataclass
class S3Server:
    flavour: str  # "minio" | "moto"
    host: str
    port: int
    access_key: str
    secret_key: str
    proc: Proc

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.proc.stop()


def minio_binary() -> str | None:
    """The MinIO build pinned in e2e/cluster/versions.env, else any cached
    ``minio-*`` build (or $PICCHIO_MINIO_BIN)."""
    from .build import MissingComponent, component_binary

    try:
        return component_binary("minio")
    except MissingComponent:
        return find_binary("PICCHIO_MINIO_BIN", "minio", [])


class MinioNotBuilt(RuntimeError):
    pass


def start_s3(workdir: Path, prefer: str = "minio") -> S3Server:
    """Start MinIO — or, only when ``prefer='moto'`` says so, the moto server."""
    if prefer == "moto":
        return _start_moto(workdir)
    if prefer != "minio":
        raise ValueError(f"unknown S3 server {prefer!r} (minio | moto)")
    mb = minio_binary()
    if not mb:
        raise MinioNotBuilt("MinIO is not built: run `make components` (or `make components ONLY=minio`) — "
                            "the tests never fall back to a fake S3")
    return _start_minio(workdir, mb)


def _live(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


def _minio_ready(url: str) -> bool:
    """MinIO's health endpoints answer 200 as soon as the HTTP server is up,
    and flag a not-yet-initialised object layer only with the header
    ``x-minio-server-status: offline``; requests before then fail with 503
    XMinioServerNotInitialized, so wait for the header to go away."""
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200 and r.headers.get("x-minio-server-status") != "offline"


def _start_minio(workdir: Path, binary: str) -> S3Server:
    data = workdir / "minio.data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    port, console = free_port(), free_port()
    env = {
        "MINIO_ROOT_USER": ACCESS_KEY,
        "MINIO_ROOT_PASSWORD": SECRET_KEY,
        "MINIO_SCANNER_SPEED": "fastest",
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
    }
    argv = [binary, "server", str(data), "--address", f"127.0.0.1:{port}",
            "--console-address", f"127.0.0.1:{console}", "--quiet"]
    proc = Proc("minio", argv, workdir / "minio.log", env=env).start()
    proc.wait_ready(lambda: _minio_ready(f"http://127.0.0.1:{port}/minio/health/ready"), timeout=60)
    return S3Server("minio", "127.0.0.1", port, ACCESS_KEY, SECRET_KEY, proc)


def _start_moto(workdir: Path) -> S3Server:
    port = free_port()
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = Proc("moto", [exe, "-H", "127.0.0.1", "-p", str(port)], workdir / "moto.log").start()
    proc.wait_ready(lambda: _live(f"http://127.0.0.1:{port}/moto-api/"), timeout=60)
    return S3Server("moto", "127.0.0.1", port, "testing", "testing", proc)
