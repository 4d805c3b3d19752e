"""LogStore membership in etcd: each server keeps ``P/logstores/{nodeId}``
alive under a lease (JSON: endpoint, zone, load); clients choose ensembles
from the live keys.  etcd is the source of truth — no home-made gossip."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ..meta import MetaStore

log = logging.getLogger(__name__)


class Registration:
    def __init__(self, meta: MetaStore, node_id: str, info: dict[str, Any], ttl: float) -> None:
        self.meta, self.node_id, self.info, self.ttl = meta, node_id, info, ttl
        self.key = meta.keys._k("logstores", node_id)
        self._lease: Any = None
        self._task: asyncio.Task | None = None
        self.registered = False

    async def start(self) -> None:
        await self._register()
        self._task = asyncio.create_task(self._keepalive(), name="picchio-membership")

    async def _register(self) -> None:
        client = self.meta.client
        self._lease = await asyncio.wait_for(client.lease(max(1, int(self.ttl))), self.ttl)
        self.info["registeredAt"] = int(time.time() * 1000)
        await asyncio.wait_for(client.put(self.key, json.dumps(self.info).encode(), lease=self._lease), self.ttl)
        self.registered = True

    async def update(self, **fields: Any) -> None:
        """Publish changed fields under the same lease (a re-registration
        after a lost lease carries them too: ``info`` is kept).  ``info``
        changes only once etcd has it, so a failed put is tried again."""
        info = {**self.info, **fields}
        await asyncio.wait_for(self.meta.client.put(self.key, json.dumps(info).encode(), lease=self._lease),
                               self.ttl)
        self.info.update(fields)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await asyncio.wait_for(self._lease.refresh(), self.ttl / 3)
                left = await asyncio.wait_for(self._lease.remaining_ttl(), self.ttl / 3)
                if left is not None and left <= 0:
                    raise RuntimeError("lease expired")
            except Exception as e:  # noqa: BLE001 - any failure: register again with a new lease
                self.registered = False
                log.warning("membership lease refresh failed (%r); registering again", e)
                try:
                    await self._register()
                except Exception as e2:  # noqa: BLE001
                    log.warning("registration failed: %r", e2)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        try:
            if self._lease is not None:
                await asyncio.wait_for(self._lease.revoke(), 2)
        except Exception:  # noqa: BLE001 - the lease expires by itself anyway
            pass


async def live_logstores(meta: MetaStore) -> list[dict[str, Any]]:
    """Every registered LogStore: dicts with nodeId, endpoint, zone, load."""
    prefix = meta.keys._k("logstores", "")
    r = await meta.raw("get_prefix", prefix)
    out = []
    for kv in r:
        try:
            info = json.loads(kv.value)
        except ValueError:
            continue
        info.setdefault("nodeId", kv.key[len(prefix):].decode())
        out.append(info)
    return sorted(out, key=lambda i: i["nodeId"])


async def follow_decommission(meta: MetaStore, reg: Registration, svc: Any, metrics: Any,
                              interval: float | None = None) -> None:
    """Keep ``svc.decommissioning`` equal to this LogStore's mark in etcd
    (decommission.py), polling every ``interval`` s; each read is bounded by
    ``etcd.requestTimeout``.  The service refuses appends *before* the
    registration says so (the operator's acknowledgement), never after.  An
    unreadable mark keeps the last known state."""
    from ..decommission import POLL_SECONDS, is_marked
    endpoint = reg.info["endpoint"]
    while True:
        try:
            on = await is_marked(meta, endpoint)
        except Exception as e:  # noqa: BLE001 - etcd down: keep the state we know, try again
            log.warning("reading the decommission mark of %s failed: %r", endpoint, e)
            on = svc.decommissioning
        if on != svc.decommissioning:
            svc.decommissioning = on
            log.info("decommission mark %s: %s", "set" if on else "removed",
                     "refusing appends" if on else "accepting appends again")
        metrics.set("picchio_logstore_decommissioning", 1 if on else 0)
        if bool(reg.info.get("decommissioning")) != on and reg.registered:
            try:
                await reg.update(decommissioning=on)
            except Exception as e:  # noqa: BLE001 - retried at the next poll
                log.warning("publishing decommissioning=%s failed: %r", on, e)
        await asyncio.sleep(interval or POLL_SECONDS)
