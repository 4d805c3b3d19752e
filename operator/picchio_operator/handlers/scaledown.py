"""One pass of the decommission-aware scale-down (rules: model/scaledown.py;
protocol: logstore/decommission.py), run by the cluster reconcile before it
applies the StatefulSet: mark the leaving LogStores, see what they still
hold, compact their completed segments, remove marks that are done or
cancelled — and say which replicas to apply.  Every etcd call is bounded by
the cluster's ``etcd.requestTimeout``; compaction by ``log_call_timeout``."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..model import constants as k
from ..model.conditions import Cond, get_condition
from ..model.config import RenderedConfig, client_config
from ..model.scaledown import (SCALING_DOWN, DrainObservation, LeavingStore, desired_replicas, endpoint_of,
                               leaving_pods, marks_to_remove, scale_down_status, scaling_down_condition)
from ..model.spec import ClusterSpec
from ..runtime import Runtime
from .common import client_secrets, tls_settings
from .pki import operator_client_tls

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0  # how often a scale-down in progress is looked at


@dataclass(frozen=True)
class ScaleStep:
    replicas: int  # to apply as the StatefulSet's replicas
    condition: Cond
    status: dict[str, Any] | None  # status.scaleDown (None: remove it)


def in_progress(body: Any) -> bool:
    """Cheap test on the object alone: is a scale-down (or its clean-up)
    going on, so the poll timer should run a pass?"""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if spec.get("mode") != "service":
        return False
    return bool(status.get("scaleDown")) or int(spec.get("replicas", 3)) < int(status.get("replicas") or 0)


async def step(rt: Runtime, c: ClusterSpec, client_cfg: RenderedConfig, old_status: dict[str, Any],
               body: Any) -> ScaleStep:
    sts = await rt.kube.get("apps/v1", "StatefulSet", c.namespace, k.statefulset_name(c.name))
    current = int((sts.get("spec") or {}).get("replicas", 0)) if sts else None
    present = int((sts.get("status") or {}).get("replicas") or 0) if sts else 0
    obs: DrainObservation | None = None
    removed: dict[str, str] = {}
    leaving = leaving_pods(c, current)
    try:
        client = await _client(rt, c, client_cfg)
        obs, removed = await _pass(rt, c, client, leaving, current, present)
    except Exception as e:  # noqa: BLE001 - nothing is assumed drained; the condition says why
        log.warning("scale-down pass of %s/%s: %r", c.namespace, c.name, e)
        if leaving:
            obs = DrainObservation(error=f"{type(e).__name__}: {e}")
    old_cond = get_condition(old_status.get("conditions"), SCALING_DOWN)
    cnd = scaling_down_condition(c, current, present, obs, removed, old_cond)
    if cnd.reason != "NotScalingDown" and (old_cond is None or old_cond.get("reason") != cnd.reason):
        (rt.events.warn if cnd.reason == "DecommissionCheckFailed" else rt.events.info)(
            body, reason=cnd.reason, message=cnd.message)
    return ScaleStep(desired_replicas(c, current, obs), cnd, scale_down_status(c, current, present, obs))


async def _client(rt: Runtime, c: ClusterSpec, client_cfg: RenderedConfig) -> Any:
    """A service-mode ``logstore.Client`` (compaction goes through the
    LogStores), pooled apart from the storage-mode one the log passes use.
    With spec.tls it presents the operator's ``admin:operator`` certificate."""
    key = f"{c.namespace}/{c.name}/{c.uid}/service"
    values = client_config(client_cfg, {**await client_secrets(rt.kube, c), **await tls_settings(rt, c),
                                        **await operator_client_tls(rt, c)})
    return await rt.logs.get(key, values)


async def _pass(rt: Runtime, c: ClusterSpec, client: Any, leaving: list[str], current: int | None,
                present: int) -> tuple[DrainObservation | None, dict[str, str]]:
    from logstore import decommission
    from logstore.server.membership import live_logstores

    meta = client.meta
    marks = {str(doc.get("pod") or ep): ep for ep, doc in (await decommission.marked(meta)).items()}
    regs = await live_logstores(meta)
    removed = marks_to_remove(c, current, present, marks, {r.get("endpoint") for r in regs})
    for ep in removed.values():
        await decommission.unmark(meta, ep)
    if not leaving:
        return None, removed
    eps: dict[str, str] = {}
    for pod in leaving:
        eps[pod] = marks.get(pod) or endpoint_of(c, pod, regs)
        if pod not in marks:
            await decommission.mark(meta, eps[pod], f"scale-down to {c.replicas}", pod=pod)
    acks = await decommission.acknowledged(meta, list(eps.values()))
    held = await decommission.held(meta, list(eps.values()))
    per = held.per_endpoint()
    obs = DrainObservation(stores=tuple(LeavingStore(p, e, acks[e], per.get(e, 0)) for p, e in eps.items()),
                           segments=len(held.segments), active=len(held.active), completed=len(held.completed))
    if held.completed:
        try:
            errors = await asyncio.wait_for(decommission.flush(client, held), rt.tunables.log_call_timeout)
        except TimeoutError:
            errors = [f"compaction did not finish within {rt.tunables.log_call_timeout:g}s"]
        for e in errors:
            log.warning("scale-down of %s/%s: compacting %s", c.namespace, c.name, e)
    return obs, removed
