"""The operator as a process: liveness and metrics endpoints answer, logs are
JSON on request, SIGTERM stops it cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from opcluster import ROOT, wait_for

pytestmark = pytest.mark.cluster


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status, r.read().decode()


def test_liveness_metrics_json_logs_and_graceful_stop(k8s_cluster: Any, crds, tmp_path) -> None:
    from picchio_harness.procs import free_port

    live, metrics = free_port(), free_port()
    log_path = tmp_path / "operator.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "picchio_operator.main", "--kubeconfig", str(k8s_cluster.kubeconfig), "--standalone",
         "--liveness", f"http://127.0.0.1:{live}/healthz", "--metrics-host", "127.0.0.1",
         "--metrics-port", str(metrics), "--log-format", "json"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for("liveness endpoint", lambda: http_get(f"http://127.0.0.1:{live}/healthz")[0] == 200, timeout=60)
        status, text = http_get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200
        assert "# TYPE picchio_operator_reconciles_total counter" in text
        assert "# TYPE picchio_operator_gc_bytes_total counter" in text
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    assert lines, "the operator logged nothing"
    records = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert len(records) >= len(lines) * 0.9, lines[:5]  # (stray non-JSON lines come only from libraries)
    assert any("operator stopped" in r.get("message", "") for r in records), lines[-5:]
