"""A real S3 server on loopback for ``picchio dev minio`` and ``picchio bench``:
MinIO — ``$PICCHIO_MINIO_BIN``, else the newest cached Go-module build
(``$PICCHIO_CACHE/bin/minio-*``, what ``make components ONLY=minio`` makes in a
checkout), else ``minio`` on PATH.

No silent fallback: when there is no MinIO, ``start_s3`` raises
:class:`MinioNotBuilt` naming how to get one.  The moto server
(``prefer="moto"``) is only for a caller that asks for it by name and says
why — moto does not check credentials and never applies lifecycle rules."""
from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import ComponentMissing, Proc, find_binary, free_port

ACCESS_KEY = "picchioadmin"
SECRET_KEY = "picchio-secret-key"


class MinioNotBuilt(ComponentMissing):
    """No MinIO binary anywhere we look; the message says how to get one."""


@dataclass
class S3Server:
    flavour: str  # "minio" | "moto"
    host: str
    port: int
    access_key: str
    secret_key: str
    proc: Proc
    secure: bool = False  # serves https (minio.useSSL: true)

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"

    def stop(self) -> None:
        self.proc.stop()


def minio_binary() -> str | None:
    """``$PICCHIO_MINIO_BIN``, the newest cached ``minio-*`` build, or ``minio`` on PATH."""
    return find_binary("PICCHIO_MINIO_BIN", "minio", [p for p in [shutil.which("minio")] if p])


def start_s3(workdir: Path, prefer: str = "minio", binary: str | None = None,
             certs_dir: Path | None = None) -> S3Server:
    """Start MinIO (``binary``, else :func:`minio_binary`) — or, only when
    ``prefer='moto'`` says so, the moto server.  ``certs_dir`` (MinIO only)
    holds ``public.crt``/``private.key``: MinIO then serves https only, and
    the readiness check trusts ``certs_dir/CAs/*.crt`` (put the issuing CA
    there)."""
    if prefer == "moto":
        return _start_moto(workdir)
    if prefer != "minio":
        raise ValueError(f"unknown S3 server {prefer!r} (minio | moto)")
    mb = binary or minio_binary()
    if not mb:
        raise MinioNotBuilt("MinIO is not built: run `make components ONLY=minio` in a checkout "
                            "(or set PICCHIO_MINIO_BIN) — picchio never falls back to a fake S3")
    return _start_minio(workdir, mb, certs_dir)


def _live(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


def _minio_ready(url: str, context: Any = None) -> bool:
    """MinIO's health endpoints answer 200 as soon as the HTTP server is up,
    and flag a not-yet-initialised object layer only with the header
    ``x-minio-server-status: offline``; requests before then fail with 503
    XMinioServerNotInitialized, so wait for the header to go away."""
    with urllib.request.urlopen(url, timeout=1, context=context) as r:
        return r.status == 200 and r.headers.get("x-minio-server-status") != "offline"


def _start_minio(workdir: Path, binary: str, certs_dir: Path | None = None) -> S3Server:
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
    context, scheme = None, "http"
    if certs_dir is not None:
        import ssl

        argv += ["--certs-dir", str(certs_dir)]
        context, scheme = ssl.create_default_context(), "https"
        for ca in sorted((certs_dir / "CAs").glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
    proc = Proc("minio", argv, workdir / "minio.log", env=env).start()
    proc.wait_ready(lambda: _minio_ready(f"{scheme}://127.0.0.1:{port}/minio/health/ready", context), timeout=60)
    return S3Server("minio", "127.0.0.1", port, ACCESS_KEY, SECRET_KEY, proc, secure=certs_dir is not None)


def _start_moto(workdir: Path) -> S3Server:
    port = free_port()
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = Proc("moto", [exe, "-H", "127.0.0.1", "-p", str(port)], workdir / "moto.log").start()
    proc.wait_ready(lambda: _live(f"http://127.0.0.1:{port}/moto-api/"), timeout=60)
    return S3Server("moto", "127.0.0.1", port, "testing", "testing", proc)
