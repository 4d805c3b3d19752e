"""Handler passes (``reconcile``, ``sync``, deletion) against real etcd and
S3, with an in-memory Kubernetes stand-in: a log written through logstore is
truncated (truncateTo, retention) and garbage-collected by the operator, and
everything above the watermark stays readable."""
from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

import boto3
import kopf
import pytest
from opfakes import FakeKube, RecordingEvents
from picchio_operator.adapters.logs import LogClients
from picchio_operator.handlers import cluster as H
from picchio_operator.handlers import log as L
from picchio_operator.model import constants as k
from picchio_operator.model.conditions import get_condition
from picchio_operator.model.config import client_config, render_config
from picchio_operator.model.spec import parse_cluster
from picchio_operator.runtime import Runtime

import logstore

NS = "team-a"
LOGGER = logging.getLogger("test")


@pytest.fixture
async def rt():
    r = Runtime(kube=FakeKube(), logs=LogClients(), events=RecordingEvents())  # type: ignore[arg-type]
    r.tunables.etcd_timeout = 3
    r.tunables.s3_timeout = 5
    yield r
    await r.logs.close()


def wpc(s3, etcd, *, name: str = "wal", mode: str = "embedded", config: dict | None = None, **storage) -> dict:
    uid = uuid.uuid4().hex[:8]
    return {
        "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"mode": mode, "etcd": {"endpoints": [etcd.endpoint], "rootPath": f"op-{uid}"},
                 "storage": {"endpoint": s3.endpoint, "bucket": f"op-{uid}", "rootPath": f"r-{uid}",
                             "credentialsSecret": "s3", "createBucket": True, **storage},
                 "config": config or {}, "deletionPolicy": "Delete"},
    }


def add_cluster(rt, s3, etcd, **kw) -> dict:
    rt.kube.secret(NS, "s3", {"accessKeyID": s3.access_key, "secretAccessKey": s3.secret_key})
    return rt.kube.put(k.CLUSTER_PLURAL, wpc(s3, etcd, **kw))


def conds(rt, plural, name):
    return rt.kube.obj(plural, NS, name)["status"]["conditions"]


async def test_embedded_cluster_reconciles_to_ready(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd)
    assert await H.reconcile(rt, body) == []
    st = rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal")["status"]
    assert get_condition(st["conditions"], "Ready")["status"] == "True"
    assert get_condition(st["conditions"], "EtcdReady")["reason"] == "KeyspaceReady"
    assert get_condition(st["conditions"], "StorageReady")["reason"] == "StorageVerified"
    assert st["metaPrefix"] == f"{body['spec']['etcd']['rootPath']}/woodpecker"
    assert [o["metadata"]["name"] for o in rt.kube.applied] == ["wal-config", "wal-client"]
    assert st["clientConfigMap"] == "wal-client"
    cm = rt.kube.obj("ConfigMap", NS, "wal-config")
    assert cm["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    # a second pass writes nothing new
    writes = rt.kube.status_writes
    await H.reconcile(rt, body)
    assert rt.kube.status_writes == writes


async def test_service_cluster_waits_for_logstores(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd, name="svc", mode="service")
    await H.reconcile(rt, body)
    kinds = [o["kind"] for o in rt.kube.applied]
    assert kinds == ["ConfigMap", "ConfigMap", "Service", "Service", "Service", "StatefulSet", "PodDisruptionBudget"]
    ready = get_condition(conds(rt, k.CLUSTER_PLURAL, "svc"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForLogStores")
    # the StatefulSet controller reports 3 ready pods: the event path flips Ready
    rt.kube.objects[("StatefulSet", NS, "svc-server")]["status"] = {
        "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": 1}
    await H.reconcile(rt, body, checks=False)
    c = conds(rt, k.CLUSTER_PLURAL, "svc")
    assert get_condition(c, "Ready")["status"] == "True"
    assert get_condition(c, "Degraded")["status"] == "False"
    assert rt.kube.obj(k.CLUSTER_PLURAL, NS, "svc")["status"]["readyReplicas"] == 3


async def test_invalid_config_is_a_condition_not_a_crash(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd, config={"woodpecker": {"client": {"bogus": 1}}})
    failures = await H.reconcile(rt, body)
    assert failures and failures[0].startswith("spec.config: woodpecker.client.bogus")
    ready = get_condition(conds(rt, k.CLUSTER_PLURAL, "wal"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidConfig")
    assert rt.kube.applied == []  # nothing rendered from a bad config
    # the kopf handler does not retry-storm on the user's mistake
    await H._reconcile_handler(body=body, memo=SimpleNamespace(rt=rt), retry=0, logger=LOGGER)


async def test_unreachable_storage_is_storage_ready_false_and_retried(rt, s3, etcd) -> None:
    from picchio_harness.procs import free_port

    body = add_cluster(rt, s3, etcd, endpoint=f"http://127.0.0.1:{free_port()}")
    rt.tunables.s3_timeout = 1
    with pytest.raises(kopf.TemporaryError) as e:
        await H._reconcile_handler(body=body, memo=SimpleNamespace(rt=rt), retry=2, logger=LOGGER)
    assert e.value.delay == 20
    s = get_condition(conds(rt, k.CLUSTER_PLURAL, "wal"), "StorageReady")
    assert (s["status"], s["reason"]) == ("False", "StorageUnreachable")
    assert get_condition(conds(rt, k.CLUSTER_PLURAL, "wal"), "EtcdReady")["status"] == "True"


async def test_missing_secret_names_the_field(rt, s3, etcd) -> None:
    body = rt.kube.put(k.CLUSTER_PLURAL, wpc(s3, etcd))  # no Secret
    await H.reconcile(rt, body)
    s = get_condition(conds(rt, k.CLUSTER_PLURAL, "wal"), "StorageReady")
    assert s["reason"] == "SecretNotFound" and "spec.storage.credentialsSecret" in s["message"]


# -- logs ----------------------------------------------------------------------------
async def writer_client(rt, body, **overrides):
    c = parse_cluster(rt.kube.obj(k.CLUSTER_PLURAL, NS, body["metadata"]["name"]))
    cfg = client_config(render_config(c), {"minio.accessKeyID": rt.kube.objects[("Secret", NS, "s3")]["stringData"]["accessKeyID"],
                                           "minio.secretAccessKey": rt.kube.objects[("Secret", NS, "s3")]["stringData"]["secretAccessKey"]})
    cfg.update(overrides)
    return logstore.Client(logstore.Config.from_dict(cfg))


def add_log(rt, name="orders", **spec) -> dict:
    return rt.kube.put(k.LOG_PLURAL, {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog",
                                      "metadata": {"name": name, "namespace": NS},
                                      "spec": {"clusterRef": "wal", **spec}})


def set_spec(rt, name, **spec) -> dict:
    o = rt.kube.objects[(k.LOG_PLURAL, NS, name)]
    o["spec"].update(spec)
    o["metadata"]["generation"] += 1
    return rt.kube.obj(k.LOG_PLURAL, NS, name)


def bucket_keys(s3, body) -> list[str]:
    c = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                     aws_secret_access_key=s3.secret_key, region_name="us-east-1")
    pages = c.get_paginator("list_objects_v2").paginate(Bucket=body["spec"]["storage"]["bucket"],
                                                       Prefix=body["spec"]["storage"]["rootPath"] + "/")
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


async def test_log_created_truncated_and_collected(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd)
    assert await H.reconcile(rt, body) == []
    lg = add_log(rt, gc={"intervalSeconds": 3600})
    assert await L.sync(rt, lg) is None
    st = rt.kube.obj(k.LOG_PLURAL, NS, "orders")["status"]
    assert get_condition(st["conditions"], "Ready")["status"] == "True" and st["logId"] >= 1
    assert "LogCreated" in rt.events.reasons()

    # a writer fills 4 segments of 3 entries (one block each)
    async with await writer_client(rt, body, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1}) as c:
        h = await c.open_log("orders")
        async with await h.open_writer() as w:
            ids = []
            for i in range(12):
                ids.append(await w.append(b"entry-%02d" % i))
        segs_before = {i.segment_id for i in ids}
        assert len(segs_before) >= 3
        keys_before = bucket_keys(s3, body)

        await L.sync(rt, set_spec(rt, "orders", truncateTo=str(ids[5])))
        st = rt.kube.obj(k.LOG_PLURAL, NS, "orders")["status"]
        assert st["truncatedId"] == str(ids[5])
        assert st["reclaimedBytes"] > 0 and st["reclaimedObjects"] > 0
        assert get_condition(st["conditions"], "GarbageCollected")["reason"] == "Collected"
        assert {"Truncated", "GarbageCollected"} <= set(rt.events.reasons())
        keys_after = bucket_keys(s3, body)
        assert len(keys_after) < len(keys_before)
        gone_segments = {s for s in segs_before if all(i.segment_id != s or i <= ids[5] for i in ids)
                         and s < ids[5].segment_id}
        for s in gone_segments:
            assert not any(f"/{h.log_id}/{s}/" in key for key in keys_after), s

        # everything above the watermark is still readable
        r = await h.open_reader(logstore.MessageId(ids[6].segment_id, ids[6].entry_id))
        got = [(await r.read_next(timeout=5)).payload for _ in range(6)]
        assert got == [b"entry-%02d" % i for i in range(6, 12)]
        await r.close()

    # retention.bytes: keep at most one segment's worth
    await L.sync(rt, set_spec(rt, "orders", retention={"bytes": 1}))
    st2 = rt.kube.obj(k.LOG_PLURAL, NS, "orders")["status"]
    assert logstore.MessageId.parse(st2["truncatedId"]) > ids[5]
    assert st2["reclaimedBytes"] > st["reclaimedBytes"]
    assert st2["segmentsAwaitingGc"] == 0
    assert rt.metrics.value("picchio_operator_gc_bytes_total") == st2["reclaimedBytes"]


async def test_dry_run_reports_without_deleting(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd)
    await H.reconcile(rt, body)
    async with await writer_client(rt, body, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1}) as c:
        h = await c.create_log("dry")
        async with await h.open_writer() as w:
            ids = [await w.append(b"x%d" % i) for i in range(4)]
    lg = add_log(rt, "dry", truncateTo=str(ids[1]), gc={"dryRun": True})
    keys = bucket_keys(s3, body)
    await L.sync(rt, lg)
    st = rt.kube.obj(k.LOG_PLURAL, NS, "dry")["status"]
    assert st["truncatedId"] == str(ids[1]) and st.get("reclaimedBytes", 0) == 0
    assert get_condition(st["conditions"], "GarbageCollected")["reason"] == "DryRun"
    assert st["segmentsAwaitingGc"] >= 1
    assert bucket_keys(s3, body) == keys
    assert "LogCreated" not in rt.events.reasons()  # adopted, not created


async def test_log_without_cluster_says_so(rt) -> None:
    lg = add_log(rt, "lonely")
    failure = await L.sync(rt, lg)
    assert failure and "not found" in failure
    ready = get_condition(conds(rt, k.LOG_PLURAL, "lonely"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ClusterNotFound")


async def test_deletion_policies(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd)
    await H.reconcile(rt, body)
    lg = add_log(rt, "doomed", deletionPolicy="Delete")
    await L.sync(rt, lg)
    memo = SimpleNamespace(rt=rt)
    # the cluster waits while one of its logs is being deleted
    rt.kube.objects[(k.LOG_PLURAL, NS, "doomed")]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    with pytest.raises(kopf.TemporaryError, match="doomed"):
        await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"), memo=memo, retry=0, logger=LOGGER)
    await L._delete_handler(body=rt.kube.obj(k.LOG_PLURAL, NS, "doomed"), memo=memo, retry=0, logger=LOGGER)
    assert "LogDeleted" in rt.events.reasons()
    del rt.kube.objects[(k.LOG_PLURAL, NS, "doomed")]
    async with await writer_client(rt, body) as c:
        assert not await c.log_exists("doomed")
        async with await (await c.create_log("leftover")).open_writer() as w:
            await w.append(b"data")
    assert bucket_keys(s3, body)
    # cluster Delete: bucket prefix and etcd prefix purged
    await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"), memo=memo, retry=0, logger=LOGGER)
    assert bucket_keys(s3, body) == []
    from picchio_operator.adapters.etcd import EtcdKeyspace

    async with EtcdKeyspace([etcd.endpoint]) as ks:
        left = await ks.client.get_prefix(f"{body['spec']['etcd']['rootPath']}/woodpecker/".encode())
        assert len(list(left)) == 0


async def test_delete_with_unreachable_storage_holds_until_retain(rt, s3, etcd) -> None:
    from picchio_harness.procs import free_port

    body = add_cluster(rt, s3, etcd)
    await H.reconcile(rt, body)
    o = rt.kube.objects[(k.CLUSTER_PLURAL, NS, "wal")]
    o["spec"]["storage"]["endpoint"] = f"http://127.0.0.1:{free_port()}"  # storage goes away
    rt.tunables.s3_timeout = 1
    memo = SimpleNamespace(rt=rt)
    with pytest.raises(kopf.TemporaryError, match="Retain"):
        await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"), memo=memo, retry=0, logger=LOGGER)
    s = get_condition(conds(rt, k.CLUSTER_PLURAL, "wal"), "StorageReady")
    assert (s["status"], s["reason"]) == ("False", "DeleteFailed") and "deletionPolicy: Retain" in s["message"]
    assert "DeleteFailed" in rt.events.reasons()
    o["spec"]["deletionPolicy"] = "Retain"
    await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"), memo=memo, retry=1, logger=LOGGER)


async def test_credentials_are_protected_until_the_last_cluster_is_gone(rt, s3, etcd) -> None:
    a = add_cluster(rt, s3, etcd, name="a")
    b = add_cluster(rt, s3, etcd, name="b")
    await H.reconcile(rt, a)
    await H.reconcile(rt, b)
    secret = lambda: rt.kube.obj("Secret", NS, "s3")
    assert secret()["metadata"]["finalizers"] == ["picchio.dev/in-use"]
    assert rt.kube.obj(k.CLUSTER_PLURAL, NS, "a")["status"]["protectedSecrets"] == ["s3"]
    memo = SimpleNamespace(rt=rt)
    for name in ("a", "b"):  # both deleted at once (a namespace deletion)
        rt.kube.objects[(k.CLUSTER_PLURAL, NS, name)]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "a"), memo=memo, retry=0, logger=LOGGER)
    assert secret()["metadata"]["finalizers"] == ["picchio.dev/in-use"]  # b still needs it
    assert rt.kube.obj(k.CLUSTER_PLURAL, NS, "a")["status"]["finalized"] is True
    # b finishes while a's object still exists (its finalizer removal is racing): a's flag lets b release
    await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "b"), memo=memo, retry=0, logger=LOGGER)
    assert secret()["metadata"]["finalizers"] == []


async def test_switching_credentials_releases_the_old_secret(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd)
    await H.reconcile(rt, body)
    rt.kube.secret(NS, "s3-new", {"accessKeyID": s3.access_key, "secretAccessKey": s3.secret_key})
    rt.kube.objects[(k.CLUSTER_PLURAL, NS, "wal")]["spec"]["storage"]["credentialsSecret"] = "s3-new"
    await H.reconcile(rt, rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"))
    assert rt.kube.obj("Secret", NS, "s3")["metadata"]["finalizers"] == []
    assert rt.kube.obj("Secret", NS, "s3-new")["metadata"]["finalizers"] == ["picchio.dev/in-use"]
    assert rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal")["status"]["protectedSecrets"] == ["s3-new"]
