"""The orphan scan of a WoodpeckerCluster, as pure functions: when the next
scan is due and what ``status.orphans`` says after one."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from .spec import ClusterSpec


def _parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def orphan_scan_due(c: ClusterSpec, status: Mapping[str, Any], now: datetime) -> bool:
    """Due when no scan is on record, or ``spec.gc.orphanScanIntervalSeconds``
    have passed since the last one (its time lives in the status, so a
    restarted operator does not rescan at once)."""
    last = _parse_time((status.get("orphans") or {}).get("lastScanTime"))
    return last is None or now - last >= timedelta(seconds=c.gc.scan_interval_seconds)


def orphan_status(report: Mapping[str, Any], mode: str, now: datetime) -> dict[str, Any]:
    """``status.orphans`` from a scan report (``logstore.orphans.OrphanReport.as_dict``)."""
    return {
        "objects": int(report.get("objects", 0)),
        "bytes": int(report.get("bytes", 0)),
        "deleted": int(report.get("deleted", 0)),
        "missingSegments": int(report.get("missingSegments", 0)),
        "missing": list(report.get("missing", []))[:10],
        "examples": list(report.get("examples", []))[:10],
        "scanned": int(report.get("scanned", 0)),
        "mode": mode,
        "lastScanTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastScanSeconds": float(report.get("seconds", 0.0)),
    }
