"""State files of detached components (``picchio dev … up``): a JSON record of
the processes started, so a later ``down`` — from any shell — stops exactly
those PIDs (checked against the program they run) and nothing else."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .procs import pid_runs, stop_pid


def read_state_file(path: Path) -> dict[str, Any] | None:
    """A state file's record, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_state_file(path: Path, state: dict[str, Any]) -> None:
    """Atomically: a ``down`` racing an ``up`` never reads half a record."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def state_alive(state: dict[str, Any]) -> bool:
    """All recorded processes still run (same PID, same program)."""
    procs = state.get("processes") or []
    return bool(procs) and all(pid_runs(p["pid"], p.get("exe")) for p in procs)


def stop_from_state(path: Path) -> list[str]:
    """Stop the processes a state file records, in reverse start order (a
    store that others depend on is started first, so it goes last), and
    remove the file.  Returns the names that were running."""
    state = read_state_file(path)
    if state is None:
        return []
    stopped = [p["name"] for p in reversed(state.get("processes") or [])
               if stop_pid(p["pid"], p.get("exe"))]
    path.unlink(missing_ok=True)
    return stopped
