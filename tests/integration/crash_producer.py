"""The SIGKILL cycles of an idempotent producer.  As a script it is the child
application: it opens the log with its producer id, checks ``last_sequence``
against what it knows it sent, re-sends from ``resend_from`` (the oldest
sequence it sent but never saw acknowledged — the parent learnt it from the
``sent``/``ack`` lines printed before and after each append) and goes on with
new sequences, several in flight, until it is killed.  The functions are the
parent's side: run one cycle, then finish and check exactly-once."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import logstore
from crashcheck import read_all

PID = "crash-app"


def payload(seq: int) -> bytes:
    rnd = random.Random(seq)
    return b"%d:" % seq + rnd.randbytes(rnd.randint(1, 2000))


async def child(cfg: dict, name: str, resend_from: int, sent_upto: int) -> None:
    async with logstore.Client(cfg) as c:
        log = await c.open_log(name)
        w = await log.open_writer(producer_id=PID)
        last = w.last_sequence
        # everything below resend_from was acknowledged to us, so the log holds it;
        # the log may hold more (stored, ack lost in the kill): those come back as duplicates
        assert resend_from - 1 <= last <= sent_upto, (resend_from, last, sent_upto)
        print(f"open {last}", flush=True)
        seq = resend_from
        while True:
            batch = list(range(seq, seq + random.randint(1, 16)))
            seq += len(batch)
            sys.stdout.write("".join(f"sent {s}\n" for s in batch))
            sys.stdout.flush()
            ids = await asyncio.gather(*(w.append(payload(s), sequence=s) for s in batch))
            sys.stdout.write("".join(f"ack {s} {m}\n" for s, m in zip(batch, ids)))
            sys.stdout.flush()


@dataclass
class Ledger:
    """What the application knows from what its processes printed."""
    sent: set[int] = field(default_factory=set)
    acked: dict[int, str] = field(default_factory=dict)
    duplicates: int = 0  # acks printed twice for one sequence (always with the same id)
    stored_unacked: int = 0  # sequences a killed child never saw acknowledged, found in the log at restart

    @property
    def resend_from(self) -> int:
        unacked = self.sent - self.acked.keys()
        return min(unacked) if unacked else max(self.sent, default=-1) + 1

    @property
    def sent_upto(self) -> int:
        return max(self.sent, default=-1)

    def absorb(self, out: str) -> None:
        for ln in out.splitlines():
            parts = ln.split()
            if len(parts) == 2 and parts[0] == "sent" and parts[1].isdigit():
                self.sent.add(int(parts[1]))
            elif len(parts) == 3 and parts[0] == "ack" and parts[1].isdigit() and ":" in parts[2]:
                s, mid = int(parts[1]), parts[2]
                if s in self.acked:
                    assert self.acked[s] == mid, f"sequence {s} acknowledged as {self.acked[s]}, then as {mid}"
                    self.duplicates += 1
                self.acked[s] = mid


def run_cycle(cfg: dict, name: str, ledger: Ledger, rng: random.Random,
              crash_after: tuple[float, float] = (0.05, 0.5)) -> int:
    """One child, SIGKILLed at a random moment; returns the last_sequence it saw at open."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # read the rest through the same buffered file object as readline(): communicate()
    # reads the raw pipe and would drop the lines readline() had already read ahead
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen([sys.executable, __file__, json.dumps(cfg), name, str(ledger.resend_from),
                                 str(ledger.sent_upto)], stdout=subprocess.PIPE, stderr=errf, env=env, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.startswith("open "):
            time.sleep(rng.uniform(*crash_after))  # the random moment of the crash (not a wait for a condition)
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()  # EOF: the child is dead
        proc.wait(30)
        errf.seek(0)
        err = errf.read()
    if not line.startswith("open ") or proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"producer failed (exit {proc.returncode}): {line!r}\n{err[-2000:]}")
    ledger.absorb(out)
    return int(line.split()[1])


async def finish_and_check(cfg: logstore.Config, name: str, ledger: Ledger) -> list[logstore.Message]:
    """A last, uninterrupted run re-sends what is still unacknowledged; then the
    log must hold every sequence 0..sent_upto exactly once, in order, byte-exact,
    at the ids that were acknowledged."""
    async with logstore.Client(cfg) as c:
        log = await c.open_log(name)
        async with await log.open_writer(producer_id=PID) as w:
            assert ledger.resend_from - 1 <= w.last_sequence <= ledger.sent_upto
            for s in range(ledger.resend_from, ledger.sent_upto + 1):
                mid = await w.append(payload(s), sequence=s)
                assert str(mid) == ledger.acked.get(s, str(mid))
                ledger.acked[s] = str(mid)
        got = await read_all(log, idle=1.0)
    seqs = [int(m.properties["picchio.seq"]) for m in got]
    assert seqs == list(range(ledger.sent_upto + 1)), "every sequence exactly once, in order"
    for m, s in zip(got, seqs):
        assert m.payload == payload(s), f"sequence {s} not byte-exact"
        assert str(m.id) == ledger.acked[s], f"sequence {s} acknowledged as {ledger.acked[s]}, stored at {m.id}"
    return got


async def crash_cycles(cfg: logstore.Config, cycles: int, seed: int) -> Ledger:
    """Create a log, run ``cycles`` killed producers, finish and check."""
    async with logstore.Client(cfg) as c:
        await c.create_log("idem-crashy")
    rng, ledger = random.Random(seed), Ledger()
    for _ in range(cycles):
        resend_from = ledger.resend_from
        last = await asyncio.to_thread(run_cycle, cfg.to_dict(), "idem-crashy", ledger, rng)
        ledger.stored_unacked += last - resend_from + 1  # re-sends the log already held: answered, not written
    print(f"acked {len(ledger.acked)}, re-sent but already stored {ledger.stored_unacked}")
    assert len(ledger.acked) > cycles * 5, "the producers acknowledged a meaningful number of entries"
    assert ledger.sent - ledger.acked.keys(), "some appends were cut by a kill (else nothing was re-sent)"
    await finish_and_check(cfg, "idem-crashy", ledger)
    return ledger


if __name__ == "__main__":
    asyncio.run(child(json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
