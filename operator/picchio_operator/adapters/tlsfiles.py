"""TLS material from Secrets, as files for the operator's own clients.

Why files: gRPC takes PEM bytes, but boto3's ``verify=`` and the
``logstore.Client`` configuration (``etcd.ssl.tlsCACert`` …, the same keys
the pods use) take *paths*.  So the operator writes what it read from a
Secret into a private directory (0700, files 0600) and hands out paths.

Content-addressed (a directory per hash of the Secret's values): a rotated
Secret gets new files, while a client still holding the old paths keeps
working (boto3 re-reads its CA file for each new connection) — nothing is
rewritten or removed under it.  Old versions stay until the operator exits
(rotations are rare, and each is a few kilobytes).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


class TlsFiles:
    def __init__(self, root: Path | None = None) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="picchio-operator-tls-"))  # mode 0700
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._root.chmod(0o700)
        return self._root

    def write(self, namespace: str, secret: str, data: Mapping[str, str], keys: Sequence[str]) -> dict[str, str]:
        """``{key: path}`` of files holding ``data[key]`` for each key."""
        digest = hashlib.sha256("\0".join(f"{k}={data[k]}" for k in keys).encode()).hexdigest()[:16]
        base = self.root / namespace / secret
        d = base / digest
        if not d.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=self._ensure(base)))
            for key in keys:
                fd = os.open(tmp / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(data[key])
            try:
                os.rename(tmp, d)
            except OSError:  # written meanwhile by another pass: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
        return {key: str(d / key) for key in keys}

    def _ensure(self, p: Path) -> Path:
        """``p`` and every directory between it and the root, each 0700."""
        d = self.root
        for part in p.relative_to(d).parts:
            d = d / part
            d.mkdir(mode=0o700, exist_ok=True)
        return p

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
