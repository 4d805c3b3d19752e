"""WoodpeckerCluster handlers: reconcile on change/resume and on a resync
timer, refresh readiness when the StatefulSet moves, purge on deletion.

Each handler is a few lines around :func:`reconcile`; the rules live in
``model``, the I/O in ``adapters``.  Failures become conditions and a kopf
TemporaryError with capped exponential backoff — the operator never crashes
on a bad spec or an unreachable dependency.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import Any

import kopf

from ..adapters import AdapterError
from ..adapters import bucket as bucket_adapter
from ..adapters.etcd import EtcdError, EtcdKeyspace
from ..adapters.kube import KubeError, NotFound
from ..model import constants as k
from ..model.cluster import desired_children, etcd_client_secret
from ..model.netpol import unwanted
from ..model.cluster_status import ETCD_READY, STORAGE_READY, StatefulSetObservation, cluster_status
from ..model.conditions import Cond, cond, set_condition, status_changed
from ..model.config import InvalidConfig, RenderedConfig, render_client_config, render_config
from ..model.etcdkeys import client_permission
from ..model.spec import ClusterSpec, SpecError, parse_cluster
from ..runtime import KopfLogger, Runtime, utcnow
from .common import (etcd_credentials, etcd_tls, protect_secrets, release_secret, s3_credentials, status_of,
                     storage_ca)
from . import gauges, orphans, scaledown
from . import pki as pki_handler

log = logging.getLogger(__name__)
KIND = "WoodpeckerCluster"


async def check_etcd(rt: Runtime, c: ClusterSpec, cfg: RenderedConfig, body: Any) -> Cond:
    """EtcdReady.  Messages stay the same from pass to pass (a status write
    per resync would be noise); one-off facts become events."""
    scoped: str | None = None
    try:
        user, pw = await etcd_credentials(rt.kube, c)
        async with EtcdKeyspace(c.etcd.endpoints, username=user, password=pw, tls=await etcd_tls(rt, c),
                                timeout=rt.tunables.etcd_timeout) as ks:
            rep = await ks.ensure_keyspace(cfg.meta_prefix)
            if c.etcd.credentials_secret:
                scoped = await ensure_client_user(rt, c, cfg, ks, body)
    except AdapterError as e:
        return cond(ETCD_READY, False, e.reason, str(e))
    if rep.initialised:
        rt.events.info(body, reason="KeyspaceInitialised", message=f"initialised etcd keyspace {cfg.meta_prefix}")
    msg = f"keyspace {cfg.meta_prefix} ready (etcd {rep.version})"
    if scoped:
        msg += f"; {scoped}"
    return cond(ETCD_READY, True, "KeyspaceReady", msg)


async def ensure_client_user(rt: Runtime, c: ClusterSpec, cfg: RenderedConfig, ks: EtcdKeyspace, body: Any) -> str:
    """etcd with authentication: the user and role that may touch only this
    cluster's prefix, and the operator-owned Secret that hands them to the
    LogStores and applications.  The Secret is written *before* the user, so a
    crash in between leaves a password that the next pass sets on the user
    (never a user whose password nobody knows).  Returns the sentence for
    EtcdReady's message."""
    name = k.etcd_principal_name(c.namespace, c.name)
    secret = k.etcd_client_secret_name(c.name)
    try:
        data = await rt.kube.read_secret(c.namespace, secret)
    except NotFound:
        data = {}
    password = (data.get("password") if data.get("username") == name else None) or generate_password()
    rt.kube.redactor.add(password)
    try:
        await rt.kube.apply(etcd_client_secret(c, name, password))
    except KubeError as e:
        raise EtcdError(f"writing Secret {c.namespace}/{secret}: {e}", "SecretWriteFailed") from None
    key, end = client_permission(cfg.meta_prefix)
    rep = await ks.ensure_client_user(user=name, role=name, password=password, key=key, range_end=end)
    if rep.changed:
        what = [w for w, done in (("created role", rep.role_created), ("granted the prefix", rep.permission_granted),
                                  ("created user", rep.user_created), ("granted the role", rep.role_granted),
                                  ("reset the password", rep.password_changed)) if done]
        rt.events.info(body, reason="EtcdUserReady",
                       message=f"etcd user/role {name}: {', '.join(what)} (read/write on {key.decode()} only)")
    return f"user {name} may read and write only {key.decode()} (credentials in Secret {secret})"


def generate_password() -> str:
    return secrets.token_urlsafe(24)


async def check_storage(rt: Runtime, c: ClusterSpec, body: Any) -> Cond:
    if c.storage.type != "minio":
        return cond(STORAGE_READY, True, "LocalStorage",
                    "storage type local: a file system shared by the writers; nothing to verify remotely")
    try:
        ak, sk = await s3_credentials(rt.kube, c)
        s3 = bucket_adapter.s3_client(c, ak, sk, timeout=rt.tunables.s3_timeout, ca_file=await storage_ca(rt, c))
        rep = await asyncio.to_thread(bucket_adapter.ensure_storage, s3, c)
    except (AdapterError, SpecError) as e:
        return cond(STORAGE_READY, False, getattr(e, "reason", "InvalidSpec"), str(e))
    if rep.created:
        rt.events.info(body, reason="BucketCreated", message=f"created bucket {c.storage.bucket}")
    parts = [f"bucket {c.storage.bucket}", "conditional writes verified",
             f"{rep.rules} lifecycle rules on {c.storage.root_prefix}"]
    if rep.unsupported:
        parts.append(f"the server refuses lifecycle action(s) {', '.join(rep.unsupported)} "
                     "(MinIO expires stale multipart uploads by itself)")
    return cond(STORAGE_READY, True, "StorageVerified", ", ".join(parts))


async def count_logs(rt: Runtime, c: ClusterSpec) -> int | None:
    try:
        logs = await rt.kube.list_custom(k.LOG_PLURAL, c.namespace)
    except KubeError as e:
        log.warning("counting WoodpeckerLogs of %s/%s: %s", c.namespace, c.name, e)
        return None
    return sum(1 for o in logs if (o.get("spec") or {}).get("clusterRef") == c.name)


async def reconcile(rt: Runtime, body: Any, *, checks: bool = True) -> list[str]:
    """One full pass; returns the failures (empty when all is well).  With
    ``checks=False`` only readiness is refreshed (StatefulSet events)."""
    c = parse_cluster(body)
    async with rt.locks(c.uid):
        fresh = await rt.kube.get_custom(k.CLUSTER_PLURAL, c.namespace, c.name)
        if fresh is None or fresh.get("metadata", {}).get("uid") != c.uid:
            return []  # deleted (or replaced) meanwhile
        if fresh["metadata"].get("deletionTimestamp"):
            return []  # the deletion handler owns it now; re-applying children would fight the GC
        c = parse_cluster(fresh)
        old = status_of(fresh)
        failures: list[str] = []
        gates: list[Cond] = []
        etcd_c = storage_c = None
        sts_obj = None
        cfg: RenderedConfig | None = None
        client_cfg: RenderedConfig | None = None
        scale: scaledown.ScaleStep | None = None
        try:
            cfg = render_config(c)
            client_cfg = render_client_config(c, cfg)
            gates.append(cond("ConfigValid", True, "ConfigValid"))
        except InvalidConfig as e:
            gates.append(cond("ConfigValid", False, "InvalidConfig", str(e)))
            failures.append(str(e))
        protected: list[str] | None = None
        if checks:
            protected = await protect_secrets(rt.kube, c, list(old.get("protectedSecrets") or []), log)
        tls_out: pki_handler.PkiOutcome | None = None
        if checks and c.tls_on:  # before the StatefulSet that mounts the Secret; whatever spec.config says
            tls_out = await pki_handler.ensure(rt, c, fresh)
            if tls_out.failed:
                failures.append(tls_out.condition.message)
        if cfg is not None and checks:
            etcd_c, storage_c = await asyncio.gather(check_etcd(rt, c, cfg, fresh), check_storage(rt, c, fresh))
            failures += [x.message for x in (etcd_c, storage_c) if not x.ok]
            if c.service_mode and client_cfg is not None:
                # a lower spec.replicas holds the StatefulSet until the leaving LogStores are drained
                scale = await scaledown.step(rt, c, client_cfg, old, fresh)
            applied = dataclasses.replace(c, replicas=scale.replicas) if scale else c
            try:
                for obj in desired_children(applied, cfg, client_cfg, operator_namespace=rt.operator_namespace):
                    applied = await rt.kube.apply(obj)
                    if obj["kind"] == "StatefulSet":
                        sts_obj = applied
                for api_version, kind, name in unwanted(c):  # spec.network.policies switched off
                    if await rt.kube.delete_owned(api_version, kind, c.namespace, name, c.uid):
                        rt.events.info(fresh, reason="NetworkPolicyDeleted",
                                       message=f"deleted NetworkPolicy {name} (spec.network.policies is false)")
                gates.append(cond("Applied", True, "Applied"))
            except KubeError as e:
                gates.append(cond("Applied", False, "ApplyFailed", str(e)))
                failures.append(str(e))
        if c.service_mode and sts_obj is None:
            sts_obj = await rt.kube.get("apps/v1", "StatefulSet", c.namespace, k.statefulset_name(c.name))
        logs = await count_logs(rt, c) if checks else None
        status = cluster_status(
            c, old_conditions=old.get("conditions"), gates=gates, etcd=etcd_c, storage=storage_c,
            sts=StatefulSetObservation.from_object(sts_obj), logs=logs,
            config_hash=cfg.hash if cfg else None, meta_prefix=cfg.meta_prefix if cfg else None, now=utcnow(),
            tls=tls_out.condition if tls_out else None)
        pki_handler.warn_if_insecure(rt, old, status, fresh)
        if checks and c.service_mode and not (tls_out and tls_out.failed):
            status["tls"] = tls_out.status if tls_out else None  # None (plaintext): merge-patch removes it
        if protected is not None:
            status["protectedSecrets"] = protected
        if scale is not None:
            status["conditions"] = set_condition(status["conditions"], scale.condition, generation=c.generation,
                                                 now=utcnow())
            status["scaleDown"] = scale.status
        gauges.cluster(rt.metrics, c, status)
        if status_changed(old, status):
            await rt.kube.patch_status(k.CLUSTER_PLURAL, c.namespace, c.name, status)
        return failures


async def _reconcile_handler(body: Any, memo: Any, retry: int, logger: KopfLogger, **_: Any) -> None:
    rt: Runtime = memo.rt
    with rt.metrics.reconcile(KIND):
        failures = await reconcile(rt, body)
    if failures:
        rt.metrics.inc("picchio_operator_errors_total", kind=KIND, reason="ReconcileFailed")
        # An invalid spec.config is the user's to fix: no retry storm, the
        # next spec change re-runs this handler.
        if all(f.startswith("spec.config") for f in failures):
            logger.warning("not reconciled: %s", "; ".join(failures))
            return
        raise kopf.TemporaryError("; ".join(failures), delay=rt.backoff(retry))


async def _timed_pass(rt: Runtime, body: Any, logger: KopfLogger, what: str) -> bool:
    """A full pass from a timer (none on an object being deleted); failures
    are logged, not raised — the timer comes back anyway.  True if it passed."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return False
    with rt.metrics.reconcile(KIND):
        failures = await reconcile(rt, body)
    if failures:
        logger.info("%s: %s", what, "; ".join(failures))
    return not failures


async def _resync_timer(body: Any, memo: Any, logger: KopfLogger, **_: Any) -> None:
    rt: Runtime = memo.rt
    if not await _timed_pass(rt, body, logger, "resync"):
        return
    fresh = await rt.kube.get_custom(k.CLUSTER_PLURAL, body["metadata"]["namespace"], body["metadata"]["name"])
    if fresh is not None and not fresh["metadata"].get("deletionTimestamp"):
        await orphans.scan_if_due(rt, fresh, parse_cluster(fresh), logger)


async def _scaledown_timer(body: Any, memo: Any, logger: KopfLogger, **_: Any) -> None:
    await _timed_pass(memo.rt, body, logger, "scale-down pass")


async def _statefulset_event(body: Any, memo: Any, type: str | None, **_: Any) -> None:
    """A LogStore StatefulSet changed: refresh the owner's readiness now
    rather than at the next resync."""
    rt: Runtime = memo.rt
    meta = body.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or () if o.get("kind") == k.CLUSTER_KIND
                  and o.get("apiVersion", "").startswith(k.GROUP + "/")), None)
    if owner is None or type == "DELETED":
        return
    wpc = await rt.kube.get_custom(k.CLUSTER_PLURAL, meta.get("namespace", ""), owner["name"])
    if wpc is None or wpc.get("metadata", {}).get("deletionTimestamp"):
        return
    await reconcile(rt, wpc, checks=False)


async def _delete_handler(body: Any, memo: Any, retry: int, logger: KopfLogger, **_: Any) -> None:
    """Behind the finalizer.  Waits for WoodpeckerLogs of this cluster that
    are being deleted (they need the cluster to delete their data), then, for
    deletionPolicy Delete, purges the bucket prefix and the etcd prefix.  If
    storage is unreachable the StorageReady/EtcdReady condition says so and
    the deletion retries — until it succeeds or the policy becomes Retain."""
    rt: Runtime = memo.rt
    c = parse_cluster(body)
    logs = await rt.kube.list_custom(k.LOG_PLURAL, c.namespace)
    pending = [o["metadata"]["name"] for o in logs
               if (o.get("spec") or {}).get("clusterRef") == c.name and o["metadata"].get("deletionTimestamp")]
    if pending:
        raise kopf.TemporaryError(f"waiting for WoodpeckerLogs {', '.join(sorted(pending))} to finish deletion",
                                  delay=5)
    if c.deletion_policy != "Delete":
        logger.info("deletionPolicy Retain: etcd keys and bucket objects are kept")
        await _release_all(rt, c, body)
        return
    failures: list[Cond] = []
    meta_prefix = _meta_prefix(c)
    if c.storage.type == "minio":
        try:
            ak, sk = await s3_credentials(rt.kube, c)
            s3 = bucket_adapter.s3_client(c, ak, sk, timeout=rt.tunables.s3_timeout,
                                          ca_file=await storage_ca(rt, c))
            deleted, done = await asyncio.to_thread(bucket_adapter.purge, s3, c,
                                                    max_objects=rt.tunables.purge_batch_objects)
            logger.info("purged %d objects under %s/%s", deleted, c.storage.bucket, c.storage.root_prefix)
            if not done:
                raise kopf.TemporaryError(f"purged {deleted} objects; more remain", delay=1)
        except (AdapterError, SpecError) as e:
            failures.append(cond(STORAGE_READY, False, "DeleteFailed",
                                 f"deletionPolicy Delete cannot purge the bucket: {e}; it will retry — set "
                                 "spec.deletionPolicy: Retain to release the object and keep the data"))
    if not failures:
        try:
            user, pw = await etcd_credentials(rt.kube, c)
            async with EtcdKeyspace(c.etcd.endpoints, username=user, password=pw, tls=await etcd_tls(rt, c),
                                    timeout=rt.tunables.etcd_timeout) as ks:
                n = await ks.purge(meta_prefix)
                if c.etcd.credentials_secret:
                    principal = k.etcd_principal_name(c.namespace, c.name)
                    gone = await ks.remove_client_user(user=principal, role=principal)
                    logger.info("etcd user/role %s removed: %s", principal, gone)
            logger.info("purged %d etcd keys under %s/", n, meta_prefix)
        except AdapterError as e:
            failures.append(cond(ETCD_READY, False, "DeleteFailed",
                                 f"deletionPolicy Delete cannot purge etcd: {e}; it will retry — set "
                                 "spec.deletionPolicy: Retain to release the object and keep the data"))
    if failures:
        old = status_of(body)
        conds = old.get("conditions") or []
        for f in failures:
            conds = set_condition(conds, f, generation=c.generation, now=utcnow())
        await rt.kube.patch_status(k.CLUSTER_PLURAL, c.namespace, c.name, {"conditions": conds})
        rt.events.warn(body, reason="DeleteFailed", message="; ".join(f.message for f in failures))
        raise kopf.TemporaryError("; ".join(f.message for f in failures), delay=rt.backoff(retry))
    rt.events.info(body, reason="Purged", message=f"etcd prefix {meta_prefix}/ and bucket prefix purged")
    await _release_all(rt, c, body)


async def _release_all(rt: Runtime, c: ClusterSpec, body: Any) -> None:
    """The last step of a deletion: flag it done, then release the Secrets
    (see common.release_secret for why the flag comes first)."""
    from .common import referenced_secrets

    await rt.kube.patch_status(k.CLUSTER_PLURAL, c.namespace, c.name, {"finalized": True})
    gauges.forget_cluster(rt.metrics, c.namespace, c.name)
    for name in sorted(referenced_secrets(c) | set(status_of(body).get("protectedSecrets") or [])):
        await release_secret(rt.kube, c, name)
    rt.locks.forget(c.uid)
    rt.operator_certs.pop(c.uid, None)


def _meta_prefix(c: ClusterSpec) -> str:
    """The etcd prefix to purge; if spec.config is invalid, the spec alone
    decides (woodpecker.meta.prefix at its default)."""
    try:
        return render_config(c).meta_prefix
    except InvalidConfig:
        return f"{c.etcd.root_path.strip('/')}/woodpecker"


def register(registry: kopf.OperatorRegistry, resync_seconds: float) -> None:
    res = (k.GROUP, k.VERSION, k.CLUSTER_PLURAL)
    kopf.on.create(*res, id="create", registry=registry)(_reconcile_handler)
    kopf.on.update(*res, id="update", registry=registry)(_reconcile_handler)
    kopf.on.resume(*res, id="resume", registry=registry)(_reconcile_handler)
    kopf.on.delete(*res, id="purge", registry=registry)(_delete_handler)
    kopf.timer(*res, id="resync", interval=resync_seconds, initial_delay=resync_seconds,
               registry=registry)(_resync_timer)
    # a scale-down in progress is looked at every few seconds, not once a resync
    kopf.timer(*res, id="scaledown", interval=scaledown.POLL_SECONDS, initial_delay=scaledown.POLL_SECONDS,
               when=lambda body, **_: scaledown.in_progress(body), registry=registry)(_scaledown_timer)
    kopf.on.event("apps", "v1", "statefulsets", id="logstores",
                  labels={k.LABEL_MANAGED_BY: k.MANAGED_BY, k.LABEL_COMPONENT: k.COMPONENT_LOGSTORE},
                  registry=registry)(_statefulset_event)
