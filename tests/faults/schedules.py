"""Randomized fault schedules that never exceed what the quorum tolerates:
at most one LogStore faulty at a time (service mode: 3 LogStores, ack quorum
2), optionally together with an S3 or etcd hang."""
from __future__ import annotations

import random

from faultenv import Lab
from faultrun import Step
from nemesis import (Nemesis, NemesisSet, bandwidth, diskfull_logstore, half_open, hang_etcd, hang_s3, kill_logstore,
                     latency, partition_logstore, pause_logstore, s3_latency, wipe_logstore)

LOGSTORE_KINDS = ["pause", "kill", "wipe", "partition", "latency", "bandwidth", "half-open", "diskfull"]
SHARED_KINDS = ["s3-hang", "etcd-hang", "s3-latency"]


def logstore_nemesis(kind: str, lab: Lab, rng: random.Random, deadlines: dict[str, float]) -> Nemesis:
    ls = rng.choice(lab.logstores)
    if kind == "pause":
        return pause_logstore(ls)
    if kind == "kill":
        return kill_logstore(ls)
    if kind == "wipe":
        return wipe_logstore(ls)
    if kind == "partition":
        return partition_logstore(lab, ls)
    if kind == "latency":  # below and above the quorum deadline
        return latency(lab, ls, rng.choice([50, 400, int(deadlines["quorum"] * 1000 * 0.8),
                                            int(deadlines["quorum"] * 2000)]), jitter=rng.choice([0, 50]))
    if kind == "bandwidth":
        return bandwidth(lab, ls, rng.choice([32, 256, 2048]))
    if kind == "half-open":
        return half_open(lab, ls)
    if kind == "diskfull":
        return diskfull_logstore(ls)
    raise ValueError(kind)


def shared_nemesis(kind: str, lab: Lab, rng: random.Random) -> Nemesis:
    if kind == "s3-hang":
        return hang_s3(lab)
    if kind == "etcd-hang":
        return hang_etcd(lab)
    if kind == "s3-latency":
        return s3_latency(lab, rng.choice([200, 1000]))
    raise ValueError(kind)


def random_schedule(lab: Lab, ns: NemesisSet, rng: random.Random, deadlines: dict[str, float],
                    max_steps: int = 3) -> list[Step]:
    steps = []
    for _ in range(rng.randint(1, max_steps)):
        nem: list[Nemesis] = []
        r = rng.random()
        if r < 0.7:  # one LogStore fault ...
            nem.append(ns.add(logstore_nemesis(rng.choice(LOGSTORE_KINDS), lab, rng, deadlines)))
            if rng.random() < 0.3:  # ... sometimes together with an S3 or etcd fault
                nem.append(ns.add(shared_nemesis(rng.choice(SHARED_KINDS), lab, rng)))
        else:
            nem.append(ns.add(shared_nemesis(rng.choice(SHARED_KINDS), lab, rng)))
        steps.append(Step(nem, hold=round(rng.uniform(0.5, 2 * deadlines["quorum"] + 1), 2)))
    return steps
