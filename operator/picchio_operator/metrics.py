"""Prometheus metrics of the operator: reconciles, errors, GC volume, and
gauges of what it observes (LogStores ready vs. the ack quorum, segments and
GC backlog per log, orphans per cluster) — the series the dashboard and the
alerts in ``manifests/monitoring`` are built on.

A few counters do not justify a dependency, so this is a minimal registry that
renders the Prometheus text exposition format (version 0.0.4) and serves it
with aiohttp, which kopf already depends on.  The registry lives in the
operator's memo, never in a module global, so in-process tests get their own.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

_HELP = {
    "picchio_operator_reconciles_total": ("counter", "Reconcile passes by kind and result (ok|error)."),
    "picchio_operator_errors_total": ("counter", "Failed reconcile passes by kind and condition reason."),
    "picchio_operator_reconcile_seconds": ("summary", "Wall time of reconcile passes by kind."),
    "picchio_operator_gc_runs_total": ("counter", "Garbage-collection runs by mode (delete|dry_run)."),
    "picchio_operator_gc_bytes_total": ("counter", "Bytes deleted by garbage collection."),
    "picchio_operator_gc_objects_total": ("counter", "Objects deleted by garbage collection."),
    "picchio_operator_gc_segments_total": ("counter", "Segments deleted by garbage collection."),
    "picchio_operator_truncations_total": ("counter", "Truncations applied by rule (truncateTo|retention.*)."),
    "picchio_operator_orphan_scans_total": ("counter", "Orphan scans by result (ok|error)."),
    "picchio_operator_orphan_objects_deleted_total": ("counter", "Orphan objects deleted by orphan scans."),
    # gauges, labelled namespace/cluster (and log): what the last pass observed; removed with their object
    "picchio_operator_orphan_objects": ("gauge", "Orphan objects (no metadata, older than the grace period) "
                                        "found by the last orphan scan of a cluster."),
    "picchio_operator_orphan_bytes": ("gauge", "Bytes of the orphan objects found by the last orphan scan."),
    "picchio_operator_orphan_missing_segments": ("gauge", "Segments in etcd whose objects the last orphan scan "
                                                 "did not find."),
    "picchio_operator_cluster_logstores_desired": ("gauge", "LogStores a service-mode cluster should run."),
    "picchio_operator_cluster_logstores_ready": ("gauge", "LogStores of a service-mode cluster that are ready."),
    "picchio_operator_cluster_ack_quorum": ("gauge", "Ack quorum of a service-mode cluster (spec.quorum.ackQuorum): "
                                            "with fewer ready LogStores, appends fail."),
    "picchio_operator_log_segments": ("gauge", "Segments of a WoodpeckerLog in etcd, truncated ones included."),
    "picchio_operator_log_bytes": ("gauge", "Bytes of a WoodpeckerLog's segments."),
    "picchio_operator_log_gc_backlog_segments": ("gauge", "Segments of a WoodpeckerLog at or below its truncation "
                                                 "point that garbage collection has not deleted yet."),
    "picchio_operator_log_truncation_lag_seconds": ("gauge", "Age of a WoodpeckerLog's oldest retained segment "
                                                    "(now minus its create time): how far truncation trails the "
                                                    "tail; 0 when nothing is retained."),
}

Labels = tuple[tuple[str, str], ...]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self._values: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        if _HELP.get(name, ("",))[0] != "counter":
            raise KeyError(f"unknown counter {name}")
        self._values[name][tuple(sorted(labels.items()))] += amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge (a state the operator observed, not a count of events)."""
        if _HELP.get(name, ("",))[0] != "gauge":
            raise KeyError(f"unknown gauge {name}")
        self._values[name][tuple(sorted(labels.items()))] = value

    def forget(self, **labels: str) -> None:
        """Drop every gauge series carrying these labels (an object was deleted:
        its last values must not linger as if current)."""
        want = set(labels.items())
        for name, (typ, _) in _HELP.items():
            series = self._values.get(name)
            if typ == "gauge" and series:
                for key in [key for key in series if want <= set(key)]:
                    del series[key]

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[None]:
        """Count one pass and its duration; an exception counts as an error."""
        t0 = time.monotonic()
        try:
            yield
        except BaseException:
            self.inc("picchio_operator_reconciles_total", kind=kind, result="error")
            raise
        else:
            self.inc("picchio_operator_reconciles_total", kind=kind, result="ok")
        finally:
            name = "picchio_operator_reconcile_seconds"
            self._values[name][(("kind", kind), ("q", "sum"))] += time.monotonic() - t0
            self._values[name][(("kind", kind), ("q", "count"))] += 1

    def render(self) -> str:
        lines: list[str] = []
        for name, (typ, doc) in _HELP.items():
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} {typ}"]
            for labels, v in sorted(self._values.get(name, {}).items()):
                if typ == "summary":
                    q = dict(labels).pop("q")
                    rest = tuple(kv for kv in labels if kv[0] != "q")
                    series = f"{name}_{q}"
                    labels = rest
                else:
                    series = name
                lbl = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
                lines.append(f"{series}{{{lbl}}} {v:g}" if lbl else f"{series} {v:g}")
        return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``host:port``; started and stopped by the operator's
    startup/cleanup handlers."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def _serve(self, _: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
