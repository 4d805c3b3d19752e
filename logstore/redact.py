"""Keeping secrets out of messages: the one redaction helper.

Why a helper at all: the values we must never print — S3 keys, the etcd
password, private keys — reach error text through places we do not write
ourselves (botocore and gRPC exception strings, YAML parser snippets, a
Kubernetes API error echoing a request body).  Rather than trusting every
third-party message, each boundary that *builds* an error or a log line from
foreign text passes it through :func:`redact` with the secrets it knows of:

- ``MetaStore`` (etcd) and ``S3`` errors, with the configuration's secrets;
- ``Config`` parsing: a bad value of a ``secret`` key is never echoed, and a
  YAML syntax error is reported by line and column, not by a snippet;
- the CLI's and the LogStore's last-resort handlers, and
  :class:`SecretFilter` on their log handlers;
- the operator's conditions, events and log records, with the Secrets'
  values it read.

Pure (no I/O); sits beside :mod:`logstore.config` in the layering.
"""
from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
_MIN_LEN = 4  # shorter "secrets" (e.g. "a") would blank out ordinary text; no real credential is that short

# A PEM private key block, whatever it is called (RSA, EC, ENCRYPTED, …).
_PEM_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S)
# AWS signature v4 pieces that some servers echo back in error bodies.
_SIGV4 = re.compile(r"(Signature=)[0-9a-fA-F]{16,}|(X-Amz-Signature=)[0-9a-fA-F]{16,}")


def redact(text: Any, secrets: Iterable[str | None] = ()) -> str:
    """``str(text)`` with every known secret value, every PEM private key and
    every SigV4 signature replaced by ``***``.  Longer secrets first, so one
    that contains another is masked whole."""
    out = str(text)
    values = {s for s in secrets if s and len(s) >= _MIN_LEN}
    values |= {base64.b64encode(s.encode()).decode() for s in values}  # as a Secret's data (an API error may echo it)
    for s in sorted(values, key=len, reverse=True):
        out = out.replace(s, MASK)
    out = _PEM_KEY.sub(MASK, out)
    return _SIGV4.sub(lambda m: (m.group(1) or m.group(2)) + MASK, out)


def config_secrets(config: Mapping[str, Any]) -> list[str]:
    """The values of a configuration's secret keys (``minio.secretAccessKey``,
    ``etcd.auth.password`` …) — what :func:`redact` needs for that config.
    The access key id counts too: it is half a credential."""
    from .config_table import SETTINGS

    out = []
    for s in SETTINGS:
        if s.secret and s.kind != "alias":
            v = config.get(s.key)
            if isinstance(v, str) and v:
                out.append(v)
    return out


class SecretFilter(logging.Filter):
    """A logging filter that redacts ``secrets`` from each record's final
    message (arguments included) before any handler formats it.  Installed on
    the handlers of the processes we start (LogStore, CLI, operator): a
    defence in depth for log lines built from third-party exception text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= _MIN_LEN]

    def add(self, *secrets: str | None) -> None:
        """More values to hide (the operator learns Secrets as it reads them)."""
        for s in secrets:
            if s and len(s) >= _MIN_LEN and s not in self.secrets:
                self.secrets.append(s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is the handler's business, not ours
            return True
        clean = redact(msg, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            # the traceback text is formatted later from exc_info: pre-format it redacted
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info), self.secrets)
            record.exc_info = None
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        return True


def install(secrets: Iterable[str | None], logger: logging.Logger | None = None) -> SecretFilter:
    """Put one :class:`SecretFilter` on every handler of ``logger`` (the root
    logger by default) and return it.  Entry points call this after logging
    is configured and the configuration is loaded."""
    f = SecretFilter(secrets)
    for h in (logger or logging.getLogger()).handlers:
        h.addFilter(f)
    return f
