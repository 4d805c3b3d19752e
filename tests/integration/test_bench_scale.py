"""Smoke test of ``picchio bench scale``: it runs, and what it prints is
consistent (rates × seconds ≈ counts, fds grow with the logs open, the ratio is
computed from the points).  Not the figures themselves."""
import json
import os
import subprocess
import sys

import pytest

PICCHIO = [sys.executable, "-m", "logstore.cli.main"]


def test_bench_scale_local_reports_every_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(PICCHIO + ["bench", "scale", "--logs", "1,20", "--backend", "local", "--seconds", "1",
                                  "--idle-seconds", "1", "--inflight", "8", "--dir", str(tmp_path / "b"),
                                  "--plot", str(tmp_path / "scale.png")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["bench"] == "scale" and out["backend"] == "local" and out["entry_size"] == 4096
    one, many = out["points"]
    assert (one["logs"], many["logs"]) == (1, 20)
    for p in (one, many):
        assert p["appends"] > 0 and p["mb_per_s"] > 0 and 0 < p["ack_p50_ms"] <= p["ack_p99_ms"]
        assert p["appends_per_s"] * p["seconds"] == pytest.approx(p["appends"], rel=0.01, abs=2)
        assert p["mb_per_s"] == pytest.approx(p["appends_per_s"] * 4096 / 1e6, rel=0.01)
        assert p["rss_mib"]["client"] > 10 and p["cpu_seconds"]["client"] > 0
        assert "requests_per_s" in p["etcd"] and p["idle"]["seconds"] >= 1
        assert p["raw"]["ops_per_s"] > 0 and p["ratio_vs_raw"] == pytest.approx(
            p["appends_per_s"] / p["raw"]["ops_per_s"], abs=0.002)
        assert p["s3_requests_per_s"] == 0 and p["minio_s3_requests_per_s_approx"] is None  # local: no S3
        assert "client" in p["idle"]["cpu_pct"] and "client" in p["idle"]["rss_kib_per_log"]
        assert "logstores" not in p["fds"]  # local: no LogStores
    # every open writer holds its segment's data and lock files
    assert many["fds"]["client"] >= one["fds"]["client"] + 2 * 19
    assert one["throughput_ratio_vs_1_log"] == 1.0
    assert many["throughput_ratio_vs_1_log"] == pytest.approx(many["appends_per_s"] / one["appends_per_s"], abs=0.002)
    # idle writers are polled together: a few etcd requests a second, not one per log
    assert many["idle"]["etcd"]["requests_per_s"] <= 5
    png = (tmp_path / "scale.png").read_bytes()  # --plot: the curve, drawn from these points
    assert out["plot"] == str(tmp_path / "scale.png") and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
