"""Real components on loopback for ``picchio dev`` and ``picchio bench``: etcd,
MinIO, LogStore server processes, and the process plumbing under them (own
session per server, PID records, readiness with a deadline, teardown).

Why the product owns this: a user's ``picchio bench`` and ``picchio dev`` must
work from an installed package, without the test harness (``e2e/``), which
builds on this module instead of copying it.  Binaries are found through
``$PICCHIO_<NAME>_BIN``, the newest build in ``$PICCHIO_CACHE/bin`` (default
``~/.cache/picchio``), then the system (Debian's etcd-server, ``minio`` on PATH).
"""
