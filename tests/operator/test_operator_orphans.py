"""The orphan scan's schedule and status (pure model): due with no scan on
record or once the interval passed; the status carries the report's counts
and caps its lists; spec.gc defaults follow the CRD."""
from __future__ import annotations

from datetime import timedelta

from opsupport import NOW, cluster_body
from picchio_operator.model.orphans import orphan_scan_due, orphan_status
from picchio_operator.model.spec import parse_cluster


def test_spec_gc_defaults_and_values() -> None:
    c = parse_cluster(cluster_body())
    assert (c.gc.scan_interval_seconds, c.gc.grace_seconds, c.gc.mode) == (3600, 3600, "report")
    c = parse_cluster(cluster_body(gc={"orphanScanIntervalSeconds": 60, "orphanGraceSeconds": 0, "orphans": "delete"}))
    assert (c.gc.scan_interval_seconds, c.gc.grace_seconds, c.gc.mode) == (60, 0, "delete")


def test_scan_due_only_after_the_interval() -> None:
    c = parse_cluster(cluster_body(gc={"orphanScanIntervalSeconds": 60}))
    assert orphan_scan_due(c, {}, NOW), "never scanned"
    last = {"orphans": {"lastScanTime": (NOW - timedelta(seconds=59)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    assert not orphan_scan_due(c, last, NOW)
    assert orphan_scan_due(c, last, NOW + timedelta(seconds=1))
    assert orphan_scan_due(c, {"orphans": {"lastScanTime": "garbage"}}, NOW), "an unreadable time rescans"


def test_status_from_report() -> None:
    rep = {"objects": 3, "bytes": 60, "deleted": 3, "missingSegments": 12, "missing": [f"l/{i}" for i in range(12)],
           "examples": ["a", "b"], "scanned": 1000, "seconds": 1.5}
    st = orphan_status(rep, "delete", NOW)
    assert (st["objects"], st["bytes"], st["deleted"], st["missingSegments"], st["scanned"]) == (3, 60, 3, 12, 1000)
    assert st["missing"] == [f"l/{i}" for i in range(10)], "at most ten named"
    assert st["examples"] == ["a", "b"] and st["mode"] == "delete"
    assert st["lastScanTime"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
