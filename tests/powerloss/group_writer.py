"""Child process of the group-commit power-cut test: one writer per log on many
logs, a few appends in flight on each, one line per acknowledged entry, until
it is stopped and killed.  Its first line says the writers are open; each
``group`` line gives the group commit's counters (syncfs calls, blocks)."""
import asyncio
import json
import sys

import logstore


def payload(log: int, seq: int) -> bytes:
    return b"%d:%d:" % (log, seq) + bytes([(log * 31 + seq) % 251]) * (64 + (log * 7 + seq * 13) % 3000)


async def main(cfg: dict, prefix: str, logs: int) -> None:
    async with logstore.Client(cfg) as c:
        writers = []
        for i in range(logs):
            log = await c.create_log(f"{prefix}{i}")
            writers.append(await log.open_writer())
        print("open", flush=True)

        async def one(i: int) -> None:
            seq = 0
            while True:
                batch = list(range(seq, seq + 1 + seq % 3))
                seq += len(batch)
                ids = await asyncio.gather(*(writers[i].append(payload(i, s)) for s in batch))
                sys.stdout.write("".join(f"ack {i} {s} {m}\n" for s, m in zip(batch, ids)))
                g = getattr(c.backend, "group", None)  # service mode: the LogStores group their syncs
                sys.stdout.write(f"group {g.groups if g else 0} {g.blocks if g else 0}\n")
                sys.stdout.flush()

        await asyncio.gather(*(one(i) for i in range(logs)))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
