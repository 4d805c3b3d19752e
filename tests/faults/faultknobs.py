"""The fault suite's knobs, read once per process (see conftest.py)."""
from __future__ import annotations

import os
import random

#: small deadlines (seconds) so every bound (3x) is a few seconds
DEADLINES = {"quorum": 1.5, "s3": 2.0, "etcd": 2.0}
DEADLINES["disk"] = DEADLINES["etcd"]  # local disk has no deadline of its own; a roll needs etcd

SEED = int(os.environ.get("PICCHIO_FAULT_SEED") or random.SystemRandom().randrange(1, 10**9))
RUNS = int(os.environ.get("PICCHIO_FAULT_RUNS") or 6)
CYCLES = int(os.environ.get("PICCHIO_FAULT_CYCLES") or 8)
