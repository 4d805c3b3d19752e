"""The identity of a LogStore's data directory — a cookie, as BookKeeper has.

Why: a LogStore restarted on an empty (replaced) or foreign disk answers with
the same endpoint but holds none of what it acknowledged before.  Its "I have
nothing" must never count as evidence about a segment it was given under its
old identity, or recovery completes segments too early and acknowledged
entries vanish.  So every data dir carries an instance id, made once and
persisted durably; clients record it per replica in the segment's QuorumInfo
and only count replies from that same instance.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from ..storage.segfile import fsync_dir, makedirs_durable

log = logging.getLogger(__name__)
FILENAME = "picchio.instance"


def load_or_create(root: Path, node_id: str) -> str:
    """The instance id of data dir ``root`` for ``node_id``.  A dir without an
    instance file (empty, or written before identities existed) or one that
    belongs to another node (a foreign dir) gets a new id; it is written to a
    temporary file, fsync'd, renamed and the dir fsync'd before the LogStore
    serves anything, so an acknowledged write is never made under an identity
    that a crash could forget."""
    path = root / FILENAME
    try:
        doc = json.loads(path.read_text())
        if doc.get("nodeId") == node_id and doc.get("instance"):
            return str(doc["instance"])
        log.warning("data dir %s belongs to node %r, not %r: starting as a new instance", root, doc.get("nodeId"),
                    node_id)
    except FileNotFoundError:
        pass
    except (ValueError, OSError) as e:
        log.warning("unreadable instance file %s (%r): starting as a new instance", path, e)
    instance = uuid.uuid4().hex
    makedirs_durable(root)
    tmp = root / (FILENAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"instance": instance, "nodeId": node_id}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(root)
    log.info("data dir %s: new instance %s for node %s", root, instance, node_id)
    return instance


LOCKNAME = "picchio.lock"


def lock_data_dir(root: Path) -> int:
    """Hold an exclusive lock on data dir ``root`` for the life of this process
    (the kernel drops it when the process ends, however it ends): a second
    LogStore pointed at the same directory would interleave its writes with
    ours.  Returns the open descriptor; raises BlockingIOError naming the
    holder's pid when another process has it."""
    import fcntl

    makedirs_durable(root)
    fd = os.open(root / LOCKNAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise BlockingIOError(f"in use by another LogStore (pid {holder})") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
