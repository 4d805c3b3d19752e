"""The LogStore's Prometheus metrics: counters, gauges and one histogram in the
text exposition format (0.0.4), no dependency.

Every series the server may export is declared in :data:`HELP` with its type
and help text; recording an undeclared name raises ``KeyError``, so the set of
names a dashboard or an alert can use is exactly this table (the monitoring
tests parse ``manifests/monitoring`` against it).  Unlabelled counters and
histograms render from zero at start-up, so ``rate()`` sees the first
increment rather than a series appearing out of nowhere.
"""
from __future__ import annotations

import bisect
from collections import defaultdict

# Bucket bounds of ``picchio_logstore_append_seconds``: a local fdatasync is
# ~0.1-0.2 ms here, a loaded disk tens of ms; the top buckets catch stalls.
APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HELP: dict[str, tuple[str, str]] = {
    "picchio_logstore_entries_total": ("counter", "Entries appended and fdatasync'd by this LogStore."),
    "picchio_logstore_bytes_total": ("counter", "Payload bytes appended and fdatasync'd by this LogStore."),
    "picchio_logstore_append_errors_total": (
        "counter", "AddEntries batches refused or failed, by status code name (DISK_SOFT_LIMIT, DISK_FULL, "
                   "FENCED, ...); a writer sees these as lost quorum votes."),
    "picchio_logstore_append_seconds": (
        "histogram", "Time from receiving an AddEntries batch to answering it synced (this replica's share "
                     "of a writer's ack latency; the writer waits for the ack quorum's slowest of these)."),
    "picchio_logstore_reads_total": ("counter", "GetBatchEntriesAdv reads served from staged segments."),
    "picchio_logstore_compactions_total": ("counter", "Segments this LogStore compacted into object storage."),
    "picchio_logstore_group_syncs_total": (
        "counter", "syncfs calls that made the blocks of several staged segments durable at once (group commit)."),
    "picchio_logstore_group_blocks_total": ("counter", "Blocks made durable by those syncfs calls."),
    "picchio_logstore_staged_segments": (
        "gauge", "Segments staged on this LogStore's disk and not yet compacted into object storage."),
    "picchio_logstore_disk_usage_ratio": (
        "gauge", "Staged plus accepted-but-unwritten bytes over the staging budget (disk.maxBytes, else the "
                 "file system); appends are pushed back above disk_soft_limit_ratio."),
    "picchio_logstore_disk_accepted_bytes": ("gauge", "Bytes of appends accepted and not yet answered."),
    "picchio_logstore_disk_soft_limit_ratio": (
        "gauge", "woodpecker.logstore.disk.softLimit: above it appends get a retriable push-back."),
    "picchio_logstore_disk_hard_limit_ratio": (
        "gauge", "woodpecker.logstore.disk.hardLimit: above it appends are refused and the pod is unready."),
    "picchio_logstore_authz_denied_total": (
        "counter", "RPCs refused because the client certificate's role may not make them (tls.authorization), "
                   "by role (none: no role in the CN) and RPC."),
    "picchio_logstore_subscriptions": (
        "gauge", "Tail subscriptions (SubscribeEntries streams) open on this LogStore."),
    "picchio_logstore_subscription_wakeups_total": (
        "counter", "Times a segment's tail subscribers were woken because what they may see changed."),
    "picchio_logstore_subscription_frames_total": ("counter", "Frames of entries sent to tail subscribers."),
    "picchio_logstore_decommissioning": (
        "gauge", "1 while this LogStore is marked as leaving (operator scale-down): it takes no new appends."),
}

# Series recorded with labels, and their label names (the others have none).
LABELS: dict[str, tuple[str, ...]] = {"picchio_logstore_append_errors_total": ("code",),
                                      "picchio_logstore_authz_denied_total": ("role", "rpc")}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        # name → labels → [per-bucket counts (non-cumulative, +Inf last), sum]
        self._hist: dict[str, dict[Labels, list]] = defaultdict(dict)
        for name, (typ, _) in HELP.items():
            if name in LABELS:
                continue
            if typ == "counter":
                self.counters[name][()] += 0
            elif typ == "histogram":
                self._hist[name][()] = [[0] * (len(APPEND_BUCKETS) + 1), 0.0]

    @staticmethod
    def _check(name: str, typ: str, labels: dict[str, str]) -> None:
        declared = HELP.get(name)
        if declared is None or declared[0] != typ:
            raise KeyError(f"{name} is not a declared {typ} (logstore.server.metrics.HELP)")
        if set(labels) != set(LABELS.get(name, ())):
            raise KeyError(f"{name} takes labels {sorted(LABELS.get(name, ()))}, not {sorted(labels)}")

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        self._check(name, "counter", labels)
        self.counters[name][tuple(sorted(labels.items()))] += n

    def set(self, name: str, v: float, **labels: str) -> None:
        self._check(name, "gauge", labels)
        self.gauges[name][tuple(sorted(labels.items()))] = v

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._check(name, "histogram", labels)
        h = self._hist[name].setdefault(tuple(sorted(labels.items())), [[0] * (len(APPEND_BUCKETS) + 1), 0.0])
        h[0][bisect.bisect_left(APPEND_BUCKETS, seconds)] += 1
        h[1] += seconds

    def render(self) -> str:
        lines: list[str] = []
        for name, (typ, doc) in HELP.items():
            series = (self.counters if typ == "counter" else self.gauges if typ == "gauge" else self._hist).get(name)
            if not series:
                continue
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} {typ}"]
            for labels, v in sorted(series.items()):
                if typ != "histogram":
                    lines.append(f"{name}{_fmt(labels)} {v:g}")
                    continue
                counts, total = v
                acc = 0
                for bound, c in zip((*APPEND_BUCKETS, float("inf")), counts):
                    acc += c
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f"{name}_bucket{_fmt(labels + (('le', le),))} {acc}")
                lines += [f"{name}_sum{_fmt(labels)} {total:g}", f"{name}_count{_fmt(labels)} {acc}"]
        return "\n".join(lines) + "\n"


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    esc = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, esc)) + "}"
