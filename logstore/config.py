"""Configuration: parse and validate a ``woodpecker.yaml`` against the one table.

The table (keys, types, units, defaults, docs) is :data:`SETTINGS` in
:mod:`logstore.config_table`; every other module reads its settings from a
:class:`Config`, and nothing else holds a default.

Units are Woodpecker's (v0.1.35, ``common/config/utils.go``):

- ``size``: an int (bytes) or a string ``<int><suffix>``, suffix ``K/KB/M/MB/G/GB/T/TB``
  in any case, **binary** (``2MB`` = 2,097,152; ``256M`` = 268,435,456); no
  decimals, no space, no ``B``.  picchio also takes ``Ki/Mi/Gi/Ti`` (``KiB``…),
  the same binary units under their IEC names — an extra Woodpecker refuses.
- ``duration``: a bare int (or a string of one) is in the key's unit (``ms`` for
  Woodpecker's ``DurationMilliseconds`` keys such as ``etcd.requestTimeout``,
  ``s`` for ``DurationSeconds`` keys); other strings are Go durations
  (``"10ms"``, ``"1.5s"``, ``"1h30m"``).  picchio also takes a bare float in the
  key's unit.  Values are stored as float seconds.
- an empty YAML value (``userName:``) leaves the default, as Go's yaml.v3 does.
"""
from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from .config_table import SETTINGS, Setting
from .errors import ConfigError

__all__ = ["Config", "Setting", "SETTINGS", "parse_size", "parse_duration", "split_endpoint",
           "validate_overrides", "markdown_table", "go_path_join"]

log = logging.getLogger(__name__)

_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
_CANONICAL = tuple(s for s in SETTINGS if s.kind != "alias")
_WARNED: set[tuple[str, ...]] = set()
_Q = "woodpecker.client.quorum."
_REPLICAS = _Q + "quorumSelectStrategy.replicas"  # key sets already announced by warn_inert (once per process)

_SIZE_RE = re.compile(r"^([+-]?\d+)(k|kb|m|mb|g|gb|t|tb|ki|kib|mi|mib|gi|gib|ti|tib)?$")
_SIZE_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DUR_PART = re.compile(r"(\d*(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_size(value: Any, key: str = "value") -> int:
    """Woodpecker's ``parseSize``: ``"256M"`` → 268435456, ``"2MB"`` → 2097152,
    ``1024`` → 1024, ``""`` → 0; plus our ``"64Mi"`` → 67108864."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size (bytes or e.g. '256M'), got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return 0
        m = _SIZE_RE.match(text)
        if m:
            suffix = m.group(2)
            return int(m.group(1)) * _SIZE_UNITS[suffix[0] if suffix else None]
    raise ConfigError(f"{key}: expected a size (bytes or e.g. '256M', '2MB', '64Mi'; K/M/G are binary), got {value!r}")


def _go_duration(text: str) -> float | None:
    """Go's ``time.ParseDuration`` in seconds, or None if Go would refuse it."""
    s, sign = text, 1.0
    if s[:1] in ("+", "-"):
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(s):
        m = _GO_DUR_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            return None
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * total if s else None


def parse_duration(value: Any, key: str = "value", unit: str = "s") -> float:
    """Woodpecker's ``parseDuration`` in seconds: a bare number is in the key's
    unit (``ms`` or ``s``), anything else a Go duration (``"10ms"``, ``"1h30m"``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration (e.g. '10ms', '2s'), got {value!r}")
    if isinstance(value, (int, float)):
        return float(value) * _DUR_UNITS[unit]
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            return float(text) * _DUR_UNITS[unit]
        except ValueError:
            pass
        out = _go_duration(text)
        if out is not None:
            return out
    raise ConfigError(f"{key}: expected a duration (a number of {unit}, or e.g. '10ms', '2s', '10m'), got {value!r}")


def split_endpoint(text: str, key: str = "endpoint") -> tuple[str, int]:
    """``"host:port"`` (optionally ``http://`` / ``https://``) → (host, port)."""
    rest = re.sub(r"^https?://", "", text.strip())
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected host:port (e.g. 'localhost:2379'), got {text!r}")
    return host.strip("[]"), int(port)


def _coerce(s: Setting, value: Any) -> Any:
    """One value → its parsed form (an empty YAML value gives the default)."""
    k = s.key
    if value is None:
        return _BY_KEY[s.alias_of].default if s.alias_of else s.default
    if s.type == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # yaml.v3 decodes any scalar into a string field (tlsMinVersion: 1.3)
        if not isinstance(value, str):
            raise ConfigError(f"{k}: expected a string, got {type(value).__name__} {value!r}")
        if s.choices and value not in s.choices:
            raise ConfigError(f"{k}: expected one of {', '.join(s.choices)}, got {value!r}")
        out: Any = value
    elif s.type == "enum":
        if value not in s.choices:
            raise ConfigError(f"{k}: expected one of {', '.join(s.choices)}, got {value!r}")
        out = value
    elif s.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                value = int(value)
            else:
                raise ConfigError(f"{k}: expected an integer{' (' + s.unit + ')' if s.unit else ''}, got {value!r}")
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
    elif s.type == "any":  # structured Woodpecker values we accept without using (quorumBufferPools …)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:  # Milvus's milvus.yaml spells these as a JSON string (its builder.go json.Unmarshals them)
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{k}: not valid JSON: {value!r}") from None
        if not isinstance(value, (list, Mapping)):
            raise ConfigError(f"{k}: expected a list or mapping, got {value!r}")
        out = value
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
            raise ConfigError(f"{full}: unknown configuration key (neither Woodpecker's nor picchio's)")


def validate_overrides(d: Mapping[str, Any]) -> dict[str, Any]:
    """Check a (nested or dotted) mapping against the table; return the parsed
    values by canonical key (aliases resolved; a canonical key given as well
    wins over its alias).  Raises :class:`ConfigError` naming the first bad key."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {type(d).__name__}")
    direct: dict[str, Any] = {}
    via_alias: dict[str, Any] = {}
    for key, raw in _flatten(d):
        s = _BY_KEY[key]
        try:
            value = _coerce(s, raw)
        except ConfigError:
            if not s.secret:
                raise
            # never echo a secret, even a malformed one (it may be the real one, mis-indented)
            raise ConfigError(f"{key}: expected a string, got a {type(raw).__name__} "
                              "(value not shown: this key holds a secret)") from None
        if s.alias_of:
            via_alias[s.alias_of] = value
            if value not in ("", None):
                via_alias.update(dict(s.implies))
        else:
            direct[key] = value
    return {**via_alias, **direct}


def _env_name(key: str) -> str:
    return "PICCHIO_" + key.upper().replace(".", "_")


def _render_duration(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:g}ms" if ms < 1000 or not float(seconds).is_integer() else f"{seconds:g}s"


def go_path_join(*parts: str) -> str:
    """Go's ``path.Join``: the non-empty parts joined by "/" and cleaned
    (``//`` and ``.`` dropped, ``..`` resolved; a leading "/" kept); "" if all are empty."""
    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    out = posixpath.normpath(joined)
    return "/" + out.lstrip("/") if out.startswith("//") else out


class Config(Mapping[str, Any]):
    """Validated settings, read by full dotted key: ``config["minio.bucketName"]``.

    Also remembers where each value came from (``default``, ``file``, ``env``,
    ``override``) for ``picchio config check`` and the start-up notice."""

    def __init__(self, values: Mapping[str, Any] | None = None, *, source: str = "override") -> None:
        self._values = {s.key: s.default for s in _CANONICAL}
        self._sources = dict.fromkeys(self._values, "default")
        self._set(validate_overrides(values or {}), source)

    def _set(self, parsed: Mapping[str, Any], source: str) -> None:
        self._values.update(parsed)
        self._sources.update(dict.fromkeys(parsed, source))
        if _REPLICAS in parsed:
            self._derive_quorum(source)

    def _derive_quorum(self, source: str) -> None:
        """Woodpecker's ``quorumSelectStrategy.replicas`` (its ``GetEnsembleSize``
        and friends): ensemble = write quorum = 3 or 5, ack = majority — for the
        quorum keys nobody set explicitly."""
        n = self._values[_REPLICAS] if self._values[_REPLICAS] in (3, 5) else 3
        for key, value in ((_Q + "ensembleSize", n), (_Q + "writeQuorum", n), (_Q + "ackQuorum", n // 2 + 1)):
            if self._sources[key] in ("default", "derived"):
                self._values[key], self._sources[key] = value, "derived"

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
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
        return cls(data, source="file")

    def replace(self, **dotted: Any) -> "Config":
        """A copy with some keys changed; keys may use ``__`` for dots."""
        changes = {k.replace("__", "."): v for k, v in dotted.items()}
        return self.with_values(changes)

    def with_values(self, changes: Mapping[str, Any], source: str = "override") -> "Config":
        new = Config.__new__(Config)
        new._values, new._sources = dict(self._values), dict(self._sources)
        new._set(validate_overrides(changes), source)
        return new

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            s = _BY_KEY.get(key)
            if s is not None and s.alias_of:  # a deprecated name reads its key (values are stored in seconds/bytes)
                return self._values[s.alias_of]
            raise ConfigError(f"{key}: unknown configuration key") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {k: ("***" if _BY_KEY[k].secret else v) for k, v in self._values.items()}
        return f"Config({shown!r})"

    def source(self, key: str) -> str:
        """Where ``key``'s value came from: default, file, env, override, or derived
        (the quorum sizes, from ``quorumSelectStrategy.replicas``)."""
        return self._sources[key]

    def with_env(self, environ: Mapping[str, str] | None = None) -> "Config":
        """Overrides from ``PICCHIO_<KEY>`` variables (the key upper-cased, dots
        as underscores: ``PICCHIO_MINIO_SECRETACCESSKEY``,
        ``PICCHIO_ETCD_AUTH_PASSWORD``) — how secrets reach pods without
        entering a ConfigMap.  Deprecated names work too (``PICCHIO_ETCD_USERNAME``);
        the canonical variable wins.  Entry points call this; the library
        itself never reads the environment."""
        import os
        env = os.environ if environ is None else environ
        ordered = sorted(SETTINGS, key=lambda s: s.kind != "alias")  # aliases first: canonical names win
        changes = {s.key: env[_env_name(s.key)] for s in ordered if _env_name(s.key) in env}
        return self.with_values(changes, source="env") if changes else self

    def inert_keys(self) -> list[str]:
        """Keys set (not defaults) that Woodpecker has and picchio ignores."""
        return [k for k, s in self._sources.items() if s != "default" and not _BY_KEY[k].effective]

    def warn_inert(self, logger: logging.Logger | None = None) -> None:
        """Start-up notice: one warning naming the accepted-but-ignored keys."""
        keys = self.inert_keys()
        if keys and tuple(keys) not in _WARNED:
            _WARNED.add(tuple(keys))
            (logger or log).warning("configuration: %d key(s) accepted, no effect here (Woodpecker settings picchio "
                                    "does not implement; `picchio config check FILE` explains each): %s",
                                    len(keys), ", ".join(keys))

    def to_dict(self, nested: bool = False) -> dict[str, Any]:
        """The settings in a form ``Config.from_dict`` reads back unchanged
        (durations as ``"…s"`` strings); ``nested`` gives woodpecker.yaml's shape.
        No-effect keys still at their default are left out."""
        flat = {k: (_render_duration(v) if _BY_KEY[k].type == "duration" else v) for k, v in self._values.items()
                if _BY_KEY[k].effective or self._sources[k] != "default"}
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
        """The *configured* etcd prefix, as Woodpecker builds it:
        ``path.Join(etcd.rootPath, woodpecker.meta.prefix)``, ``woodpecker`` if
        that is empty or ".".  Which prefix is *in effect* also depends on what
        etcd holds (the legacy rule): :func:`logstore.meta.prefix.effective_prefix`."""
        prefix = go_path_join(self["etcd.rootPath"], self["woodpecker.meta.prefix"])
        return prefix if prefix not in ("", ".") else "woodpecker"

    @property
    def storage_type(self) -> str:
        """local | minio | service (Woodpecker's ``default`` and ``""`` are minio)."""
        t = self["woodpecker.storage.type"]
        return "minio" if t in ("default", "") else t


def _yaml_problem(e: Exception) -> str:
    """A YAML syntax error as problem + line:column, without PyYAML's snippet
    of the offending line: that line may be ``secretAccessKey: "…`` with the
    secret in it."""
    mark = getattr(e, "problem_mark", None)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return (what or type(e).__name__) + where


def _display(s: Setting, value: Any) -> str:
    if s.secret and value:
        return "***"
    if s.type == "duration":
        return _render_duration(value)
    if s.type == "size":
        return f"{value} B"
    if value == "" or value is None:
        return "''"
    return f"{value} {s.unit}" if s.unit else str(value)


def describe(config: Config) -> list[dict[str, str]]:
    """The effective configuration, one row per key: key, value (with unit,
    secrets masked), source and whether the key has an effect here."""
    return [{"key": s.key, "value": _display(s, config[s.key]), "source": config.source(s.key),
             "effect": "" if s.effective else "no effect here"} for s in _CANONICAL]


_KIND_LABEL = {"woodpecker": "Woodpecker", "inert": "Woodpecker, **no effect here**", "extra": "picchio extra",
               "alias": "alias"}


def _md_default(s: Setting) -> str:
    if s.kind == "alias":
        return "→ `" + s.alias_of + "`"
    d = s.default
    if s.type == "duration":
        n = d / (1e-3 if s.unit == "ms" else 1.0)
        return f"{n:g} {s.unit}"
    if s.type in ("size",):
        return f"{d} B"
    if isinstance(d, bool):
        return str(d).lower()
    if d == "":
        return "''"
    return f"{d}" + (f" {s.unit}" if s.unit else "")


def markdown_table() -> str:
    """The README's table of keys, generated from :data:`SETTINGS` (a unit test
    checks that the README holds exactly this, so the two cannot drift)."""
    lines = ["| key | type | default | kind | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        t = s.type + (f" ({s.unit})" if s.unit and s.type == "duration" else "")
        lines.append(f"| `{s.key}` | {t} | {_md_default(s)} | {_KIND_LABEL[s.kind]} | {s.doc.replace('|', '/')} |")
    return "\n".join(lines)
