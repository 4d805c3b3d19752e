"""The one checker of the fault suite.

Given what the workload recorded (every ack as it happened, every error, every
append's start), what the read-back saw, and the nemesis timeline, it checks:

* every acknowledged entry is read back exactly once, under its acknowledged
  id, byte-exact (the payload is a pure function of (run, seq)), and the log is
  in id order and in (run, seq) order;
* entries that were never acknowledged may appear (their outcome was unknown)
  but never twice and never out of order;
* every append / open finished (ack or error) within its bound: 3 x the
  largest deadline among the mode's own and those of the nemeses active while
  it ran; a call still pending when the writer was killed counts too;
* every error is a typed LogstoreError that a nemesis active while the call
  ran was allowed to cause (a single-LogStore fault allows none);
* writing resumed after each heal (first append started after the heal that
  was acknowledged, and how long that took).

It never raises on its own: it returns a Verdict whose ``problems`` the test
asserts empty, so the report gets the numbers of failed runs too.
"""
from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

BOUND_FACTOR = 3.0
#: measurement slack on a bound: the writer takes its timestamps in its own
#: event loop on a loaded 2-core machine (the product may use its whole budget)
BOUND_SLACK = 0.25
#: a nemesis' influence outlasts its heal by this much (reconnects, restarts)
HEAL_GRACE = 0.5


@dataclass
class Call:
    kind: str          # "append" | "open"
    run: int
    seq: int           # -1 for opens
    t0: float
    t1: float | None   # None: still pending when the writer was killed
    ok: bool
    mid: str = ""
    digest: str = ""
    error: str = ""
    message: str = ""
    pending: bool = False  # still running when the writer was killed


@dataclass
class Events:
    calls: list[Call] = field(default_factory=list)

    @property
    def acks(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "append" and c.ok]

    @property
    def errors(self) -> list[Call]:
        return [c for c in self.calls if not c.ok and not c.pending and c.t1 is not None]


def parse_events(paths: Iterable[Path], killed_at: dict[int, float] | None = None) -> Events:
    """Parse workload files; a torn last line (the kill) is ignored.  Appends
    started (B) but never resolved get t1=None and are timed up to the kill."""
    ev = Events()
    started: dict[tuple[int, int], float] = {}
    resolved: set[tuple[int, int]] = set()
    for path in paths:
        if not Path(path).exists():
            continue
        for line in Path(path).read_text(errors="replace").splitlines():
            p = line.split(" ", 5 if line.startswith("F ") else 6)
            try:
                if p[0] == "B" and len(p) == 5:
                    run, first, n, t0 = int(p[1]), int(p[2]), int(p[3]), float(p[4])
                    for s in range(first, first + n):
                        started[(run, s)] = t0
                elif p[0] == "A" and len(p) == 7:
                    run, seq = int(p[1]), int(p[2])
                    ev.calls.append(Call("append", run, seq, float(p[5]), float(p[6]), True, p[3], p[4]))
                    resolved.add((run, seq))
                elif p[0] == "E" and len(p) == 7:
                    run, seq = int(p[1]), int(p[2])
                    ev.calls.append(Call("append", run, seq, float(p[4]), float(p[5]), False, error=p[3],
                                         message=_unrepr(p[6])))
                    resolved.add((run, seq))
                elif p[0] == "O" and len(p) == 4:
                    ev.calls.append(Call("open", int(p[1]), -1, float(p[2]), float(p[3]), True))
                elif p[0] == "F" and len(p) == 6:
                    ev.calls.append(Call("open", int(p[1]), -1, float(p[3]), float(p[4]), False, error=p[2],
                                         message=_unrepr(p[5])))
            except (ValueError, IndexError):
                continue  # torn line
    for (run, seq), t0 in started.items():
        if (run, seq) not in resolved:
            t_end = (killed_at or {}).get(run)
            ev.calls.append(Call("append", run, seq, t0, t_end, False, error="(pending at kill)", pending=True))
    ev.calls.sort(key=lambda c: (c.t0, c.run, c.seq))
    return ev


def _unrepr(s: str) -> str:
    try:
        return str(ast.literal_eval(s))
    except (ValueError, SyntaxError):
        return s


@dataclass
class ReadBack:
    entries: list[tuple[str, int, int, str, int]] = field(default_factory=list)  # id, run, seq, digest, exact
    error: str = ""      # "phase ErrorType message" when the read-back failed
    seconds: float = 0.0
    retried: list[str] = field(default_factory=list)  # typed failures of earlier attempts


def parse_readback(path: Path, timed_out: bool = False) -> ReadBack:
    rb = ReadBack()
    if Path(path).exists():
        for line in Path(path).read_text(errors="replace").splitlines():
            p = line.split(" ", 4 if line.startswith("X ") else 5)
            if p[0] == "M" and len(p) == 6:
                rb.entries.append((p[1], int(p[2]), int(p[3]), p[4], int(p[5])))
            elif p[0] == "X" and len(p) >= 4:
                rb.error = f"{p[1]}: {p[2]} after {p[3]}s: {_unrepr(p[4]) if len(p) > 4 else ''}"
            elif p[0] == "D":
                rb.seconds = float(p[1])
    if timed_out and not rb.error:
        rb.error = "read-back did not finish (hang)"
    return rb


def _mid_key(mid: str) -> tuple[int, int]:
    seg, _, entry = mid.partition(":")
    return int(seg), int(entry)


@dataclass
class Window:
    """A nemesis' time on the timeline, as the checker needs it."""
    kind: str
    label: str
    deadline: str
    allowed_errors: tuple[str, ...]
    t_inject: float
    t_heal: float | None


@dataclass
class Verdict:
    acks: int = 0
    read: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    not_exact: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)          # calls beyond their bound
    unexpected_errors: list[str] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    max_stall: float = 0.0
    max_stall_bound: float = 0.0
    resume: list[tuple[str, float | None]] = field(default_factory=list)
    readback_error: str = ""
    recovery_retries: int = 0
    extra: list[str] = field(default_factory=list)          # problems added by the test

    @property
    def problems(self) -> list[str]:
        out = []
        for name in ("lost", "duplicated", "moved", "not_exact", "out_of_order", "late", "unexpected_errors"):
            items = getattr(self, name)
            if items:
                out.append(f"{name} ({len(items)}): " + "; ".join(items[:5]) + (" ..." if len(items) > 5 else ""))
        for label, r in self.resume:
            if r is None:
                out.append(f"writing did not resume after {label} healed")
        if self.readback_error:
            out.append(f"read-back failed: {self.readback_error}")
        return out + self.extra


def bound_for(call: Call, windows: list[Window], deadlines: dict[str, float], base: str,
              t_end: float) -> tuple[float, list[Window]]:
    t1 = call.t1 if call.t1 is not None else t_end
    # a fault's influence lasts until its bound has passed after the heal
    # (leases renewed, connections re-made): "works again once it clears"
    active = [w for w in windows
              if w.t_inject <= t1 and (w.t_heal is None
                                       or w.t_heal + max(HEAL_GRACE, BOUND_FACTOR * deadlines.get(w.deadline, 0))
                                       >= call.t0)]
    keys = {base} | {w.deadline for w in active if w.deadline in deadlines}
    return BOUND_FACTOR * max(deadlines[k] for k in keys), active


def check(events: Events, rb: ReadBack, windows: list[Window], deadlines: dict[str, float], base: str,
          t_end: float, allow_reopen: bool = False) -> Verdict:
    v = Verdict()
    acks = {(c.run, c.seq): c for c in events.acks}
    v.acks = len(acks)
    v.read = len(rb.entries)
    v.readback_error = rb.error
    v.recovery_retries = len(rb.retried)

    # -- stalls and errors, against the nemeses active during each call
    for c in events.calls:
        bound, active = bound_for(c, windows, deadlines, base, t_end)
        t1 = c.t1 if c.t1 is not None else t_end
        d = t1 - c.t0
        if d > v.max_stall:
            v.max_stall, v.max_stall_bound = d, bound
        what = f"{c.kind} {c.run}:{c.seq}" if c.seq >= 0 else f"open (run {c.run})"
        during = ",".join(w.label for w in active) or "no fault"
        if d > bound + BOUND_SLACK:
            outcome = "ack" if c.ok else (c.error or "pending")
            v.late.append(f"{what} took {d:.1f}s > bound {bound:.1f}s ({outcome}; during {during})")
        if not c.ok and not c.pending and c.t1 is not None:
            v.errors[c.error] += 1
            allowed = {e for w in active for e in w.allowed_errors}
            if c.error not in allowed:
                v.unexpected_errors.append(f"{what}: {c.error} after {d:.2f}s during {during}: {c.message[:160]}")

    # -- the read-back against the acks
    seen: dict[tuple[int, int], tuple[str, str, int]] = {}
    prev_mid: tuple[int, int] | None = None
    prev_rs: tuple[int, int] | None = None
    for mid, run, seq, dig, exact in rb.entries:
        key = (run, seq)
        if key in seen:
            v.duplicated.append(f"{run}:{seq} at {seen[key][0]} and {mid}")
        seen[key] = (mid, dig, exact)
        if not exact:
            v.not_exact.append(f"{run}:{seq} at {mid}")
        mk = _mid_key(mid)
        if prev_mid is not None and mk <= prev_mid:
            v.out_of_order.append(f"id {mid} after {prev_mid[0]}:{prev_mid[1]}")
        if prev_rs is not None and key <= prev_rs:
            v.out_of_order.append(f"entry {run}:{seq} after {prev_rs[0]}:{prev_rs[1]}")
        prev_mid, prev_rs = mk, key
    for key, a in sorted(acks.items()):
        got = seen.get(key)
        if got is None:
            v.lost.append(f"{key[0]}:{key[1]} (acked as {a.mid})")
        else:
            if got[0] != a.mid:
                v.moved.append(f"{key[0]}:{key[1]} acked as {a.mid}, read at {got[0]}")
            if got[1] != a.digest:
                v.not_exact.append(f"{key[0]}:{key[1]} digest {got[1]} != acked {a.digest}")

    # -- writing resumed after each heal
    for w in windows:
        if w.t_heal is None:
            continue
        after = [c.t1 for c in events.acks if c.t0 >= w.t_heal]
        v.resume.append((w.label, (min(after) - w.t_heal) if after else None))
    return v
