"""Charts of the benchmarks' JSON (``picchio bench append|tail --plot``, ``bench scale``,
``python -m picchio_harness.bench_peers --plot``): pure functions, a result dict in, a PNG out.

matplotlib is an optional extra (``pip install 'picchio[bench]'``), imported only when a chart
is drawn, always with the Agg backend (no display needed); without it :class:`PlotUnavailable`
says what to install."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import LogstoreError


class PlotUnavailable(LogstoreError):
    """matplotlib is not installed: ``pip install 'picchio[bench]'``."""


def require_matplotlib() -> Any:
    """pyplot on the Agg backend, or :class:`PlotUnavailable`."""
    try:
        import matplotlib
    except ImportError as e:
        raise PlotUnavailable("drawing charts needs matplotlib: pip install 'picchio[bench]'") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = require_matplotlib()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else 0.0


def _label(ax: Any, bars: Any, fmt: str = "{:.0f}") -> None:
    for b in bars:
        h = b.get_height()
        if h > 0:
            ax.annotate(fmt.format(h), (b.get_x() + b.get_width() / 2, h), ha="center", va="bottom", fontsize=6)


def _colors(names: list[str]) -> list[str]:
    palette = {"picchio": ["#1f77b4", "#6baed6"], "woodpecker": ["#2ca02c", "#98df8a"],
               "kafka": ["#d62728", "#ff9896", "#9467bd"]}
    used: dict[str, int] = {}
    out = []
    for n in names:
        fam = n.split("-")[0]
        i = used.get(fam, 0)
        used[fam] = i + 1
        shades = palette.get(fam, ["#7f7f7f"])
        out.append(shades[i % len(shades)])
    return out


def peers_chart(result: dict[str, Any], path: str | Path) -> Path:
    """bench_peers' JSON → one PNG: per workload the MB/s of every system with the raw
    write+fdatasync limit as a line (top row) and ack p50/p99 (bottom row, log scale); then the
    tail's send → seen-in-another-process p50/p99 (bars) and ack → seen p50 (crosses)."""
    plt = require_matplotlib()
    results = result.get("results", [])
    tail = (result.get("tail") or {}).get("systems") or {}
    cols = max(1, len(results) + (1 if tail else 0))
    fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols, 8.2), squeeze=False)
    for k, r in enumerate(results):
        names = list(r["systems"])
        colors = _colors(names)
        xs = range(len(names))
        ax = axes[0][k]
        bars = ax.bar(xs, [_num(r["systems"][n].get("mb_per_s")) for n in names], color=colors)
        _label(ax, bars, "{:.1f}" if r["entry_size"] < 65536 else "{:.0f}")
        raw = _num((r.get("raw") or {}).get("mb_per_s"))
        if raw:
            ax.axhline(raw, color="black", ls="--", lw=1, label=f"raw write+fdatasync {raw:.0f} MB/s")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{r['workload']}: throughput", fontsize=10)
        ax.set_ylabel("MB/s")
        ax.set_xticks(list(xs), names, rotation=35, ha="right", fontsize=7)
        ax = axes[1][k]
        w = 0.4
        p50 = [_num(r["systems"][n].get("ack_p50_ms")) for n in names]
        p99 = [_num(r["systems"][n].get("ack_p99_ms")) for n in names]
        ax.bar([x - w / 2 for x in xs], p50, w, color=colors, label="p50")
        ax.bar([x + w / 2 for x in xs], p99, w, color=colors, alpha=0.45, hatch="//", label="p99")
        raw_p50 = _num((r.get("raw") or {}).get("fdatasync_p50_ms"))
        if raw_p50:
            ax.axhline(raw_p50, color="black", ls="--", lw=1, label=f"raw fdatasync p50 {raw_p50:.2f} ms")
        ax.set_yscale("log")
        ax.set_ylim(top=ax.get_ylim()[1] * 30)  # room for the legend above the bars
        ax.set_title(f"{r['workload']}: ack latency", fontsize=10)
        ax.set_ylabel("ms (log)")
        ax.set_xticks(list(xs), names, rotation=35, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    if tail:
        names = [n for n, v in tail.items() if "skipped" not in v]
        skipped = [n for n, v in tail.items() if "skipped" in v or v.get("e2e_p50_ms") is None]
        ax = axes[0][cols - 1]
        xs = range(len(names))
        colors = _colors(names)
        w = 0.4
        ax.bar([x - w / 2 for x in xs], [_num(tail[n].get("e2e_p50_ms")) for n in names], w, color=colors,
               label="send → seen p50")
        ax.bar([x + w / 2 for x in xs], [_num(tail[n].get("e2e_p99_ms")) for n in names], w, color=colors,
               alpha=0.45, hatch="//", label="send → seen p99")
        a2s = [(x, _num(tail[n].get("ack_to_seen_p50_ms"))) for x, n in zip(xs, names)]
        if any(v > 0 for _, v in a2s):
            ax.scatter([x for x, v in a2s if v > 0], [v for _, v in a2s if v > 0], marker="x", color="black",
                       zorder=3, label="ack → seen p50")
        raw_p50 = _num(((result.get("tail") or {}).get("raw") or {}).get("fdatasync_p50_ms"))
        if raw_p50:
            ax.axhline(raw_p50, color="black", ls="--", lw=1, label=f"raw 4 KiB fdatasync p50 {raw_p50:.2f} ms")
        ax.set_yscale("log")
        ax.set_ylim(top=ax.get_ylim()[1] * 30)  # room for the legend above the bars
        ax.set_title("tail: send → seen in another process", fontsize=10)
        ax.set_ylabel("ms (log)")
        ax.set_xticks(list(xs), names, rotation=35, ha="right", fontsize=7)
        ax.legend(fontsize=7)
        if skipped:
            ax.text(0.01, -0.42, "send → seen not measured: " + ", ".join(skipped) + " (see JSON)",
                    transform=ax.transAxes, fontsize=7)
        axes[1][cols - 1].axis("off")
        la = result.get("loadavg") or {}
        axes[1][cols - 1].text(0, 0.5, "\n".join(
            [f"{n}: {d}" for n, d in (result.get("systems") or {}).items()]
            + ["", f"{result.get('rounds')} rounds × {result.get('seconds_per_slice')} s per system, alternating",
               f"load average start {la.get('start')}  end {la.get('end')}  cpus {la.get('cpus')}"]),
            fontsize=6.5, va="center", wrap=True)
    versions = result.get("versions") or {}
    fig.suptitle("picchio vs Woodpecker " + str(versions.get("woodpecker", "")) + " vs Kafka "
                 + str(versions.get("kafka", "")), fontsize=12)
    return _save(fig, path)


def append_chart(result: dict[str, Any], path: str | Path) -> Path:
    """``picchio bench append``'s JSON → throughput over time (``picchio.timeline``: bucket_s,
    t, mb_per_s; the raw slices between picchio's are gaps) with the raw limit as a line, and the
    ack latency percentiles (``picchio.ack_percentiles_ms``)."""
    plt = require_matplotlib()
    ours = result.get("picchio") or {}
    raw = result.get("raw") or {}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    tl = ours.get("timeline") or {}
    if tl.get("t"):
        a1.plot(tl["t"], [float("nan") if v is None else v for v in tl["mb_per_s"]], lw=1,
                label=f"picchio, per {tl.get('bucket_s', 0.1) * 1e3:.0f} ms")
    a1.axhline(_num(ours.get("mb_per_s")), color="#1f77b4", ls=":", lw=1, label=f"picchio mean {_num(ours.get('mb_per_s')):.1f} MB/s")
    if raw.get("mb_per_s"):
        a1.axhline(_num(raw["mb_per_s"]), color="black", ls="--", lw=1, label=f"raw {raw['mb_per_s']} MB/s")
    a1.set_xlabel("s since start")
    a1.set_ylabel("MB/s")
    a1.set_ylim(bottom=0)
    a1.set_title(f"append {result.get('backend')} {result.get('entry_size')} B × {result.get('concurrency')}: "
                 "throughput", fontsize=10)
    a1.legend(fontsize=7)
    pcts = ours.get("ack_percentiles_ms") or {"50": ours.get("ack_p50_ms"), "99": ours.get("ack_p99_ms")}
    keys = list(pcts)
    bars = a2.bar(range(len(keys)), [_num(pcts[k]) for k in keys], color="#1f77b4")
    _label(a2, bars, "{:.2f}")
    if raw.get("op_p50_ms"):
        a2.axhline(_num(raw["op_p50_ms"]), color="black", ls="--", lw=1, label=f"raw op p50 {raw['op_p50_ms']} ms")
        a2.legend(fontsize=7)
    a2.set_xticks(range(len(keys)), [f"p{k}" for k in keys])
    a2.set_ylabel("ack latency, ms")
    a2.set_title("ack latency percentiles", fontsize=10)
    return _save(fig, path)


def tail_chart(result: dict[str, Any], path: str | Path) -> Path:
    """``picchio bench tail``'s JSON → latency percentiles per reader (same process, another
    process), and their histograms when the JSON carries ``*_latencies_ms`` lists."""
    plt = require_matplotlib()
    readers = [("same_process", "same process"), ("other_process", "other process")]
    hists = [(k, lbl) for k, lbl in readers if result.get(f"{k}_latencies_ms")]
    fig, axes = plt.subplots(1, 2 if hists else 1, figsize=(11 if hists else 6, 4), squeeze=False)
    ax = axes[0][0]
    w = 0.4
    for i, (k, lbl) in enumerate(readers):
        pcts = result.get(f"{k}_percentiles_ms") or {"50": result.get(f"{k}_p50_ms"), "99": result.get(f"{k}_p99_ms")}
        keys = list(pcts)
        bars = ax.bar([x + (i - 0.5) * w for x in range(len(keys))], [_num(pcts[q]) for q in keys], w, label=lbl)
        _label(ax, bars, "{:.2f}")
    ax.set_xticks(range(len(keys)), [f"p{q}" for q in keys])
    ax.set_ylabel("ack → reader, ms")
    ax.set_title(f"tail {result.get('backend')}: {result.get('entries')} entries", fontsize=10)
    ax.legend(fontsize=7)
    if hists:
        ax = axes[0][1]
        for k, lbl in hists:
            ax.hist(result[f"{k}_latencies_ms"], bins=40, alpha=0.6, label=lbl)
        ax.set_xlabel("ms")
        ax.set_ylabel("entries")
        ax.set_title("histogram", fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def scale_chart(points: list[dict[str, Any]], path: str | Path, title: str = "picchio: scaling with logs") -> Path:
    """``bench scale`` points (each with ``logs``, ``mb_per_s``, ``ack_p99_ms``) → throughput
    (left axis) and ack p99 (right axis) against the number of logs."""
    plt = require_matplotlib()
    pts = sorted(points, key=lambda p: p["logs"])
    xs = [p["logs"] for p in pts]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [_num(p.get("mb_per_s")) for p in pts], "o-", color="#1f77b4", label="MB/s")
    ax.set_xlabel("logs")
    ax.set_ylabel("MB/s", color="#1f77b4")
    ax.set_ylim(bottom=0)
    if len(xs) > 1 and xs[-1] / max(1, xs[0]) >= 16:
        ax.set_xscale("log", base=2)
    ax2 = ax.twinx()
    ax2.plot(xs, [_num(p.get("ack_p99_ms")) for p in pts], "s--", color="#d62728", label="ack p99 ms")
    ax2.set_ylabel("ack p99, ms", color="#d62728")
    ax2.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=7, loc="upper left")
    return _save(fig, path)
