"""WoodpeckerLog handlers: create or adopt the log, keep its status current,
apply retention and truncateTo, collect garbage, and delete it (or not) when
the object goes.

A pass (:func:`sync`) is the same on create/update/resume and on the timer;
the timer ticks every few seconds and GC runs when ``gc.intervalSeconds`` has
passed since ``status.lastGcTime`` — or at once after a truncation, so the
bytes a user asked to drop go promptly.  GC needs no writer: the operator's
client reads metadata from etcd and deletes objects itself.
"""
from __future__ import annotations

import logging
from typing import Any

import kopf

from ..adapters import AdapterError
from ..adapters.logs import LogOps, LogStoreError
from ..model import constants as k
from ..model.conditions import Cond, cond, status_changed
from ..model.config import InvalidConfig
from ..model.log import READY, GcResult, LogObservation, gc_due, log_status, retention_watermark
from ..model.spec import LogSpec, SpecError, parse_cluster, parse_log
from ..runtime import KopfLogger, Runtime, utcnow
from . import gauges
from .common import cluster_client, status_of

log = logging.getLogger(__name__)
KIND = "WoodpeckerLog"


class NotReady(AdapterError):
    reason = "ClusterNotReady"


async def _ops_for(rt: Runtime, s: LogSpec) -> tuple[LogOps, str]:
    wpc = await rt.kube.get_custom(k.CLUSTER_PLURAL, s.namespace, s.cluster_ref)
    if wpc is None:
        raise NotReady(f"WoodpeckerCluster {s.namespace}/{s.cluster_ref} not found", "ClusterNotFound")
    try:
        client, key = await cluster_client(rt, parse_cluster(wpc))
    except (InvalidConfig, SpecError) as e:
        raise NotReady(f"WoodpeckerCluster {s.cluster_ref} has an invalid spec: {e}", "ClusterInvalid") from None
    return LogOps(client, timeout=rt.tunables.log_call_timeout), key


async def sync(rt: Runtime, body: Any, *, force_gc: bool = False) -> str | None:
    """One pass over a log; returns the failure message, or None."""
    s = parse_log(body)
    async with rt.locks(s.uid):
        fresh = await rt.kube.get_custom(k.LOG_PLURAL, s.namespace, s.name)
        if fresh is None or fresh.get("metadata", {}).get("uid") != s.uid:
            return None
        if fresh["metadata"].get("deletionTimestamp"):
            return None  # being deleted: no truncation or GC races the deletion handler
        s = parse_log(fresh)
        old = status_of(fresh)
        now = utcnow()
        obs: LogObservation | None = None
        gc: GcResult | None = None
        gc_error: str | None = None
        note = ""
        key = ""
        try:
            ops, key = await _ops_for(rt, s)
            handle, created = await ops.ensure_log(s.log_name)
            if created:
                rt.events.info(fresh, reason="LogCreated", message=f"created log {s.log_name} in {s.cluster_ref}")
            obs = await ops.observe(handle)
            wm = retention_watermark(s, obs, now)
            note = wm.note
            truncated = False
            if wm.target is not None:
                await ops.truncate(handle, wm.target)
                truncated = True
                rt.metrics.inc("picchio_operator_truncations_total", rule=wm.reason)
                rt.events.info(fresh, reason="Truncated",
                               message=f"truncated {s.log_name} to {wm.target} ({wm.reason}; was {obs.truncated_id or 'none'})")
                obs = await ops.observe(handle)
            if truncated or force_gc or gc_due(s, old, now):
                try:
                    gc = await ops.collect_garbage(handle, s.gc_dry_run)
                except LogStoreError as e:
                    gc_error = str(e)
                    rt.events.warn(fresh, reason="GcFailed", message=gc_error)
                else:
                    _record_gc(rt, fresh, s, gc)
                    if gc.segments and not gc.dry_run:
                        obs = await ops.observe(handle)
            ready = cond(READY, True, "Ready", f"log {s.log_name} (id {obs.log_id}) in {s.cluster_ref}")
            failure = gc_error
        except AdapterError as e:
            ready = cond(READY, False, e.reason, str(e))
            failure = str(e)
            if key and isinstance(e, LogStoreError):
                await rt.logs.invalidate(key)  # reconnect on the next pass
        except ValueError as e:  # spec.truncateTo that bypassed the schema
            ready = cond(READY, False, "InvalidSpec", str(e))
            failure = str(e)
        status = log_status(s, old=old, obs=obs, ready=ready, gc=gc, gc_error=gc_error, now=now, note=note)
        if obs is not None:
            gauges.log(rt.metrics, s, obs, now)
        if status_changed(old, status):
            await rt.kube.patch_status(k.LOG_PLURAL, s.namespace, s.name, status)
        return failure


def _record_gc(rt: Runtime, body: Any, s: LogSpec, gc: GcResult) -> None:
    rt.metrics.inc("picchio_operator_gc_runs_total", mode="dry_run" if gc.dry_run else "delete")
    if gc.dry_run:
        if gc.segments:
            rt.events.info(body, reason="GcDryRun", message=f"would delete {gc.segments} segments, "
                           f"{gc.objects} objects, {gc.bytes} bytes of {s.log_name}")
        return
    rt.metrics.inc("picchio_operator_gc_bytes_total", gc.bytes)
    rt.metrics.inc("picchio_operator_gc_objects_total", gc.objects)
    rt.metrics.inc("picchio_operator_gc_segments_total", gc.segments)
    if gc.segments:
        rt.events.info(body, reason="GarbageCollected", message=f"deleted {gc.segments} segments, "
                       f"{gc.objects} objects, {gc.bytes} bytes of {s.log_name}")


async def _sync_handler(body: Any, memo: Any, retry: int, **_: Any) -> None:
    rt: Runtime = memo.rt
    with rt.metrics.reconcile(KIND):
        failure = await sync(rt, body)
    if failure:
        rt.metrics.inc("picchio_operator_errors_total", kind=KIND, reason="SyncFailed")
        raise kopf.TemporaryError(failure, delay=rt.backoff(retry))


async def _tick(body: Any, memo: Any, logger: KopfLogger, **_: Any) -> None:
    rt: Runtime = memo.rt
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    with rt.metrics.reconcile(KIND):
        failure = await sync(rt, body)
    if failure:
        logger.info("log pass: %s", failure)


async def _delete_handler(body: Any, memo: Any, retry: int, logger: KopfLogger, **_: Any) -> None:
    """deletionPolicy Delete removes the log from the cluster first.  If the
    cluster object is gone there is nowhere to delete from: release with a
    warning rather than wedge (the cluster's own deletionPolicy decided the
    fate of its data)."""
    rt: Runtime = memo.rt
    s = parse_log(body)
    gauges.forget_log(rt.metrics, s.namespace, s.name)  # no pass runs on it any more
    if s.deletion_policy != "Delete":
        rt.locks.forget(s.uid)
        return
    try:
        ops, _key = await _ops_for(rt, s)
        existed = await ops.delete_log(s.log_name)
    except NotReady as e:
        if e.reason == "ClusterNotFound":
            rt.events.warn(body, reason="DataNotDeleted", message=f"{e}; the log's data was not deleted")
            rt.locks.forget(s.uid)
            return
        raise kopf.TemporaryError(f"{e}; set spec.deletionPolicy: Retain to release", delay=rt.backoff(retry))
    except AdapterError as e:
        msg = f"deleting log {s.log_name}: {e}; will retry — set spec.deletionPolicy: Retain to release"
        status = status_of(body)
        new = log_status(s, old=status, obs=None, ready=Cond(READY, "False", "DeleteFailed", msg), gc=None,
                         gc_error=None, now=utcnow())
        await rt.kube.patch_status(k.LOG_PLURAL, s.namespace, s.name, {"conditions": new["conditions"]})
        raise kopf.TemporaryError(msg, delay=rt.backoff(retry))
    rt.events.info(body, reason="LogDeleted", message=f"log {s.log_name} {'deleted' if existed else 'was already gone'}")
    rt.locks.forget(s.uid)


def register(registry: kopf.OperatorRegistry, tick_seconds: float) -> None:
    res = (k.GROUP, k.VERSION, k.LOG_PLURAL)
    kopf.on.create(*res, id="create", registry=registry)(_sync_handler)
    kopf.on.update(*res, id="update", registry=registry)(_sync_handler)
    kopf.on.resume(*res, id="resume", registry=registry)(_sync_handler)
    kopf.on.delete(*res, id="delete", registry=registry)(_delete_handler)
    kopf.timer(*res, id="tick", interval=tick_seconds, initial_delay=tick_seconds, registry=registry)(_tick)
