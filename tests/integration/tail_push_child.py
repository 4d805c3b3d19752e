"""A reader in its own process for test_tail_push.py: waits at the tail of a
log and prints each entry's payload the moment it arrives.

argv: config (JSON dict), log name.  Prints ``ready`` once the reader is open
(and has gone to wait), then one payload per line until killed.  ``arrivals``
is the parent's side, shared by the tests of every backend."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import logstore


async def main(cfg: dict, name: str) -> None:
    async with logstore.Client(cfg) as c:
        reader = await (await c.open_log(name)).open_reader(logstore.LATEST)
        print("ready", flush=True)
        while True:
            try:
                msg = await reader.read_next(timeout=30)
            except TimeoutError:
                continue
            print(msg.payload.decode(), flush=True)


async def arrivals(cfg: logstore.Config, rounds: int = 3, patience: float = 11.0) -> list[float]:
    """Seconds from each append's ack until a reader in another process printed the entry."""
    async with logstore.Client(cfg) as c:
        log = await c.create_log("tailed")
        w = await log.open_writer()
        await w.append(b"before")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        child = subprocess.Popen([sys.executable, __file__, json.dumps(cfg.to_dict()), "tailed"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        assert child.stdout is not None
        try:
            ready = await asyncio.to_thread(child.stdout.readline)
            assert ready.strip() == "ready", child.stderr.read() if child.stderr else ""
            took = []
            for i in range(rounds):
                await asyncio.sleep(0.5)  # the reader has scanned storage and gone to wait
                await w.append(b"entry-%d" % i)
                acked = time.monotonic()
                line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), patience)
                took.append(time.monotonic() - acked)
                assert line.strip() == f"entry-{i}"
            return took
        finally:
            child.kill()
            child.wait()
            await w.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2]))
