"""SIGKILL a writer process at random moments, over many cycles: every
acknowledged entry is read back exactly once, in order, byte-exact."""
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import payload  # noqa: E402

CYCLES = {"local": 15, "minio": 8}


def _run_cycle(cfg: dict, name: str, cycle: int, rng: random.Random) -> list[tuple[int, int, str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, str(Path(__file__).parent / "crash_writer.py"), json.dumps(cfg),
                              name, str(cycle)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "open", f"writer did not start: {line!r} {child.stderr.read() if child.poll() is not None else ''}"
    time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the crash (not a wait for a condition)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    acks = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 4 and parts[0] == "ack":  # the last line may be torn by the kill
            acks.append((int(parts[1]), int(parts[2]), parts[3]))
    return acks


@pytest.mark.parametrize("kind", ["local", "minio"])
async def test_sigkill_cycles_lose_nothing_acknowledged(make_config, kind):
    cfg = make_config(kind, **{"woodpecker.client.segmentRollingPolicy.maxSize": 60_000,
                               "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 8_000})
    flat = cfg.to_dict()
    async with logstore.Client(cfg) as c:
        await c.create_log("crashy")
    rng = random.Random(1234)
    acked: list[tuple[int, int, str]] = []
    for cycle in range(CYCLES[kind]):
        acked += await asyncio.to_thread(_run_cycle, flat, "crashy", cycle, rng)
    assert len(acked) > CYCLES[kind] * 5, "the writers acknowledged a meaningful number of entries"
    async with logstore.Client(cfg) as c:
        log = await c.open_log("crashy")
        async with await log.open_writer():  # a last writer recovers the last crashed segment
            pass
        reader = await log.open_reader(EARLIEST)
        got = []
        while True:
            try:
                got.append(await reader.read_next(timeout=1.0))
            except TimeoutError:
                break
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
