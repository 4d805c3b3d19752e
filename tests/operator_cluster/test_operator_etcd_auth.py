"""etcd with authentication on (a dedicated etcd 3.6, root user, auth enabled
through the same Auth API the operator uses): the operator creates a role
that may touch only the cluster's prefix and a user holding it, hands the
user to the pods through a Secret it owns (ownerReference: the real garbage
collector removes it with the cluster), regenerates the password when that
Secret is lost, and re-running changes nothing.  The user is then tried for
real: it reads and writes under the prefix (a ``logstore.Client`` configured
from the ``PICCHIO_ETCD_*`` variables of a Pod the real StatefulSet
controller created, resolved against the real Secret) and is denied
everywhere else.  etcd 3.6 is a Go-module build, hence ``cluster``."""
from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import uuid
from pathlib import Path

import aetcd
import pytest
from aetcd import rpc
from aetcd.rpc import auth_pb2
from picchio_harness.etcd import etcd36_binary, start_etcd
from picchio_operator.adapters.etcd import EtcdError, EtcdKeyspace
from picchio_operator.model.config import client_config, render_config
from picchio_operator.model.etcdkeys import client_permission
from picchio_operator.model.spec import parse_cluster

from opcluster import (EventLog, cr_path, events, s3client, secret_body, settled, wait_condition, wait_for, wpc_body)

import logstore

NS = "team-a"
ROOT_PW = "root-" + uuid.uuid4().hex


def _split(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def auth_etcd():
    """etcd 3.6 with a root user and authentication enabled."""
    import asyncio

    workdir = Path(tempfile.mkdtemp(prefix="picchio-etcd-auth-"))
    server = start_etcd(workdir, name="etcd-auth", binary=etcd36_binary())

    async def enable() -> None:
        host, port = _split(server.endpoint)
        async with aetcd.Client(host=host, port=port, timeout=5) as c:
            auth = rpc.AuthStub(c.channel)
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=ROOT_PW), timeout=5)
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
            # a principal that is none of the operator's business: it must survive untouched
            await auth.RoleAdd(rpc.AuthRoleAddRequest(name="milvus"), timeout=5)
            await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
                name="milvus", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"milvus/",
                                                        range_end=b"milvus0")), timeout=5)
            await auth.UserAdd(rpc.AuthUserAddRequest(name="milvus", password="milvus-pw"), timeout=5)
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="milvus", role="milvus"), timeout=5)
            await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)

    try:
        asyncio.run(enable())
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def auth_state(endpoint: str) -> dict:
    """Every role's permissions and every user's roles, as root sees them."""
    async with EtcdKeyspace([endpoint], username="root", password=ROOT_PW) as ks:
        auth = rpc.AuthStub(ks.client.channel)
        md = ks.client.metadata
        roles = (await auth.RoleList(rpc.AuthRoleListRequest(), metadata=md, timeout=5)).roles
        users = (await auth.UserList(rpc.AuthUserListRequest(), metadata=md, timeout=5)).users
        out = {"roles": {}, "users": {}}
        for r in roles:
            got = await auth.RoleGet(rpc.AuthRoleGetRequest(role=r), metadata=md, timeout=5)
            out["roles"][r] = sorted((p.permType, bytes(p.key), bytes(p.range_end)) for p in got.perm)
        for u in users:
            got = await auth.UserGet(rpc.AuthUserGetRequest(name=u), metadata=md, timeout=5)
            out["users"][u] = sorted(got.roles)
        return out


async def can(endpoint: str, user: str, password: str, key: bytes) -> tuple[bool, bool]:
    """(may write, may read) ``key`` as ``user``."""
    host, port = _split(endpoint)
    async with aetcd.Client(host=host, port=port, username=user, password=password, timeout=5) as c:
        try:
            await c.put(key, b"v")
            wrote = True
        except aetcd.ClientError as e:
            assert "permission denied" in str(e), e
            wrote = False
        try:
            await c.get(key)
            read = True
        except aetcd.ClientError as e:
            assert "permission denied" in str(e), e
            read = False
    return wrote, read


# -- the adapter ------------------------------------------------------------------
@pytest.mark.cluster
async def test_scoped_user_reads_and_writes_only_its_prefix(auth_etcd) -> None:
    prefix = f"op-{uuid.uuid4().hex[:8]}/woodpecker"
    key, end = client_permission(prefix)
    assert (key, end) == (f"{prefix}/".encode(), f"{prefix}0".encode())
    before = await auth_state(auth_etcd.endpoint)
    async with EtcdKeyspace([auth_etcd.endpoint], username="root", password=ROOT_PW) as ks:
        rep = await ks.ensure_client_user(user="u1", role="u1", password="pw-1", key=key, range_end=end)
        assert rep.changed and rep.role_created and rep.user_created and rep.permission_granted
        again = await ks.ensure_client_user(user="u1", role="u1", password="pw-1", key=key, range_end=end)
        assert not again.changed  # idempotent: nothing written the second time
    after = await auth_state(auth_etcd.endpoint)
    assert after["roles"]["u1"] == [(auth_pb2.Permission.READWRITE, key, end)]  # one grant, not two
    assert after["users"]["u1"] == ["u1"]
    # nobody else's principals changed
    assert {r: p for r, p in after["roles"].items() if r != "u1"} == before["roles"]
    assert {u: r for u, r in after["users"].items() if u != "u1"} == before["users"]

    ep = auth_etcd.endpoint
    assert await can(ep, "u1", "pw-1", f"{prefix}/logs/x".encode()) == (True, True)
    assert await can(ep, "u1", "pw-1", f"{prefix}2/x".encode()) == (False, False)  # a sibling prefix
    assert await can(ep, "u1", "pw-1", b"milvus/x") == (False, False)
    assert await can(ep, "u1", "pw-1", prefix.encode()) == (False, False)  # the bare prefix is not below P/


@pytest.mark.cluster
async def test_password_is_reset_only_when_it_no_longer_authenticates(auth_etcd) -> None:
    key, end = client_permission(f"op-{uuid.uuid4().hex[:8]}/woodpecker")
    async with EtcdKeyspace([auth_etcd.endpoint], username="root", password=ROOT_PW) as ks:
        await ks.ensure_client_user(user="u2", role="u2", password="old", key=key, range_end=end)
        rep = await ks.ensure_client_user(user="u2", role="u2", password="new", key=key, range_end=end)
        assert rep.password_changed and not (rep.user_created or rep.role_created or rep.role_granted)
        assert await ks.remove_client_user(user="u2", role="u2") == (True, True)
        assert await ks.remove_client_user(user="u2", role="u2") == (False, False)  # gone: no error
    host, port = _split(auth_etcd.endpoint)
    with pytest.raises(aetcd.ClientError, match="authentication failed"):
        async with aetcd.Client(host=host, port=port, username="u2", password="new", timeout=5):
            pass


@pytest.mark.cluster
async def test_a_non_admin_user_is_told_what_it_lacks(auth_etcd) -> None:
    async with EtcdKeyspace([auth_etcd.endpoint], username="milvus", password="milvus-pw") as ks:
        with pytest.raises(EtcdError) as e:
            await ks.ensure_client_user(user="x", role="x", password="x", key=b"a/", range_end=b"a0")
    assert e.value.reason == "EtcdPermissionDenied" and "root role" in str(e.value)


async def test_credentials_for_an_etcd_without_auth_are_a_clear_error(etcd) -> None:
    with pytest.raises(EtcdError) as e:
        async with EtcdKeyspace([etcd.endpoint], username="root", password="x"):
            pass
    assert e.value.reason == "EtcdAuthDisabled" and "credentialsSecret" in str(e.value)


@pytest.mark.cluster
async def test_wrong_admin_password_is_auth_failed(auth_etcd) -> None:
    with pytest.raises(EtcdError) as e:
        async with EtcdKeyspace([auth_etcd.endpoint], username="root", password="wrong"):
            pass
    assert e.value.reason == "EtcdAuthFailed"




# -- the handler, on the real control plane ----------------------------------------------
@pytest.fixture(scope="module")
def auth_operator(k8s_cluster, crds):
    """The operator in-process with a 5 s resync: a lost Secret is noticed by
    the periodic pass (nothing watches Secrets)."""
    from picchio_operator.main import InProcessOperator

    with InProcessOperator(k8s_cluster.api, ["--standalone", "--metrics-port", "0", "--liveness", "",
                                             "--resync-seconds", "5", "--tick-seconds", "2"]) as op:
        yield op
    assert op.error is None, op.error


def add_cluster(api, ns: str, minio, etcd_ep: str, name: str = "wal") -> dict:
    bucket = f"op-{uuid.uuid4().hex[:8]}"
    s3client(minio).create_bucket(Bucket=bucket)
    for sname, data in (("s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}),
                        ("etcd-admin", {"username": "root", "password": ROOT_PW})):
        api.call("POST", f"/api/v1/namespaces/{ns}/secrets", secret_body(ns, sname, data))
    body = wpc_body(ns, name, etcd_ep, minio.endpoint, bucket, mode="service", replicas=3)
    body["spec"]["etcd"]["credentialsSecret"] = "etcd-admin"
    api.call("POST", cr_path("woodpeckerclusters", ns), body)
    return body


def secret_data(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(v).decode() for key, v in (secret.get("data") or {}).items()}


def pod_env(pod: dict, secrets: dict[str, dict]) -> dict[str, str]:
    """The PICCHIO_* variables of a real Pod, resolved the way the kubelet
    does it (secretKeyRef → the Secret's data); a reference to a Secret not in
    ``secrets`` fails the test."""
    out = {}
    for e in pod["spec"]["containers"][0]["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] != "s3":
            assert ref["name"] in secrets, f"{e['name']} comes from Secret {ref['name']}"
            out[e["name"]] = secret_data(secrets[ref["name"]])[ref["key"]]
    return out


@pytest.mark.cluster
def test_cluster_with_etcd_auth_gets_a_scoped_user(k8s_cluster, api, ns, auth_operator, minio, auth_etcd) -> None:
    body = add_cluster(api, ns, minio, auth_etcd.endpoint)
    o = wait_condition(api, "woodpeckerclusters", ns, "wal", "EtcdReady", "True", timeout=120)
    etcd_ready = next(c for c in o["status"]["conditions"] if c["type"] == "EtcdReady")
    principal = f"picchio-{ns}-wal"
    assert principal in etcd_ready["message"] and "wal-etcd-client" in etcd_ready["message"]
    assert o["status"]["etcdClientSecret"] == "wal-etcd-client"
    wait_for("EtcdUserReady event", lambda: "EtcdUserReady" in {r for _, r, _ in events(api, ns, "wal")}, timeout=30)

    secret_path = f"/api/v1/namespaces/{ns}/secrets/wal-etcd-client"
    secret = api.get(secret_path)
    (ref,) = secret["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("WoodpeckerCluster", o["metadata"]["uid"], True)

    # the Pods the real StatefulSet controller made get the scoped user, never the admin
    def pods() -> list | None:
        items = api.call("GET", f"/api/v1/namespaces/{ns}/pods",
                         query=[("labelSelector", "app.kubernetes.io/instance=wal")])["items"]
        return items if len(items) == 3 else None
    pod = wait_for("3 LogStore pods", pods, timeout=90)[0]
    env = pod_env(pod, {"wal-etcd-client": secret})
    pw = env["PICCHIO_ETCD_AUTH_PASSWORD"]
    assert env["PICCHIO_ETCD_AUTH_USERNAME"] == principal and len(pw) >= 24
    sts = api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server")
    assert ROOT_PW not in str(sts) and "etcd-admin" not in str(sts)

    # the pods' user works for the WAL under the prefix (Config.with_env, as `logstore serve` does) ...
    o = wait_condition(api, "woodpeckerclusters", ns, "wal", "Ready", "True", timeout=120)
    cfg = render_config(parse_cluster(o))
    values = client_config(cfg, {"minio.accessKeyID": minio.access_key, "minio.secretAccessKey": minio.secret_key})
    conf = logstore.Config.from_dict(values).with_env(env)
    assert conf["etcd.auth.userName"] == principal and conf["etcd.auth.enabled"] is True

    async def write() -> None:
        async with logstore.Client(conf) as client:
            h = await client.create_log("scoped")
            async with await h.open_writer() as w:
                await w.append(b"hello")
    asyncio.run(write())
    # ... and nowhere else
    ep = auth_etcd.endpoint
    assert asyncio.run(can(ep, principal, pw, f"{cfg.meta_prefix}/probe".encode())) == (True, True)
    assert asyncio.run(can(ep, principal, pw, b"milvus/probe")) == (False, False)
    assert asyncio.run(can(ep, principal, pw, f"{cfg.meta_prefix}-other/probe".encode())) == (False, False)

    # a second full pass (the handler itself, real adapter): same password, no event, no write
    from picchio_operator.adapters.kube import Kube
    from picchio_operator.handlers import cluster as H
    from picchio_operator.runtime import Runtime

    state = asyncio.run(auth_state(ep))
    o = settled(api, ns, "wal")
    rv = (o["metadata"]["resourceVersion"], api.get(secret_path)["metadata"]["resourceVersion"])
    recorder = EventLog()

    async def second_pass() -> list[str]:
        rt = Runtime(kube=Kube(k8s_cluster.api), events=recorder)  # type: ignore[arg-type]
        try:
            return await H.reconcile(rt, o)
        finally:
            await rt.logs.close()
    assert asyncio.run(second_pass()) == []
    assert recorder.events == []
    assert api.get(secret_path)["metadata"]["resourceVersion"] == rv[1]
    assert api.get(cr_path("woodpeckerclusters", ns, "wal"))["metadata"]["resourceVersion"] == rv[0]
    assert asyncio.run(auth_state(ep)) == state

    # the Secret is lost (deleted by hand): the next pass writes a new password and sets it on the user
    old_uid = api.get(secret_path)["metadata"]["uid"]
    api.call("DELETE", secret_path)
    new = wait_for("the Secret recreated", lambda: (lambda s: s if s and s["metadata"]["uid"] != old_uid else None)(
        api.get(secret_path)), timeout=60)
    new_pw = secret_data(new)["password"]
    assert new_pw != pw and secret_data(new)["username"] == principal
    wait_for("an event saying the password was reset", lambda: any(
        r == "EtcdUserReady" and "reset the password" in m for _, r, m in events(api, ns, "wal")), timeout=30)
    assert asyncio.run(can(ep, principal, new_pw, f"{cfg.meta_prefix}/probe".encode())) == (True, True)
    with pytest.raises(aetcd.ClientError, match="authentication failed"):
        asyncio.run(can(ep, principal, pw, f"{cfg.meta_prefix}/probe".encode()))

    # deletionPolicy Delete removes the user and the role with the keys; others stay; the
    # Secret goes with its owner (the real garbage collector, through the ownerReference)
    api.call("DELETE", cr_path("woodpeckerclusters", ns, "wal"))
    wait_for("cluster gone", lambda: api.get(cr_path("woodpeckerclusters", ns, "wal")) is None, timeout=120)
    wait_for("the etcd-client Secret garbage-collected", lambda: api.get(secret_path) is None, timeout=90)
    after = asyncio.run(auth_state(ep))
    assert principal not in after["users"] and principal not in after["roles"]
    assert after["users"]["milvus"] == ["milvus"] and "root" in after["users"]
    assert body["spec"]["deletionPolicy"] == "Delete"


@pytest.mark.cluster
def test_cluster_with_credentials_but_no_auth_is_etcd_ready_false(api, ns, auth_operator, minio, etcd) -> None:
    add_cluster(api, ns, minio, etcd.endpoint)
    wait_condition(api, "woodpeckerclusters", ns, "wal", "EtcdReady", "False", reason="EtcdAuthDisabled", timeout=90)
    assert api.get(f"/api/v1/namespaces/{ns}/secrets/wal-etcd-client") is None  # nothing handed out
