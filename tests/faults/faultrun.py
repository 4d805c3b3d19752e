"""Running workloads under fault schedules, and the per-nemesis report."""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from faultcheck import BOUND_FACTOR, Events, ReadBack, Verdict, Window, check, parse_events, parse_readback
from faultenv import Lab, wait_until
from nemesis import Nemesis

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------ report
class Report:
    """Per nemesis kind: runs (injections), schedules it took part in, acks
    made while it was active, lost / duplicated entries of those schedules,
    the longest stall (slowest call while it was active) vs its bound, errors
    by type, and the failed checks."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = defaultdict(lambda: {
            "runs": 0, "schedules": 0, "acks": 0, "acks_during_fault": 0, "lost": 0, "duplicated": 0,
            "max_stall_s": 0.0, "bound_s": 0.0, "max_resume_s": 0.0, "errors": {}, "recovery_retries": 0,
            "failed_schedules": 0,
            "problems": []})
        self.lock = threading.Lock()

    def add(self, kinds: dict[str, list[Window]], verdict: Verdict, events: Events, deadlines: dict[str, float],
            seed: int | str) -> None:
        with self.lock:
            for kind, ws in kinds.items():
                r = self.rows[kind]
                r["runs"] += len(ws)
                r["schedules"] += 1
                r["acks"] += verdict.acks
                r["lost"] += len(verdict.lost)
                r["duplicated"] += len(verdict.duplicated)
                r["recovery_retries"] += verdict.recovery_retries
                bound = BOUND_FACTOR * max(deadlines.get(w.deadline, 0) for w in ws) if ws else 0
                r["bound_s"] = max(r["bound_s"], round(bound, 2))
                for w in ws:
                    t_heal = w.t_heal if w.t_heal is not None else float("inf")
                    during = [c for c in events.calls if c.t0 <= t_heal and (c.t1 or t_heal) >= w.t_inject]
                    r["acks_during_fault"] += sum(1 for c in during if c.ok and c.kind == "append")
                    stall = max(((c.t1 if c.t1 is not None else t_heal) - c.t0 for c in during), default=0.0)
                    if stall != float("inf"):
                        r["max_stall_s"] = round(max(r["max_stall_s"], stall), 3)
                for label, res in verdict.resume:
                    if res is not None and label.split("(")[0] == kind:
                        r["max_resume_s"] = round(max(r["max_resume_s"], res), 3)
                for e, n in verdict.errors.items():
                    r["errors"][e] = r["errors"].get(e, 0) + n
                if verdict.problems:
                    r["failed_schedules"] += 1
                    if len(r["problems"]) < 5:
                        r["problems"].append(f"seed {seed}: " + " | ".join(p[:300] for p in verdict.problems))

    def as_json(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in sorted(self.rows.items())}


REPORT = Report()


# ------------------------------------------------------------------ workload
@dataclass
class Workload:
    """The writer child process (fault_writer.py), in the lab's core
    namespace (service mode) or in the root namespace (embedded)."""

    cfg: dict[str, Any]
    log: str
    run: int
    workdir: Path
    lab: Lab | None = None
    concurrency: int = 8
    proc: subprocess.Popen | None = None
    killed_at: dict[int, float] = field(default_factory=dict)

    @property
    def ackfile(self) -> Path:
        return self.workdir / f"acks-{self.log}.txt"

    def start(self, timeout: float = 60, wait_open: bool = True) -> "Workload":
        cfgfile = self.workdir / f"cfg-{self.log}-{self.run}.json"
        cfgfile.write_text(json.dumps(self.cfg))
        argv = [str(HERE / "fault_writer.py"), str(cfgfile), self.log, str(self.run), str(self.ackfile),
                "--concurrency", str(self.concurrency)]
        err = open(self.workdir / f"writer-{self.log}-{self.run}.err", "ab")
        if self.lab is not None:
            self.proc = self.lab.popen_py(argv, stdout=subprocess.PIPE, stderr=err)
        else:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=err, env=env,
                                         start_new_session=True)
        err.close()
        if not wait_open:
            return self
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if r else ""
        if line.strip() != "open":
            self.kill()
            tail = (self.workdir / f"writer-{self.log}-{self.run}.err").read_text(errors="replace")[-2000:]
            raise AssertionError(f"writer {self.log}/{self.run} did not open within {timeout}s: {line!r}\n{tail}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed_at[self.run] = time.monotonic()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def events(self) -> Events:
        return parse_events([self.ackfile], self.killed_at)

    def wait_acks(self, what: str, n: int, timeout: float, since: float = 0.0) -> None:
        """Poll the ack file until ``n`` acks of appends started after ``since``."""
        def enough() -> bool:
            if not self.alive():
                raise AssertionError(f"writer died (rc {self.proc.returncode}): "
                                     + (self.workdir / f"writer-{self.log}-{self.run}.err").read_text()[-1500:])
            return sum(1 for c in self.events().acks if c.t0 >= since) >= n
        wait_until(what, enough, timeout, interval=0.05)


TYPED_RECOVERY = ("QuorumUnavailableError", "StorageError", "StorageFullError", "MetadataError")


def read_back(cfg: dict[str, Any], log: str, workdir: Path, lab: Lab | None, timeout: float,
              idle: float = 3.0, recover: bool = True, retry_for: float = 30.0) -> ReadBack:
    """Recover and read the log in a child process.  A recovery that fails
    loudly (a typed error: no quorum yet, S3/etcd not back) is allowed and
    retried for ``retry_for`` seconds — the segment is left for a later
    recovery; only the final attempt's outcome is judged."""
    deadline = time.monotonic() + retry_for
    retried: list[str] = []
    while True:
        rb = _read_back_once(cfg, log, workdir, lab, timeout, idle, recover)
        if not rb.error or not any(t in rb.error for t in TYPED_RECOVERY) or time.monotonic() > deadline:
            rb.retried = retried
            return rb
        retried.append(rb.error)
        time.sleep(0.5)


def _read_back_once(cfg: dict[str, Any], log: str, workdir: Path, lab: Lab | None, timeout: float,
                    idle: float, recover: bool) -> ReadBack:
    cfgfile = workdir / f"cfg-{log}-read.json"
    cfgfile.write_text(json.dumps(cfg))
    out = workdir / f"read-{log}-{time.monotonic_ns()}.txt"
    argv = [str(HERE / "fault_reader.py"), str(cfgfile), log, str(out), "--idle", str(idle)]
    if not recover:
        argv.append("--no-recover")
    err = open(workdir / f"reader-{log}.err", "ab")
    if lab is not None:
        p = lab.popen_py(argv, stdout=subprocess.DEVNULL, stderr=err)
    else:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        p = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=err, env=env,
                             start_new_session=True)
    err.close()
    timed_out = False
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    return parse_readback(out, timed_out)


# ------------------------------------------------------------------ schedules
@dataclass
class Step:
    nemeses: list[Nemesis]
    hold: float
    #: over-quorum steps: these errors are allowed (and one is expected)
    allow: tuple[str, ...] = ()
    expect_error: bool = False


def windows_of(nemeses: list[Nemesis], allow: dict[int, tuple[str, ...]]) -> list[Window]:
    return [Window(n.kind, n.label, n.deadline, tuple(n.allowed_errors) + allow.get(id(n), ()),
                   n.t_inject, n.t_heal) for n in nemeses if n.t_inject is not None]


@dataclass
class ScheduleResult:
    verdict: Verdict
    events: Events
    windows: list[Window]
    timeline: list[str]


def run_schedule(wl: Workload, steps: list[Step], deadlines: dict[str, float], base: str, rng: random.Random,
                 reader: Callable[[], ReadBack], warmup_acks: int = 30, resume_acks: int = 5,
                 before_kill: float = 0.5, seed: Any = "",
                 diagnose: Callable[[], str] | None = None) -> ScheduleResult:
    """Warm up, then for each step inject its nemeses together, hold, heal
    them, and wait until writing resumes; then SIGKILL the writer at a random
    moment, read back (recovering the log) and check everything."""
    timeline: list[str] = []
    injected: list[Nemesis] = []
    allow: dict[int, tuple[str, ...]] = {}
    extra: list[str] = []
    t_start = time.monotonic()

    def note(s: str) -> None:
        timeline.append(f"{time.monotonic() - t_start:7.2f}s {s}")

    try:
        wl.wait_acks(f"{warmup_acks} warm-up acks", warmup_acks, 60)
        last_ls: tuple[str, float] | None = None  # (target, heal time) of the last LogStore fault
        for i, st in enumerate(steps):
            ls_targets = {n.target for n in st.nemeses if n.logstore_fault}
            if last_ls and ls_targets - {last_ls[0]} and not st.expect_error:
                # Spacing, not a wait for a condition: a fault counts until its bound has
                # passed after the heal (the checker's rule too), so a fault on another
                # LogStore before then would be two at once — more than the quorum tolerates.
                settle = last_ls[1] + BOUND_FACTOR * deadlines["quorum"] - time.monotonic()
                if settle > 0:
                    note(f"settle {settle:.1f}s after {last_ls[0]} healed")
                    time.sleep(settle)
            for n in st.nemeses:
                allow[id(n)] = st.allow
                n.inject()
                injected.append(n)
                note(f"inject {n.label} {n.detail or ''}")
            t_in = time.monotonic()
            if st.expect_error:
                bound = BOUND_FACTOR * max(deadlines[n.deadline] for n in st.nemeses)
                wait_until(f"a typed error ({'/'.join(st.allow)}) within {bound:.1f}s of {st.nemeses[0].label}",
                           lambda: any(c.t1 is not None and c.t1 >= t_in and c.error in st.allow
                                       for c in wl.events().errors), bound + st.hold + 5)
            deadline = t_in + st.hold
            while time.monotonic() < deadline:  # hold the fault, watching the writer stay alive
                if not wl.alive():
                    raise AssertionError("writer process died during the fault")
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            for n in reversed(st.nemeses):  # shared services (etcd, S3) first, then restart LogStores
                n.heal()
                note(f"heal {n.label}")
            t_heal = max(n.t_heal for n in st.nemeses)
            for n in st.nemeses:
                if n.logstore_fault:
                    last_ls = (n.target, n.t_heal)
            bound = BOUND_FACTOR * max([deadlines[base]] + [deadlines[n.deadline] for n in st.nemeses])
            try:
                wl.wait_acks(f"writing to resume after step {i} ({', '.join(n.label for n in st.nemeses)})",
                             resume_acks, bound + 20, since=t_heal)
                note("resumed")
            except AssertionError as e:
                extra.append(str(e))
                note("did not resume" + (f"; {diagnose()}" if diagnose else ""))
                break
        time.sleep(rng.uniform(0, before_kill))  # the random moment of the writer's crash, not a wait
    except AssertionError as e:
        extra.append(str(e))
    finally:
        for n in reversed(injected):
            n.heal()
        wl.kill()
        note("writer killed")
    t_end = max(wl.killed_at.values(), default=time.monotonic())
    rb = reader()
    for r in rb.retried:
        note(f"recovery failed loudly, retried: {r}")
    note(f"read back {len(rb.entries)} entries {rb.error}")
    events = wl.events()
    windows = windows_of(injected, allow)
    v = check(events, rb, windows, deadlines, base, t_end)
    v.extra.extend(extra)
    for st in steps:
        if st.expect_error and not any(e in v.errors for e in st.allow):
            v.extra.append(f"no typed error ({'/'.join(st.allow)}) while {[n.label for n in st.nemeses]} exceeded "
                           "what the quorum tolerates")
    kinds: dict[str, list[Window]] = defaultdict(list)
    for w in windows:
        kinds[w.kind].append(w)
    if not kinds:
        kinds["none"] = []
    REPORT.add(kinds, v, events, deadlines, seed)
    return ScheduleResult(v, events, windows, timeline)


def describe(res: ScheduleResult, seed: Any) -> str:
    v = res.verdict
    return (f"seed={seed} (replay: PICCHIO_FAULT_SEED={seed})\n"
            f"acks={v.acks} read={v.read} lost={len(v.lost)} dup={len(v.duplicated)} errors={dict(v.errors)} "
            f"max_stall={v.max_stall:.2f}s (bound {v.max_stall_bound:.1f}s)\n"
            "timeline:\n  " + "\n  ".join(res.timeline) + "\nproblems:\n  " + "\n  ".join(v.problems))
