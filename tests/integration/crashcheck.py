"""Shared by the crash tests of every mode: run one writer process until a
SIGKILL at a random moment, read a log back, and check that every acknowledged
entry is there exactly once, in order, byte-exact, under its acknowledged id."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import logstore
from logstore import EARLIEST

from crash_writer import payload

WRITER = Path(__file__).parent / "crash_writer.py"


def start_writer(cfg: dict, name: str, cycle: int) -> subprocess.Popen:
    """The crash writer as a child process, once it has its writer open."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, str(WRITER), json.dumps(cfg), name, str(cycle)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "open":
        _, err = kill_and_drain(child)
        raise AssertionError(f"writer did not start (exit {child.returncode}): {line!r}\n{err}")
    return child


def kill_and_drain(child: subprocess.Popen) -> tuple[str, str]:
    """SIGKILL, then everything the child printed.  Not ``communicate()``: with
    two pipes it reads the raw descriptors and drops what an earlier
    ``readline()`` had already buffered — the first acks of a cycle."""
    child.send_signal(signal.SIGKILL)
    assert child.stdout is not None and child.stderr is not None
    out, err = child.stdout.read(), child.stderr.read()
    child.wait(timeout=30)
    return out, err


def run_cycle(cfg: dict, name: str, cycle: int, rng: random.Random,
              crash_after: tuple[float, float] = (0.0, 0.4)) -> list[tuple[int, int, str]]:
    """One writer process, SIGKILLed after a random delay → its (cycle, seq, id) acks."""
    child = start_writer(cfg, name, cycle)
    time.sleep(rng.uniform(*crash_after))  # the random moment of the crash (not a wait for a condition)
    return parse_acks(kill_and_drain(child)[0])


def parse_acks(out: str) -> list[tuple[int, int, str]]:
    """The ``ack SEG ENTRY DIGEST`` lines a killed writer printed (its last line may be torn by the kill)."""
    acks = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 4 and parts[0] == "ack":
            acks.append((int(parts[1]), int(parts[2]), parts[3]))
    return acks


async def read_back(cfg: logstore.Config, name: str, idle: float) -> list[logstore.Message]:
    """Recover the last crashed segment with a fresh writer, then read everything."""
    async with logstore.Client(cfg) as c:
        log = await c.open_log(name)
        async with await log.open_writer():
            pass
        return await read_all(log, idle)


async def read_all(log: logstore.LogHandle, idle: float) -> list[logstore.Message]:
    """Every entry from the start, until none arrives for ``idle`` seconds."""
    reader = await log.open_reader(EARLIEST)
    got = []
    while True:
        try:
            got.append(await reader.read_next(timeout=idle))
        except TimeoutError:
            await reader.close()
            return got


def check_exactly_once(got: list[logstore.Message], acked: list[tuple[int, int, str]]) -> None:
    seen = {}
    for m in got:
        cyc, seq = (int(x) for x in m.payload.split(b":", 2)[:2])
        assert (cyc, seq) not in seen, f"entry {cyc}:{seq} read twice"
        seen[(cyc, seq)] = m
        assert m.payload == payload(cyc, seq), f"entry {cyc}:{seq} not byte-exact"
    order = [tuple(int(x) for x in m.payload.split(b":", 2)[:2]) for m in got]
    assert order == sorted(order), "entries keep their order across writers and crashes"
    assert [m.id for m in got] == sorted(m.id for m in got)
    for cyc, seq, mid in acked:
        assert (cyc, seq) in seen, f"acknowledged entry {cyc}:{seq} ({mid}) was lost"
        assert str(seen[(cyc, seq)].id) == mid, f"acknowledged entry {cyc}:{seq} moved from {mid}"
