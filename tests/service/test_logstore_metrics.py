"""What real LogStore processes expose on /metrics after real appends: the
series the dashboard and alerts of ``manifests/monitoring`` are drawn on
(tests/operator/test_monitoring.py checks the queries against the declared
names; this checks the server really fills them in)."""
from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import logstore

sys.path.insert(0, str(Path(__file__).parent))
from svcutil import http_get  # noqa: E402

pytestmark = pytest.mark.cluster  # MinIO and etcd: Go-built components


def _series(text: str) -> dict[str, float]:
    out = {}
    for ln in text.splitlines():
        if ln and not ln.startswith("#"):
            name, value = ln.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_logstores_expose_ack_latency_disk_limits_and_staged_segments(service_cluster) -> None:
    sc = service_cluster(logstore_overrides={"woodpecker.logstore.disk.softLimit": 0.7,
                                             "woodpecker.logstore.disk.hardLimit": 0.9})
    n = 40
    async with logstore.Client(sc.config) as c:
        log = await c.create_log("metrics")
        async with await log.open_writer() as w:
            await asyncio.gather(*(w.append(b"m%03d" % i) for i in range(n)))
            texts = [await asyncio.to_thread(lambda s=s: http_get(s.http_port, "/metrics")[1]) for s in sc.logstores]
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make deps` installs Debian's prometheus package"
    entries = 0.0
    for s, text in zip(sc.logstores, texts):
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, f"{s.name}: {lint.stdout}{lint.stderr}"
        v = _series(text)
        assert v["picchio_logstore_disk_soft_limit_ratio"] == 0.7 and v["picchio_logstore_disk_hard_limit_ratio"] == 0.9
        assert 0 <= v["picchio_logstore_disk_usage_ratio"] < 0.7
        entries += v["picchio_logstore_entries_total"]
        if v["picchio_logstore_entries_total"]:
            # every synced batch was timed, and the histogram is cumulative up to +Inf = count
            count = v["picchio_logstore_append_seconds_count"]
            assert 1 <= count <= v["picchio_logstore_entries_total"]
            buckets = [(float(le), val) for key, val in v.items()
                       if (m := re.fullmatch(r'picchio_logstore_append_seconds_bucket\{le="([^"]+)"\}', key))
                       for le in [m.group(1).replace("+Inf", "inf")]]
            counts = [val for _, val in sorted(buckets)]
            assert counts == sorted(counts) and counts[-1] == count
            assert 0 < v["picchio_logstore_append_seconds_sum"] < 5 * count
            # the writer's segment is still active: staged here, not compacted yet
            assert v["picchio_logstore_staged_segments"] >= 1
    # each entry is on at least the ack quorum of LogStores (write quorum 3 by default)
    assert entries >= n * sc.config["woodpecker.client.quorum.ackQuorum"]
