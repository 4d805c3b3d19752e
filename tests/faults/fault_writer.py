"""Workload child process: appends forever (a few in flight) and records every
event to a file as it happens, one flushed line each, until it is SIGKILLed.

    B <run> <first_seq> <n> <t0>                     a batch of appends started
    A <run> <seq> <id> <sha256:16> <t0> <t1>         acknowledged
    E <run> <seq> <ErrorType> <t0> <t1> <message>    failed
    O <run> <t0> <t1> | F <run> <ErrorType> <t0> <t1> <message>
                        client connected / writer opened | connect or open failed

Times are CLOCK_MONOTONIC (shared by every process on the machine), so the
checker can lay them against the nemesis timeline.  After an error the same
writer is used again (the README: the next append tries again); only a writer
that says it is closed or fenced is replaced, and that is recorded.

    python fault_writer.py CONFIG_JSON LOG RUN ACKFILE [--concurrency N]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import logstore  # noqa: E402
from crash_writer import payload  # noqa: E402


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


class Out:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)

    def line(self, *parts: object) -> None:
        self.f.write(" ".join(str(p) for p in parts) + "\n")
        self.f.flush()


def etype(e: BaseException) -> str:
    return type(e).__name__


def emsg(e: BaseException) -> str:
    return repr(str(e)[:300])


async def open_writer(c: logstore.Client, name: str, run: int, out: Out, create: bool) -> logstore.LogWriter:
    while True:
        t0 = time.monotonic()
        try:
            try:
                log = await c.open_log(name)
            except logstore.LogNotFoundError:
                if not create:
                    raise
                try:
                    log = await c.create_log(name)
                except logstore.LogExistsError:
                    log = await c.open_log(name)
            w = await log.open_writer()
            out.line("O", run, f"{t0:.6f}", f"{time.monotonic():.6f}")
            return w
        except Exception as e:  # noqa: BLE001 - recorded; the checker judges it
            out.line("F", run, etype(e), f"{t0:.6f}", f"{time.monotonic():.6f}", emsg(e))
            await asyncio.sleep(0.2)


async def main(cfg: dict, name: str, run: int, path: str, concurrency: int, create: bool) -> None:
    out = Out(path)
    rng = random.Random(run)
    while True:  # connecting is part of opening: bounded and typed like the rest
        t0 = time.monotonic()
        c = logstore.Client(cfg)
        try:
            await c.start()
            out.line("O", run, f"{t0:.6f}", f"{time.monotonic():.6f}")
            break
        except Exception as e:  # noqa: BLE001 - recorded; the checker judges it
            out.line("F", run, etype(e), f"{t0:.6f}", f"{time.monotonic():.6f}", emsg(e))
            await asyncio.sleep(0.2)
    try:
        w = await open_writer(c, name, run, out, create)
        print("open", flush=True)
        seq = 0
        while True:
            batch = list(range(seq, seq + rng.randint(1, concurrency)))
            seq += len(batch)
            t0 = time.monotonic()
            out.line("B", run, batch[0], len(batch), f"{t0:.6f}")
            datas = [payload(run, s) for s in batch]

            async def one(s: int, data: bytes) -> None:
                try:
                    mid = await w.append(data)
                except Exception as e:  # noqa: BLE001
                    out.line("E", run, s, etype(e), f"{t0:.6f}", f"{time.monotonic():.6f}", emsg(e))
                    raise
                out.line("A", run, s, mid, digest(data), f"{t0:.6f}", f"{time.monotonic():.6f}")

            res = await asyncio.gather(*(one(s, d) for s, d in zip(batch, datas)), return_exceptions=True)
            errs = [r for r in res if isinstance(r, BaseException)]
            if any(isinstance(e, (logstore.WriterClosedError, logstore.WriterFencedError)) for e in errs):
                try:
                    await w.close()
                except Exception:  # noqa: BLE001 - it is dead anyway
                    pass
                w = await open_writer(c, name, run, out, create)
            elif errs:
                await asyncio.sleep(0.05)  # retry with the same writer, not a hot loop
    finally:
        await c.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("log")
    ap.add_argument("run", type=int)
    ap.add_argument("ackfile")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--no-create", action="store_true")
    a = ap.parse_args()
    asyncio.run(main(json.loads(Path(a.config).read_text()), a.log, a.run, a.ackfile, a.concurrency, not a.no_create))
