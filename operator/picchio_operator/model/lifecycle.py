"""Bucket lifecycle rules: ours, scoped to the cluster's rootPath, merged with
everyone else's.

S3 has one lifecycle document per bucket and PUT replaces all of it, so a
careless operator deletes the rules of every other tenant of the bucket.  We
read, replace only the rules whose IDs are exactly ours, and write back.  Our
IDs are ``picchio-<namespace>-<cluster>-<purpose>``; a rule is ours only if
its ID is one of those exact IDs *and* its filter prefix lies in our rootPath —
``picchio-a-b-c-…`` could be namespace ``a-b``/cluster ``c`` or ``a``/``b-c``,
and the prefix check turns that ambiguity into a reported conflict instead of
a silent takeover.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from .spec import ClusterSpec

Rule = dict[str, Any]
PURPOSES = ("abort-multipart", "tombstones")
TOMBSTONE_DIR = "tombstones/"
_MAX_ID = 255


class LifecycleConflict(ValueError):
    """A rule with one of our IDs covers another prefix (someone else's rule)."""


def rule_id_prefix(namespace: str, cluster: str) -> str:
    base = f"picchio-{namespace}-{cluster}-"
    if len(base) + max(map(len, PURPOSES)) <= _MAX_ID:
        return base
    digest = hashlib.sha256(f"{namespace}/{cluster}".encode()).hexdigest()[:12]
    return f"picchio-{namespace[:80]}-{cluster[:120]}-{digest}-"


def our_ids(namespace: str, cluster: str) -> set[str]:
    p = rule_id_prefix(namespace, cluster)
    return {p + purpose for purpose in PURPOSES}


def desired_rules(c: ClusterSpec) -> list[Rule]:
    """The rules the spec asks for (empty when lifecycle is disabled)."""
    lc = c.storage.lifecycle
    if not lc.enabled:
        return []
    p = rule_id_prefix(c.namespace, c.name)
    root = c.storage.root_prefix
    return [
        {"ID": p + "abort-multipart", "Status": "Enabled", "Filter": {"Prefix": root},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": lc.abort_incomplete_multipart_upload_days}},
        {"ID": p + "tombstones", "Status": "Enabled", "Filter": {"Prefix": root + TOMBSTONE_DIR},
         "Expiration": {"Days": lc.tombstone_expiration_days}},
    ]


def rule_prefix(rule: Mapping[str, Any]) -> str | None:
    """The key prefix a rule applies to (``Filter.Prefix``, ``Filter.And.Prefix``
    or the legacy top-level ``Prefix``)."""
    f = rule.get("Filter") or {}
    if "Prefix" in f:
        return f["Prefix"]
    if "And" in f and "Prefix" in f["And"]:
        return f["And"]["Prefix"]
    if "Prefix" in rule:
        return rule["Prefix"]
    return None


def merge_rules(existing: Sequence[Mapping[str, Any]], desired: Sequence[Rule], *,
                namespace: str, cluster: str, root_prefix: str) -> list[Rule]:
    """Foreign rules untouched and in their order, then ours.  Raises
    :class:`LifecycleConflict` if a rule carrying one of our IDs is scoped
    outside ``root_prefix``."""
    ours = our_ids(namespace, cluster)
    kept: list[Rule] = []
    for r in existing:
        if r.get("ID") in ours:
            prefix = rule_prefix(r) or ""
            if not prefix.startswith(root_prefix):
                raise LifecycleConflict(
                    f"bucket lifecycle rule {r.get('ID')!r} covers prefix {prefix!r}, outside this cluster's "
                    f"rootPath {root_prefix!r}; another cluster with an ambiguous namespace/name owns it — "
                    "rename one of them or disable spec.storage.lifecycle")
            continue
        kept.append(dict(r))
    return kept + [dict(r) for r in desired]


def normalise(rules: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """Rules as comparable values (servers echo rules with extra empty fields
    and in their own order)."""
    def clean(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in sorted(v.items()) if x not in (None, {}, [])}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return sorted((clean(r) for r in rules), key=lambda r: str(r.get("ID")))


def rules_equal(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    return normalise(a) == normalise(b)


def missing_rules(actual: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]) -> list[str]:
    """IDs of ``wanted`` rules absent or different in ``actual`` (read back
    after a PUT: a concurrent writer may have replaced the document)."""
    have = {r.get("ID"): r for r in normalise(actual)}
    return [str(r.get("ID")) for r in normalise(wanted) if have.get(r.get("ID")) != r]
