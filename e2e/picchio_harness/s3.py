"""A real S3 server on loopback: the product's starter (``logstore.dev.s3``),
given exactly the MinIO build pinned in e2e/cluster/versions.env when it is
built, so tests run the version the pins name."""
from __future__ import annotations

from pathlib import Path

from logstore.dev import s3 as _s3
from logstore.dev.s3 import ACCESS_KEY, SECRET_KEY, MinioNotBuilt, S3Server  # noqa: F401 - re-exports


def minio_binary() -> str | None:
    """The pinned MinIO build, else whatever the product would find."""
    from .build import MissingComponent, component_binary

    try:
        return component_binary("minio")
    except MissingComponent:
        return _s3.minio_binary()


def start_s3(workdir: Path, prefer: str = "minio", certs_dir: Path | None = None) -> S3Server:
    """MinIO (the pinned build) — or, only when ``prefer='moto'`` says so, moto.
    ``certs_dir``: serve https from ``public.crt``/``private.key`` there."""
    return _s3.start_s3(workdir, prefer, binary=minio_binary() if prefer == "minio" else None, certs_dir=certs_dir)
