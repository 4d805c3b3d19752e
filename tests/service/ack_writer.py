"""Child process of the durability tests: appends forever (a few in flight) and
records each acknowledgement in a file the moment it happens, so a SIGKILL at
any time leaves an exact record of what was acknowledged.

Lines: ``ack SEQ SEG:ENTRY`` per acknowledged entry, ``err TYPE MESSAGE`` per
failed append (the writer goes on: a single slow LogStore must cause none).
Run: ``python ack_writer.py CONFIG_JSON LOG_NAME ACK_FILE``.
"""
from __future__ import annotations

import asyncio
import json
import random
import sys

import logstore


def payload(seq: int) -> bytes:
    """Deterministic bytes of entry ``seq``, so the reader can check byte-exactness."""
    rnd = random.Random(seq * 7_919 + 13)
    return b"%d:" % seq + rnd.randbytes(rnd.randint(1, 2000))


def seq_of(data: bytes) -> int:
    return int(data.split(b":", 1)[0])


async def main(cfg: dict, name: str, path: str) -> None:
    out = open(path, "a", buffering=1)  # line-buffered: every line reaches the kernel at once
    async with logstore.Client(cfg) as c:
        log = await c.open_log(name)
        w = await log.open_writer()
        out.write("open\n")
        seq = 0
        while True:
            batch = list(range(seq, seq + random.randint(1, 8)))
            seq += len(batch)
            results = await asyncio.gather(*(w.append(payload(s)) for s in batch), return_exceptions=True)
            for s, r in zip(batch, results):
                if isinstance(r, BaseException):
                    out.write(f"err {type(r).__name__} {str(r)[:200]!r}\n")
                else:
                    out.write(f"ack {s} {r}\n")
            if any(isinstance(r, BaseException) for r in results):
                await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))
