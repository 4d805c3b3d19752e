"""Prometheus text-format counters and gauges, no dependency."""
from __future__ import annotations

from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, float] = {}

    def inc(self, name: str, n: float = 1) -> None:
        self.counters[name] += n

    def set(self, name: str, v: float) -> None:
        self.gauges[name] = v

    def render(self) -> str:
        lines = []
        for name, v in sorted(self.counters.items()):
            lines += [f"# TYPE {name} counter", f"{name} {v:g}"]
        for name, v in sorted(self.gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {v:g}"]
        return "\n".join(lines) + "\n"
