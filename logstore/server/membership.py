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
