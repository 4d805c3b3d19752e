"""WoodpeckerCluster handlers on the real control plane (etcd 3.6 +
kube-apiserver + kube-controller-manager + scheduler + kwok nodes), real etcd
and MinIO: resourceVersion, server-side apply, finalizers, deletionTimestamp
and ownerReference garbage collection are the API server's and the
controllers', never set by the test.

The operator runs in-process with its resync timer out of reach
(``quiet_operator``), so every state below was reached through a watch event,
a kopf retry or a deletion handler.  Where a test needs "one more pass" it
calls the handler itself with the real Kubernetes adapter, so that "a second
pass writes nothing" is checked against the API server's own no-op detection
(an unchanged resourceVersion)."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from opcluster import (EventLog, TcpProxy, Watch, bucket_keys, condition, cr_path, dump, etcd_keys, events,
                       kopf_progress, log_names, merge_patch, s3client, secret_body, set_finalizers, settled, wait_condition,
                       wait_for, wpc_body, wplog_body, write_entries, writer_config)

pytestmark = pytest.mark.cluster

WPC = "woodpeckerclusters"
WPLOG = "woodpeckerlogs"
IN_USE = "picchio.dev/in-use"
FINALIZER = "picchio.dev/finalizer"
HOLD = "picchio.test/hold"  # a finalizer of the test's own: keeps an object in its deleting state


@pytest.fixture
def bucket(minio: Any) -> str:
    name = f"op-{uuid.uuid4().hex[:10]}"
    s3client(minio).create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(minio: Any):
    p = TcpProxy(minio.host, minio.port)
    yield p
    p.close()


def add_secret(api, ns: str, minio: Any, name: str = "s3") -> None:
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, name, {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))


def secret_of(api, ns: str, name: str = "s3") -> dict | None:
    return api.get(f"/api/v1/namespaces/{ns}/secrets/{name}")


def finalizers(obj: dict | None) -> list[str]:
    return list(((obj or {}).get("metadata") or {}).get("finalizers") or [])


def create(api, ns: str, body: dict) -> None:
    plural = WPC if body["kind"] == "WoodpeckerCluster" else WPLOG
    api.call("POST", cr_path(plural, ns), body)


def meta_prefix(body: dict) -> str:
    return f"{body['spec']['etcd']['rootPath']}/woodpecker/"


# -- reconcile -----------------------------------------------------------------------
def test_embedded_cluster_reconciles_to_ready_and_a_second_pass_writes_nothing(
        k8s_cluster, api, ns, quiet_operator, etcd, minio, bucket) -> None:
    add_secret(api, ns, minio)
    body = wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket)
    create(api, ns, body)
    o = wait_condition(api, WPC, ns, "wal", "Ready", "True")
    st = o["status"]
    assert condition(o, "EtcdReady")["reason"] == "KeyspaceReady"
    assert condition(o, "StorageReady")["reason"] == "StorageVerified"
    assert st["metaPrefix"] == f"{ns}-wal/woodpecker" and st["clientConfigMap"] == "wal-client"
    assert etcd_keys(etcd.endpoint, meta_prefix(body)).get(f"{ns}-wal/woodpecker/instance")  # keyspace initialised
    uid = o["metadata"]["uid"]
    children = {n: f"/api/v1/namespaces/{ns}/configmaps/{n}" for n in ("wal-config", "wal-client")}
    for name, path in children.items():
        cm = api.get(path)
        (ref,) = cm["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("WoodpeckerCluster", uid, True), name
        # written by server-side apply under the operator's field manager
        assert any(m["manager"] == "picchio-operator" and m["operation"] == "Apply"
                   for m in cm["metadata"]["managedFields"]), dump(cm["metadata"]["managedFields"])
    assert api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server") is None  # embedded: no LogStores

    # a second full pass (the handler itself, real adapter): no write anywhere, no event
    o = settled(api, ns, "wal")
    versions = {"wpc": o["metadata"]["resourceVersion"],
                **{n: api.get(p)["metadata"]["resourceVersion"] for n, p in children.items()},
                "secret": secret_of(api, ns)["metadata"]["resourceVersion"]}
    from picchio_operator.adapters.kube import Kube
    from picchio_operator.handlers import cluster as H
    from picchio_operator.runtime import Runtime

    recorder = EventLog()

    async def second_pass() -> list[str]:
        rt = Runtime(kube=Kube(k8s_cluster.api), events=recorder)  # type: ignore[arg-type]
        try:
            return await H.reconcile(rt, o)
        finally:
            await rt.logs.close()

    assert asyncio.run(second_pass()) == []
    after = {"wpc": api.get(cr_path(WPC, ns, "wal"))["metadata"]["resourceVersion"],
             **{n: api.get(p)["metadata"]["resourceVersion"] for n, p in children.items()},
             "secret": secret_of(api, ns)["metadata"]["resourceVersion"]}
    assert after == versions
    assert recorder.events == []


def test_service_cluster_waits_for_logstores_and_the_statefulset_event_makes_it_ready(
        api, ns, quiet_operator, etcd, minio, bucket) -> None:
    add_secret(api, ns, minio)
    rv = api.call("GET", cr_path(WPC, ns))["metadata"]["resourceVersion"]
    watch = Watch(api, cr_path(WPC, ns), resource_version=rv)
    try:
        create(api, ns, wpc_body(ns, "svc", etcd.endpoint, minio.endpoint, bucket, mode="service", replicas=3))
        # the resync timer is 600 s away: only the StatefulSet watch can turn Ready
        o = wait_condition(api, WPC, ns, "svc", "Ready", "True", timeout=120)

        def readiness() -> list[tuple[str, str]] | None:
            seen: list[tuple[str, str]] = []
            for _type, obj in watch.types_and_objects():
                c = condition(obj, "Ready")
                if c and (not seen or seen[-1] != (c["status"], c["reason"])):
                    seen.append((c["status"], c["reason"]))
            return seen if seen and seen[-1][0] == "True" else None
        seen = wait_for("the watch to deliver Ready=True", readiness, timeout=30)
    finally:
        watch.stop()
    # every status the API server stored, in order: first written while no LogStore was Ready
    assert seen[0] == ("False", "WaitingForLogStores") and seen[-1] == ("True", "Ready"), seen
    sts = api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/svc-server")
    assert sts["status"]["readyReplicas"] == 3  # the real StatefulSet controller's count of kwok-Ready pods
    pods = api.call("GET", f"/api/v1/namespaces/{ns}/pods", query=[("labelSelector", "app.kubernetes.io/instance=svc")])
    assert len(pods["items"]) == 3
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"] for p in pods["items"])
    assert o["status"]["readyReplicas"] == 3
    assert condition(o, "Degraded")["status"] == "False"


def test_unreachable_storage_is_storage_ready_false_and_retried(api, ns, quiet_operator, etcd, minio, bucket,
                                                                proxy) -> None:
    add_secret(api, ns, minio)
    proxy.set_mode("refuse")
    create(api, ns, wpc_body(ns, "wal", etcd.endpoint, proxy.endpoint, bucket))
    o = wait_condition(api, WPC, ns, "wal", "StorageReady", "False", reason="StorageUnreachable", timeout=120)
    assert condition(o, "EtcdReady")["status"] == "True"
    assert condition(o, "Ready")["status"] == "False"
    # kopf retries the handler with backoff (TemporaryError), it is not given up
    rec = wait_for("the create handler retried twice", lambda: (kopf_progress(
        api.get(cr_path(WPC, ns, "wal"))).get("create") or {}).get("retries", 0) >= 2 and kopf_progress(
        api.get(cr_path(WPC, ns, "wal")))["create"], timeout=120)
    assert rec.get("delayed") and not rec.get("success"), rec
    assert proxy.accepted["refuse"] >= 2
    # storage comes back: the next retry makes the cluster Ready, with no help from the test
    proxy.set_mode("forward")
    wait_condition(api, WPC, ns, "wal", "Ready", "True", timeout=120)
    settled(api, ns, "wal")


def test_missing_secret_names_the_field_and_its_arrival_is_picked_up(api, ns, quiet_operator, etcd, minio,
                                                                       bucket) -> None:
    create(api, ns, wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket))  # no Secret yet
    o = wait_condition(api, WPC, ns, "wal", "StorageReady", "False", reason="SecretNotFound")
    assert "spec.storage.credentialsSecret" in condition(o, "StorageReady")["message"]
    assert condition(o, "Ready")["status"] == "False"
    add_secret(api, ns, minio)
    o = wait_condition(api, WPC, ns, "wal", "Ready", "True", timeout=120)
    assert finalizers(secret_of(api, ns)) == [IN_USE]
    assert o["status"]["protectedSecrets"] == ["s3"]


# -- Secrets in use ------------------------------------------------------------------------
def test_credentials_shared_by_clusters_stay_until_the_last_one_is_gone(api, ns, quiet_operator, etcd, minio,
                                                                       bucket) -> None:
    add_secret(api, ns, minio)
    bodies = {n: wpc_body(ns, n, etcd.endpoint, minio.endpoint, bucket) for n in ("a", "b", "c")}
    for b in bodies.values():
        create(api, ns, b)
    for n, b in bodies.items():
        o = wait_condition(api, WPC, ns, n, "Ready", "True")
        assert o["status"]["protectedSecrets"] == ["s3"]
        write_entries(writer_config(b, etcd.endpoint, minio), "data", 3)
        assert bucket_keys(minio, bucket, f"{n}/") and etcd_keys(etcd.endpoint, meta_prefix(b))
    assert finalizers(secret_of(api, ns)) == [IN_USE]  # one finalizer for all three clusters

    # a goes alone: its data is purged, the Secret stays protected (b and c use it)
    api.call("DELETE", cr_path(WPC, ns, "a"))
    wait_for("cluster a gone", lambda: api.get(cr_path(WPC, ns, "a")) is None, timeout=90)
    assert bucket_keys(minio, bucket, "a/") == [] and etcd_keys(etcd.endpoint, meta_prefix(bodies["a"])) == {}
    assert finalizers(secret_of(api, ns)) == [IN_USE]

    # the Secret is deleted while b and c still use it: it must stay (deletionTimestamp set, still
    # readable) so that their purges can use it.  Deleting it first makes that order certain; left
    # to the namespace controller, the purges may also finish before it reaches the Secret.
    rv = api.call("GET", f"/api/v1/namespaces/{ns}/secrets")["metadata"]["resourceVersion"]
    watch = Watch(api, f"/api/v1/namespaces/{ns}/secrets", resource_version=rv, field_selector="metadata.name=s3")
    try:
        api.call("DELETE", f"/api/v1/namespaces/{ns}/secrets/s3")
        held = secret_of(api, ns)
        assert held and held["metadata"].get("deletionTimestamp") and finalizers(held) == [IN_USE], held
        # the namespace goes: the namespace controller deletes b and c at once
        api.call("DELETE", f"/api/v1/namespaces/{ns}")
        wait_for("namespace gone (nothing wedged)", lambda: api.get(f"/api/v1/namespaces/{ns}") is None, timeout=180)
        wait_for("the Secret's DELETED event", lambda: any(t == "DELETED" for t, _ in watch.types_and_objects()),
                 timeout=30)
        seen = watch.types_and_objects()
    finally:
        watch.stop()
    assert [t for t, _ in seen].count("DELETED") == 1, seen
    for n in ("b", "c"):  # both purges ran with the credentials of a Secret already being deleted
        assert bucket_keys(minio, bucket, f"{n}/") == [], n
        assert etcd_keys(etcd.endpoint, meta_prefix(bodies[n])) == {}, n


def test_switching_credentials_releases_the_old_secret(api, ns, quiet_operator, etcd, minio, bucket) -> None:
    add_secret(api, ns, minio)
    add_secret(api, ns, minio, "s3-new")
    create(api, ns, wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket))
    wait_condition(api, WPC, ns, "wal", "Ready", "True")
    assert finalizers(secret_of(api, ns)) == [IN_USE] and finalizers(secret_of(api, ns, "s3-new")) == []
    merge_patch(api, cr_path(WPC, ns, "wal"), {"spec": {"storage": {"credentialsSecret": "s3-new"}}})
    wait_for("the new Secret protected, the old one released", lambda: finalizers(
        secret_of(api, ns, "s3-new")) == [IN_USE] and finalizers(secret_of(api, ns)) == [], timeout=60)
    o = wait_for("status.protectedSecrets updated", lambda: (lambda x: x if (x.get("status") or {}).get(
        "protectedSecrets") == ["s3-new"] else None)(api.get(cr_path(WPC, ns, "wal"))), timeout=30)
    assert condition(o, "Ready")["status"] == "True"
    # released for real: the API server deletes the old Secret at once
    api.call("DELETE", f"/api/v1/namespaces/{ns}/secrets/s3")
    wait_for("old Secret deleted", lambda: secret_of(api, ns) is None, timeout=30)


# -- deletion ------------------------------------------------------------------------------
def test_delete_with_unreachable_storage_holds_until_retain_which_keeps_the_data(
        api, ns, quiet_operator, etcd, minio, bucket, proxy) -> None:
    add_secret(api, ns, minio)
    body = wpc_body(ns, "wal", etcd.endpoint, proxy.endpoint, bucket)
    create(api, ns, body)
    wait_condition(api, WPC, ns, "wal", "Ready", "True")
    cfg = writer_config(body, etcd.endpoint, minio)
    write_entries(cfg, "kept", 5)
    keys, meta = bucket_keys(minio, bucket, "wal/"), etcd_keys(etcd.endpoint, meta_prefix(body))
    assert keys and meta

    proxy.set_mode("refuse")  # storage goes away
    api.call("DELETE", cr_path(WPC, ns, "wal"))
    o = wait_condition(api, WPC, ns, "wal", "StorageReady", "False", reason="DeleteFailed", timeout=120)
    assert "deletionPolicy: Retain" in condition(o, "StorageReady")["message"]
    assert o["metadata"].get("deletionTimestamp") and FINALIZER in finalizers(o)  # held, not released
    wait_for("a DeleteFailed warning event", lambda: ("Warning", "DeleteFailed") in {
        (t, r) for t, r, _ in events(api, ns, "wal")}, timeout=60)
    assert finalizers(secret_of(api, ns)) == [IN_USE]

    merge_patch(api, cr_path(WPC, ns, "wal"), {"spec": {"deletionPolicy": "Retain"}})
    wait_for("cluster released after switching to Retain", lambda: api.get(cr_path(WPC, ns, "wal")) is None,
             timeout=120)
    assert finalizers(secret_of(api, ns)) == []
    for cm in ("wal-config", "wal-client"):  # ownerReference GC by the real garbage collector
        wait_for(f"{cm} garbage-collected", lambda cm=cm: api.get(f"/api/v1/namespaces/{ns}/configmaps/{cm}") is None,
                 timeout=90)
    # Retain kept the data: every object and etcd key, and the log still reads back
    proxy.set_mode("forward")
    assert bucket_keys(minio, bucket, "wal/") == keys
    assert etcd_keys(etcd.endpoint, meta_prefix(body)) == meta
    from opcluster import read_entries

    assert read_entries(cfg, "kept") == [b"e-%03d" % i for i in range(5)]


def test_cluster_waits_while_one_of_its_logs_is_being_deleted(api, ns, quiet_operator, etcd, minio, bucket) -> None:
    add_secret(api, ns, minio)
    body = wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, bucket)
    create(api, ns, body)
    wait_condition(api, WPC, ns, "wal", "Ready", "True")
    create(api, ns, wplog_body(ns, "doomed", "wal", deletionPolicy="Delete"))
    wait_condition(api, WPLOG, ns, "doomed", "Ready", "True")
    cfg = writer_config(body, etcd.endpoint, minio)
    write_entries(cfg, "doomed", 3)
    write_entries(cfg, "leftover", 3)  # a log with no WoodpeckerLog: the cluster's purge removes it
    log_path = cr_path(WPLOG, ns, "doomed")
    set_finalizers(api, log_path, lambda f: f + [HOLD])

    # the log's deletion runs (its data goes) but the object stays, held by our finalizer
    api.call("DELETE", log_path)
    wait_for("the log's own finalizer released", lambda: finalizers(api.get(log_path)) == [HOLD], timeout=60)
    assert api.get(log_path)["metadata"].get("deletionTimestamp")
    assert log_names(cfg) == ["leftover"]
    wait_for("LogDeleted event", lambda: "LogDeleted" in {r for _, r, _ in events(api, ns, "doomed")}, timeout=30)

    # the cluster's deletion waits for it: the purge handler is retried with the log named
    api.call("DELETE", cr_path(WPC, ns, "wal"))
    rec = wait_for("the purge handler waiting for the log", lambda: (lambda p: p if "doomed" in str(
        p.get("message")) else None)(kopf_progress(api.get(cr_path(WPC, ns, "wal"))).get("purge") or {}), timeout=60)
    assert "waiting for WoodpeckerLogs doomed" in rec["message"] and rec.get("retries", 0) >= 1, rec
    assert api.get(cr_path(WPC, ns, "wal")) is not None
    assert bucket_keys(minio, bucket, "wal/") and etcd_keys(etcd.endpoint, meta_prefix(body))  # nothing purged yet

    set_finalizers(api, log_path, lambda f: [x for x in f if x != HOLD])
    wait_for("log gone", lambda: api.get(log_path) is None, timeout=30)
    wait_for("cluster gone", lambda: api.get(cr_path(WPC, ns, "wal")) is None, timeout=90)
    assert bucket_keys(minio, bucket, "wal/") == []
    assert etcd_keys(etcd.endpoint, meta_prefix(body)) == {}
