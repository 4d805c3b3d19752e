"""TLS material named in the configuration: which paths count as set, and
reading a PEM file with an error that names the setting and the path —
never the contents (a private key must not reach a message).  Shared by the
etcd connection (``meta.etcdconn``) and the S3 client (``storage.s3``)."""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

# Woodpecker's shipped placeholders: a path still at one of them means "not set"
# (people copy woodpecker.yaml whole; its example paths never exist).
PLACEHOLDERS = frozenset({"/path/to/etcd-client.pem", "/path/to/etcd-client-key.pem", "/path/to/ca.pem",
                          "/path/to/public.crt"})


def given_path(value: str | None) -> str:
    """A configured file path, or '' when unset or still Woodpecker's placeholder."""
    v = (value or "").strip()
    return "" if v in PLACEHOLDERS else v


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file, or a ConfigError naming ``what`` (the key or
    spec field) and the path — never the contents."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror or type(e).__name__}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what}: {path} is not a PEM file")
    return data
