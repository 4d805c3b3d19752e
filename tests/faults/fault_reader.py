"""Read-back child process: recover the log like a new writer would (open a
writer, which fences and completes the last segment, close it), then read
everything from EARLIEST until ``idle`` seconds pass without an entry.

    M <id> <run> <seq> <sha256:16> <exact 0|1>       one line per entry read
    X <phase> <ErrorType> <seconds> <message>        a failure (exit 3)
    D <seconds>                                      done

    python fault_reader.py CONFIG_JSON LOG OUTFILE [--idle S] [--no-recover]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import logstore  # noqa: E402
from crash_writer import payload  # noqa: E402
from fault_writer import Out, digest, emsg, etype  # noqa: E402


async def main(cfg: dict, name: str, path: str, idle: float, recover: bool) -> int:
    out = Out(path)
    t0 = time.monotonic()
    phase = "connect"
    try:
        async with logstore.Client(cfg) as c:
            phase = "open_log"
            log = await c.open_log(name)
            if recover:
                phase = "recover"
                w = await log.open_writer()
                phase = "close"
                await w.close()
            phase = "read"
            reader = await log.open_reader(logstore.EARLIEST)
            while True:
                try:
                    m = await reader.read_next(timeout=idle)
                except TimeoutError:
                    break
                try:
                    run, seq = (int(x) for x in m.payload.split(b":", 2)[:2])
                    exact = int(m.payload == payload(run, seq))
                except ValueError:
                    run, seq, exact = -1, -1, 0
                out.line("M", m.id, run, seq, digest(m.payload), exact)
    except Exception as e:  # noqa: BLE001 - reported to the checker
        out.line("X", phase, etype(e), f"{time.monotonic() - t0:.3f}", emsg(e))
        return 3
    out.line("D", f"{time.monotonic() - t0:.3f}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("log")
    ap.add_argument("outfile")
    ap.add_argument("--idle", type=float, default=3.0)
    ap.add_argument("--no-recover", action="store_true")
    a = ap.parse_args()
    sys.exit(asyncio.run(main(json.loads(Path(a.config).read_text()), a.log, a.outfile, a.idle, not a.no_recover)))
