"""Which client-certificate role may call which LogStore RPC.

Why: with ``tls.requireClientCert`` every certificate the CA signed gets in,
so without this a read-only consumer's key (or a leaked one) could append,
fence or delete any log.  The operator issues client certificates whose
Subject CN is ``<role>:<who>`` (the convention is fixed; the operator's PKI
relies on it):

- ``admin``  — the operator: every RPC, including ones added later;
- ``writer`` — applications that write: the writer, recovery (fence/complete),
  compaction, truncation and deletion all run in the writing client, so it
  needs every RPC the client uses, the destructive ones included;
- ``reader`` — read-only consumers: only the RPCs a reader sends (entries,
  LAC, block count, the tail subscription ``SubscribeEntries``).  ``SelectNodes``
  is left out: readers never call it (they learn replicas from segment
  metadata), writers pick ensembles.

An RPC missing from the table, a role not listed, or a certificate without a
``role:`` CN is refused (deny by default).  Pure data and functions: the
server enforces it (``server.service``), tests check the table against
``rpc.METHODS``.
"""
from __future__ import annotations

ROLES = ("admin", "writer", "reader")

_READ = frozenset({"GetBatchEntriesAdv", "GetSegmentLastAddConfirmed", "GetSegmentBlockCount",
                   "SubscribeEntries"})
_WRITE = _READ | frozenset({"AddEntries", "AddEntry", "FenceSegment", "CompleteSegment", "UpdateLastAddConfirmed",
                            "CompactSegment", "NotifySegmentCompacted", "CleanSegment", "MarkLogDeleted",
                            "MarkInstanceDeleted", "SelectNodes", "WriteBatch"})

# RPC name → roles allowed to call it (admin may call everything, also RPCs not listed here)
ALLOWED: dict[str, frozenset[str]] = {rpc: frozenset({"admin", "writer"} | ({"reader"} if rpc in _READ else set()))
                                      for rpc in _WRITE}


def role_of(common_name: str | None) -> str | None:
    """The role of a ``<role>:<who>`` CN, or None when it has no known role."""
    if not common_name or ":" not in common_name:
        return None
    role, who = common_name.split(":", 1)
    return role if role in ROLES and who else None


def allowed(role: str | None, rpc: str) -> bool:
    if role == "admin":
        return True
    return role is not None and role in ALLOWED.get(rpc, frozenset())


def refusal(common_name: str | None, rpc: str) -> str | None:
    """None when the call may proceed, else the message the client gets (it
    names the role and the RPC, never more of the certificate)."""
    role = role_of(common_name)
    if allowed(role, rpc):
        return None
    if role is None:
        return (f"{rpc}: permission denied: the client certificate has no role (its CN must be "
                f"'<role>:<name>' with role in {', '.join(ROLES)})")
    need = sorted(ALLOWED.get(rpc, frozenset({"admin"})))
    return f"{rpc}: permission denied for role {role!r} (needs {' or '.join(need)})"
