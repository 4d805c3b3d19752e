"""Process plumbing for the harness: the product's (``logstore.dev.procs``,
which ``picchio dev``/``picchio bench`` use too), re-exported so the harness
and the tests keep one implementation under their usual import path."""
from logstore.dev.procs import (  # noqa: F401 - re-exports
    ComponentMissing, Proc, cache_dir, find_binary, free_port, pid_runs, port_open, stop_pid, wait_for,
)
