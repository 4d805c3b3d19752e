"""Child process of the crash test: appends forever (several in flight) and
prints one line per acknowledged entry, until it is SIGKILLed."""
import asyncio
import json
import random
import sys

import logstore


def payload(cycle: int, seq: int) -> bytes:
    rnd = random.Random(cycle * 1_000_003 + seq)
    return b"%d:%d:" % (cycle, seq) + rnd.randbytes(rnd.randint(1, 3000))


async def main(cfg: dict, name: str, cycle: int) -> None:
    async with logstore.Client(cfg) as c:
        log = await c.open_log(name)
        w = await log.open_writer()
        print("open", flush=True)
        seq = 0
        while True:
            batch = list(range(seq, seq + random.randint(1, 16)))
            seq += len(batch)
            ids = await asyncio.gather(*(w.append(payload(cycle, s)) for s in batch))
            sys.stdout.write("".join(f"ack {cycle} {s} {m}\n" for s, m in zip(batch, ids)))
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
