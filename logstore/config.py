"""The one table of configuration defaults.

Keys follow Woodpecker's ``woodpecker.yaml`` so a user can carry settings over;
defaults are the shipped yaml's (Woodpecker has a second, disagreeing set of
built-in defaults — picchio has only this table).  Every other module reads its
settings from a :class:`Config`; nothing else holds a default.

Units: ``size`` values accept ints (bytes) or strings such as ``"256M"``
(SI: K=10^3, M=10^6, G=10^9; also KB/MB/GB) and ``"64Mi"`` (binary: Ki/Mi/Gi,
KiB/MiB/GiB).  ``duration`` values accept ints in the key's own unit (shown in
the table) or strings such as ``"10ms"``, ``"2s"``, ``"10m"``, ``"1h"``; they
are stored as float seconds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    key: str
    type: str  # str | int | float | bool | size | duration | list[str] | enum
    default: Any
    doc: str
    unit: str = ""  # for duration ints: "ms" or "s"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    pattern: str = ""  # "endpoint": every item is [http(s)://]host:port


SETTINGS: tuple[Setting, ...] = (
    Setting("etcd.endpoints", "list[str]", ["localhost:2379"], "etcd client endpoints, host:port", pattern="endpoint"),
    Setting("etcd.rootPath", "str", "by-dev", "etcd key root; metadata lives under {rootPath}/{woodpecker.meta.prefix}"),
    Setting("etcd.username", "str", "", "etcd user (empty: no authentication)"),
    Setting("etcd.password", "str", "", "etcd password"),
    Setting("etcd.requestTimeout", "duration", 10.0, "deadline of one etcd call", unit="s", minimum=0.001),
    Setting("woodpecker.meta.prefix", "str", "woodpecker", "metadata prefix below etcd.rootPath"),
    Setting("woodpecker.storage.type", "enum", "minio", "where segment data lives", choices=("local", "minio", "service")),
    Setting("woodpecker.storage.rootPath", "str", "/var/lib/woodpecker", "local/shared file-system root (type local)"),
    Setting("minio.address", "str", "localhost", "S3 endpoint host"),
    Setting("minio.port", "int", 9000, "S3 endpoint port", minimum=1),
    Setting("minio.accessKeyID", "str", "minioadmin", "S3 access key"),
    Setting("minio.secretAccessKey", "str", "minioadmin", "S3 secret key"),
    Setting("minio.bucketName", "str", "a-bucket", "bucket holding the log data"),
    Setting("minio.rootPath", "str", "files", "key prefix of all objects (and sub-directory for type local)"),
    Setting("minio.useSSL", "bool", False, "https to the S3 endpoint"),
    Setting("minio.createBucket", "bool", False, "create the bucket at client start if it is missing"),
    Setting("minio.region", "str", "", "S3 region (empty: us-east-1)"),
    Setting("minio.requestTimeout", "duration", 30.0, "deadline of one S3 request", unit="s", minimum=0.001),
    Setting("woodpecker.client.segmentRollingPolicy.maxSize", "size", 256_000_000, "roll a segment at this many bytes", minimum=1),
    Setting("woodpecker.client.segmentRollingPolicy.maxInterval", "duration", 600.0, "roll a segment at this age", unit="s", minimum=0.001),
    Setting("woodpecker.client.segmentRollingPolicy.maxBlocks", "int", 1000, "roll a segment at this many blocks", minimum=1),
    Setting("woodpecker.client.reader.storagePollInterval", "duration", 0.02,
            "how often a reader at the tail of another process's segment looks at storage", unit="ms", minimum=0.001),
    Setting("woodpecker.client.reader.metaPollInterval", "duration", 1.0,
            "how often a reader at the tail reads segment metadata from etcd", unit="ms", minimum=0.05),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxInterval", "duration", 0.2,
            "object storage: longest an entry waits before its block is flushed (a flush starts at once when idle)",
            unit="ms", minimum=0.0),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxIntervalForLocalStorage", "duration", 0.01,
            "local storage: longest an entry waits before its block is synced (a sync starts at once when idle)",
            unit="ms", minimum=0.0),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxFlushSize", "size", 2_000_000,
            "object storage: a block is closed once its payload reaches this size", minimum=1),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxEntries", "int", 10_000,
            "most entries buffered before append() waits (back-pressure)", minimum=1),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxBytes", "size", 256_000_000,
            "most bytes buffered before append() waits (back-pressure); also the largest local block", minimum=1),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxFlushThreads", "int", 32,
            "object storage: block uploads in flight at once (acknowledged in order)", minimum=1),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxFlushRetries", "int", 5,
            "attempts of one block write before the writer fails", minimum=1),
    Setting("woodpecker.logstore.segmentSyncPolicy.retryInterval", "duration", 1.0,
            "first back-off between block write attempts (doubles each time)", unit="ms", minimum=0.0),
    Setting("woodpecker.logstore.segmentCompactionPolicy.maxBytes", "size", 2_000_000,
            "object storage: target size of a merged m_k.blk object", minimum=1),
    Setting("woodpecker.logstore.segmentCompactionPolicy.enabled", "bool", True,
            "object storage: compact completed segments into m_k.blk objects"),
    Setting("woodpecker.logstore.segmentSyncPolicy.maxIntervalForService", "duration", 0.001,
            "service mode: longest an entry waits on a LogStore before its block is synced", unit="ms", minimum=0.0),
    # service mode: the LogStore server
    Setting("woodpecker.logstore.host", "str", "0.0.0.0", "LogStore: address the gRPC server binds"),
    Setting("woodpecker.logstore.port", "int", 18080, "LogStore: gRPC port", minimum=1),
    Setting("woodpecker.logstore.advertiseAddress", "str", "",
            "LogStore: host:port clients use (empty: host:port, with the pod/host name for 0.0.0.0)"),
    Setting("woodpecker.logstore.httpPort", "int", 9091, "LogStore: /healthz, /readyz and /metrics port", minimum=0),
    Setting("woodpecker.logstore.nodeId", "str", "", "LogStore: node id (empty: derived from the advertised address)"),
    Setting("woodpecker.logstore.zone", "str", "", "LogStore: availability zone, for zone-spread ensembles"),
    Setting("woodpecker.logstore.registrationTTL", "duration", 10.0,
            "LogStore: lease TTL of its registration in etcd", unit="s", minimum=1.0),
    Setting("woodpecker.logstore.disk.maxBytes", "size", 0,
            "LogStore: budget for staged data (0: the file system's size)", minimum=0),
    Setting("woodpecker.logstore.disk.softLimit", "float", 0.85,
            "LogStore: above this fraction of the budget, appends get a retriable push-back", minimum=0.0),
    Setting("woodpecker.logstore.disk.hardLimit", "float", 0.95,
            "LogStore: above this fraction of the budget, appends are rejected", minimum=0.0),
    Setting("woodpecker.logstore.tls.enabled", "bool", False, "TLS on the LogStore gRPC port"),
    Setting("woodpecker.logstore.tls.certFile", "str", "", "LogStore server certificate (PEM)"),
    Setting("woodpecker.logstore.tls.keyFile", "str", "", "LogStore server private key (PEM)"),
    Setting("woodpecker.logstore.tls.caFile", "str", "",
            "CA bundle: clients verify the server with it; the server verifies client certificates with it"),
    Setting("woodpecker.logstore.tls.requireClientCert", "bool", False, "LogStore demands client certificates"),
    Setting("woodpecker.logstore.tls.clientCertFile", "str", "", "client certificate for LogStores that demand one"),
    Setting("woodpecker.logstore.tls.clientKeyFile", "str", "", "client private key"),
    Setting("woodpecker.logstore.tls.serverName", "str", "", "name to verify in the server certificate (empty: host)"),
    # service mode: the client's quorum
    Setting("woodpecker.client.quorum.ensembleSize", "int", 3, "service mode: LogStores holding a segment", minimum=1),
    Setting("woodpecker.client.quorum.writeQuorum", "int", 3, "service mode: LogStores each entry is sent to", minimum=1),
    Setting("woodpecker.client.quorum.ackQuorum", "int", 2, "service mode: durable copies before an ack", minimum=1),
    Setting("woodpecker.client.quorum.strategy", "enum", "random", "service mode: ensemble choice",
            choices=("random", "zone-spread")),
    Setting("woodpecker.client.quorum.requestTimeout", "duration", 5.0,
            "service mode: how long an append waits for its quorum before failing", unit="s", minimum=0.01),
)

_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}
_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(value: Any, key: str = "value") -> int:
    """``"256M"`` → 256000000, ``"64Mi"`` → 67108864, ``1024`` → 1024."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size (bytes or e.g. '256M'), got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            n = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
            if n.is_integer():
                return int(n)
    raise ConfigError(f"{key}: expected a size (bytes or e.g. '256M', '64Mi'), got {value!r}")


def parse_duration(value: Any, key: str = "value", unit: str = "s") -> float:
    """``"10ms"`` → 0.01; a bare number is in the key's unit (``ms`` or ``s``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration (e.g. '10ms', '2s'), got {value!r}")
    if isinstance(value, (int, float)):
        return float(value) * _DUR_UNITS[unit]
    if isinstance(value, str):
        m = _DUR_RE.match(value)
        if m:
            return float(m.group(1)) * _DUR_UNITS[m.group(2) or unit]
    raise ConfigError(f"{key}: expected a duration (e.g. '10ms', '2s', '10m'), got {value!r}")


def split_endpoint(text: str, key: str = "endpoint") -> tuple[str, int]:
    """``"host:port"`` (optionally ``http://`` / ``https://``) → (host, port)."""
    rest = re.sub(r"^https?://", "", text.strip())
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected host:port (e.g. 'localhost:2379'), got {text!r}")
    return host.strip("[]"), int(port)


def _coerce(s: Setting, value: Any) -> Any:
    k = s.key
    if s.type == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{k}: expected a string, got {type(value).__name__} {value!r}")
        out: Any = value
    elif s.type == "enum":
        if value not in s.choices:
            raise ConfigError(f"{k}: expected one of {', '.join(s.choices)}, got {value!r}")
        out = value
    elif s.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise ConfigError(f"{k}: expected an integer, got {value!r}")
        out = value
    elif s.type == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{k}: expected true or false, got {value!r}")
        out = value
    elif s.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{k}: expected a number, got {value!r}") from None
        out = float(value)
    elif s.type == "size":
        out = parse_size(value, k)
    elif s.type == "duration":
        out = parse_duration(value, k, s.unit or "s")
    elif s.type == "list[str]":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{k}: expected a non-empty list of strings, got {value!r}")
        out = list(value)
    else:  # pragma: no cover - the table is ours
        raise AssertionError(s.type)
    if s.pattern == "endpoint":
        for item in out:
            split_endpoint(item, k)
    if s.minimum is not None and isinstance(out, (int, float)) and out < s.minimum:
        raise ConfigError(f"{k}: must be ≥ {s.minimum}, got {value!r}")
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if not isinstance(k, str):
            raise ConfigError(f"{prefix}{k!r}: configuration keys must be strings")
        full = f"{prefix}{k}"
        if full in _BY_KEY:
            yield full, v
        elif isinstance(v, Mapping):
            yield from _flatten(v, full + ".")
        else:
            raise ConfigError(f"{full}: unknown configuration key")


def validate_overrides(d: Mapping[str, Any]) -> dict[str, Any]:
    """Check a (nested or dotted) mapping against the table; return the parsed
    values by full key.  Raises :class:`ConfigError` naming the first bad key."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {type(d).__name__}")
    return {k: _coerce(_BY_KEY[k], v) for k, v in _flatten(d)}


def _env_name(key: str) -> str:
    return "PICCHIO_" + key.upper().replace(".", "_")


def _render_duration(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:g}ms" if ms < 1000 or not float(seconds).is_integer() else f"{seconds:g}s"


class Config(Mapping[str, Any]):
    """Validated settings, read by full dotted key: ``config["minio.bucketName"]``."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        parsed = {s.key: s.default for s in SETTINGS}
        parsed.update(validate_overrides(values or {}))
        self._values = parsed

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        return cls(d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        import yaml

        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {path}: {e.strerror or e}") from e
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (YAML) file") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        return cls(data)

    def replace(self, **dotted: Any) -> "Config":
        """A copy with some keys changed; keys may use ``__`` for dots."""
        changes = {k.replace("__", "."): v for k, v in dotted.items()}
        return self.with_values(changes)

    def with_values(self, changes: Mapping[str, Any]) -> "Config":
        new = Config.__new__(Config)
        new._values = dict(self._values)
        new._values.update(validate_overrides(changes))
        return new

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise ConfigError(f"{key}: unknown configuration key") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {k: ("***" if "secret" in k.lower() or "password" in k.lower() else v) for k, v in self._values.items()}
        return f"Config({shown!r})"

    def with_env(self, environ: Mapping[str, str] | None = None) -> "Config":
        """Overrides from ``PICCHIO_<KEY>`` variables (the key upper-cased, dots
        as underscores: ``PICCHIO_MINIO_SECRETACCESSKEY``) — how secrets reach
        pods without entering a ConfigMap.  Entry points call this; the library
        itself never reads the environment."""
        import os
        env = os.environ if environ is None else environ
        changes = {s.key: env[_env_name(s.key)] for s in SETTINGS if _env_name(s.key) in env}
        return self.with_values(changes) if changes else self

    def to_dict(self, nested: bool = False) -> dict[str, Any]:
        """The settings in a form ``Config.from_dict`` reads back unchanged
        (durations as ``"…s"`` strings); ``nested`` gives woodpecker.yaml's shape."""
        flat = {k: (_render_duration(v) if _BY_KEY[k].type == "duration" else v) for k, v in self._values.items()}
        if not nested:
            return flat
        out: dict[str, Any] = {}
        for k, v in flat.items():
            node = out
            *parents, leaf = k.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
        return out

    # Derived values used by several layers, computed in one place.
    @property
    def meta_prefix(self) -> str:
        """``{etcd.rootPath}/{woodpecker.meta.prefix}`` with Woodpecker's rule for empty parts."""
        parts = [p.strip("/") for p in (self["etcd.rootPath"], self["woodpecker.meta.prefix"]) if p.strip("/")]
        prefix = "/".join(parts)
        return prefix if prefix and prefix != "." else "woodpecker"

    @property
    def storage_type(self) -> str:
        return self["woodpecker.storage.type"]
