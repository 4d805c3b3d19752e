"""The cluster's etcd keyspace: which keys the operator initialises, and with
what.  Layout and values come from the WAL library (``logstore.meta.Keys``,
``logstore.proto.encode_version``) so the operator and the clients can never
disagree about them."""
from __future__ import annotations

from logstore.meta.keys import Keys
from logstore.proto import encode_version

KEYSPACE_VERSION = (1, 0, 0)


def initial_keys(meta_prefix: str, instance_id: str) -> dict[bytes, bytes]:
    """Keys created (all at once, only if all are absent) for a new cluster.
    ``instance_id`` is a fresh UUID chosen by the caller (the model stays pure)."""
    k = Keys(meta_prefix)
    return {
        k.instance: instance_id.encode(),
        k.version: encode_version(*KEYSPACE_VERSION),
        k.logidgen: b"0",
        k.quorumidgen: b"0",
    }


def purge_prefix(meta_prefix: str) -> bytes:
    """Prefix deleted by deletionPolicy=Delete: everything below ``P/`` (the
    trailing slash keeps ``by-dev/woodpecker2`` out of it)."""
    return meta_prefix.rstrip("/").encode() + b"/"


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``": the prefix
    with its last byte incremented (``P/`` → ``P0``), as ``etcdctl --prefix``
    computes it.  Trailing 0xff bytes are dropped first."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\0"  # the whole keyspace; never what a cluster's prefix asks for
    p[-1] += 1
    return bytes(p)


def client_permission(meta_prefix: str) -> tuple[bytes, bytes]:
    """``(key, range_end)`` the cluster's etcd role may read and write: the
    purge prefix ``P/`` and nothing else — every key the WAL, the LogStores
    and the operator use lives below it (``logstore.meta.keys``)."""
    key = purge_prefix(meta_prefix)
    return key, prefix_range_end(key)
