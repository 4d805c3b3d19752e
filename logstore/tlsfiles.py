"""TLS files that may be replaced while the process runs (certificate rotation).

Why: cert-manager or the operator renews certificates by updating a
Kubernetes Secret, whose volume is swapped atomically (``..data`` symlink);
a LogStore or a writer must pick the new files up without a restart.  The
check is cheap — ``os.stat`` (following symlinks) of each file, at most once
per ``interval`` — and the contents are re-read only when a file's
(device, inode, size, mtime) changed.  A set of files that is unusable (one
missing, a key that does not match its certificate, a CA file without a
certificate) is reported once and not used; the caller keeps what it has.
"""
from __future__ import annotations

import os
import ssl
import time
from typing import Sequence

Signature = tuple[tuple[int, int, int, int] | None, ...]


class TLSFileError(Exception):
    """The current files cannot be used (the message names files, never contents)."""


def check_pem(cert_file: str, key_file: str, ca: bytes | None) -> None:
    """Raise TLSFileError unless ``cert_file``/``key_file`` are a certificate and
    its key and ``ca`` (if any) holds at least one certificate (a bundle of
    several — CA rotation overlap — is fine)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert_file or key_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise TLSFileError(f"{cert_file} / {key_file}: not a usable PEM certificate and matching key: "
                               f"{getattr(e, 'reason', None) or type(e).__name__}") from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise TLSFileError(f"CA file: not a usable PEM certificate bundle: "
                               f"{getattr(e, 'reason', None) or type(e).__name__}") from None


class WatchedFiles:
    """``paths`` ("" = not configured, read as None), re-read when they change."""

    def __init__(self, paths: Sequence[str], interval: float = 1.0) -> None:
        self.paths = tuple(paths)
        self.interval = interval
        self._seen: Signature | None = None
        self._checked = -1e18

    def _signature(self) -> Signature:
        out = []
        for p in self.paths:
            try:
                st = os.stat(p) if p else None
            except OSError:
                st = None
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if st else None)
        return tuple(out)

    def read(self) -> tuple[bytes | None, ...]:
        """The contents now (OSError if a configured file cannot be read); they
        become the version later calls of :meth:`changed` compare with."""
        sig = self._signature()
        data = tuple(open(p, "rb").read() if p else None for p in self.paths)
        self._seen, self._checked = sig, time.monotonic()
        return data

    def changed_since_read(self) -> bool:
        """Whether a file changed after the last :meth:`read` (no rate limit):
        contents validated by path must be the ones read."""
        return self._signature() != self._seen

    def changed(self) -> bool:
        """True (at most once per change, at most one check per interval) when
        a file differs from the version last :meth:`read`."""
        now = time.monotonic()
        if now - self._checked < self.interval:
            return False
        self._checked = now
        sig = self._signature()
        if sig == self._seen:
            return False
        self._seen = sig  # a broken set is reported once, not on every check
        return True
