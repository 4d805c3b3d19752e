"""logstore/cli/plot.py: each chart function turns a small result dict (the shape the benchmarks
print) into a real PNG.  matplotlib is in the `test` extra: nothing here is skipped."""
import struct

import pytest

from logstore.cli import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND", "no IHDR/IEND chunk"
    assert len(data) > 10_000, f"suspiciously small PNG: {len(data)} bytes"
    return struct.unpack(">II", data[16:24])


def _system(mb: float, p50: float, p99: float) -> dict:
    return {"mb_per_s": mb, "appends_per_s": mb * 16, "ack_p50_ms": p50, "ack_p99_ms": p99, "mb_per_s_by_round": [mb]}


def test_peers_chart_writes_a_png(tmp_path):
    result = {
        "bench": "peers", "versions": {"woodpecker": "v0.1.35", "kafka": "4.1.1"}, "rounds": 2, "seconds_per_slice": 1,
        "systems": {"picchio-local": "…", "woodpecker-local": "…", "kafka-1-fsync": "…"},
        "loadavg": {"start": [1.0, 1.0, 1.0], "end": [2.0, 1.5, 1.0], "cpus": 2},
        "results": [
            {"workload": "1Mi x16", "entry_size": 1 << 20, "in_flight": 16,
             "raw": {"mb_per_s": 300.0, "fdatasync_p50_ms": 40.0},
             "systems": {"picchio-local": _system(250, 50, 90), "woodpecker-local": _system(80, 190, 400),
                         "kafka-1-fsync": _system(120, 100, 300)}},
            {"workload": "4Ki x1", "entry_size": 4096, "in_flight": 1,
             "raw": {"mb_per_s": 8.0, "fdatasync_p50_ms": 0.15},
             "systems": {"picchio-local": _system(2.5, 0.7, 9), "woodpecker-local": _system(0.4, 10, 50),
                         "kafka-1-fsync": _system(0.3, float("nan"), 70)}},  # a NaN must not break the chart
        ],
        "tail": {"raw": {"fdatasync_p50_ms": 0.12},
                 "systems": {"picchio-local": {"e2e_p50_ms": 3.5, "e2e_p99_ms": 60, "ack_to_seen_p50_ms": 0.9},
                             "kafka-1-fsync": {"e2e_p50_ms": 40, "e2e_p99_ms": 150, "ack_to_seen_p50_ms": 20},
                             # Woodpecker: ack → seen only (no send times)
                             "woodpecker-local": {"e2e_p50_ms": None, "e2e_p99_ms": None, "ack_to_seen_p50_ms": 2.0}}},
    }
    out = plot.peers_chart(result, tmp_path / "sub" / "peers.png")
    assert out == tmp_path / "sub" / "peers.png"
    w, h = _png_size(out)
    assert w > 1000 and h > 500


def test_append_and_tail_charts_write_pngs(tmp_path):
    append = {"bench": "append", "backend": "local", "entry_size": 65536, "concurrency": 8,
              "picchio": {"mb_per_s": 100.0, "ack_p50_ms": 2.0, "ack_p99_ms": 30.0,
                          "ack_percentiles_ms": {"50": 2.0, "90": 12.0, "99": 30.0, "99.9": 45.0},
                          "timeline": {"bucket_s": 0.1, "t": [0.0, 0.1, 0.2, 0.3], "mb_per_s": [90.0, None, 110.0, 0.0]}},
              "raw": {"mb_per_s": 93.0, "op_p50_ms": 1.9}}
    _png_size(plot.append_chart(append, tmp_path / "append.png"))
    tail = {"bench": "tail", "backend": "local", "entries": 5,
            "same_process_percentiles_ms": {"50": 0.03, "99": 0.05},
            "other_process_percentiles_ms": {"50": 1.0, "99": 7.0},
            "same_process_latencies_ms": [0.03, 0.03, 0.04, 0.05, 0.03],
            "other_process_latencies_ms": [0.9, 1.0, 1.1, 4.0, 7.0]}
    _png_size(plot.tail_chart(tail, tmp_path / "tail.png"))


def test_scale_chart_writes_a_png(tmp_path):
    points = [{"logs": n, "mb_per_s": 100.0 / (1 + n / 100), "ack_p99_ms": 5.0 + n / 10} for n in (1, 10, 100, 1000)]
    _png_size(plot.scale_chart(points, tmp_path / "scale.png"))


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(plot.PlotUnavailable, match=r"pip install 'picchio\[bench\]'"):
        plot.require_matplotlib()
