"""Which etcd prefix is in effect: Woodpecker's legacy-prefix rule, in one place.

Woodpecker v0.1.35 (``meta/metadata_etcd.go``, ``detectEffectiveMetadataPrefix``)
builds the configured prefix as ``path.Join(etcd.rootPath, woodpecker.meta.prefix)``
(``woodpecker`` if that is empty), then — once, when the metadata provider is
made — looks in a single etcd transaction for any key of the historical layout
under the bare ``woodpecker/``:

- the keys ``woodpecker/{instance,version,logidgen,quorumidgen,conditionwrite}``,
- anything under ``woodpecker/{logs,quorums,logstores,readers,cleaning}/``.

If one exists, the bare ``woodpecker`` prefix is used **whatever etcd.rootPath
says** (older Woodpecker releases ignored rootPath); otherwise the configured
prefix.  If the look-up itself fails, Woodpecker logs a warning and uses the
configured prefix; so do we.  The rule runs at every client / LogStore start,
so a fresh keyspace becomes ``{rootPath}/{meta.prefix}`` and stays there.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aetcd
from aetcd import rpc

log = logging.getLogger(__name__)

LEGACY_PREFIX = "woodpecker"
LEGACY_KEYS = ("instance", "version", "logidgen", "quorumidgen", "conditionwrite")
LEGACY_DIRS = ("logs", "quorums", "logstores", "readers", "cleaning")


@dataclass(frozen=True)
class PrefixChoice:
    prefix: str      # the prefix in effect
    configured: str  # {etcd.rootPath}/{woodpecker.meta.prefix}
    reason: str      # one sentence, for logs and `picchio config check`


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])  # our prefixes end in "/", never 0xff


def legacy_probes() -> list[rpc.RangeRequest]:
    """The ranges Woodpecker looks at, each limited to one key."""
    reqs = [rpc.RangeRequest(key=f"{LEGACY_PREFIX}/{k}".encode(), limit=1, keys_only=True) for k in LEGACY_KEYS]
    for d in LEGACY_DIRS:
        p = f"{LEGACY_PREFIX}/{d}/".encode()
        reqs.append(rpc.RangeRequest(key=p, range_end=_range_end(p), limit=1, keys_only=True))
    return reqs


async def find_legacy_key(client: aetcd.Client, timeout: float) -> str | None:
    """The first legacy key found (one transaction, like Woodpecker's), or None."""
    req = rpc.TxnRequest(compare=[], success=[rpc.RequestOp(request_range=r) for r in legacy_probes()])
    # aetcd's transaction() has no per-range limit; a legacy logs/ prefix can hold many keys
    resp = await asyncio.wait_for(client.kvstub.Txn(req, timeout=timeout, metadata=client.metadata), timeout)
    for r in resp.responses:
        if r.response_range.kvs:
            return r.response_range.kvs[0].key.decode(errors="replace")
    return None


async def effective_prefix(client: aetcd.Client, configured: str, timeout: float) -> PrefixChoice:
    """Apply the rule; never fails (a failed look-up keeps the configured prefix, as in Woodpecker)."""
    if configured == LEGACY_PREFIX:
        return PrefixChoice(configured, configured, "configured (it is the legacy prefix itself)")
    try:
        found = await find_legacy_key(client, timeout)
    except Exception as e:  # noqa: BLE001 - Woodpecker falls back to the configured prefix on any error
        log.warning("legacy etcd prefix check failed (%r); using the configured prefix %s", e, configured)
        return PrefixChoice(configured, configured, f"configured (the legacy check failed: {e!r})")
    if found is not None:
        log.info("using the legacy Woodpecker etcd prefix %s/ (found %s), not the configured %s/",
                 LEGACY_PREFIX, found, configured)
        return PrefixChoice(LEGACY_PREFIX, configured,
                            f"legacy: etcd holds {found}, so Woodpecker's bare {LEGACY_PREFIX}/ wins over etcd.rootPath")
    return PrefixChoice(configured, configured, f"configured: no legacy {LEGACY_PREFIX}/ keys in etcd")
