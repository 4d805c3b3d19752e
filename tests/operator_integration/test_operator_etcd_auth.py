"""etcd with authentication on (a dedicated etcd 3.6, root user, auth enabled
through the same Auth API the operator uses): the operator creates a role
that may touch only the cluster's prefix and a user holding it, hands the
user to the pods through a Secret it owns, and re-running changes nothing.
The user is then tried for real: it reads and writes under the prefix (a
``logstore.Client`` configured through the pods' ``PICCHIO_ETCD_*`` variables
creates a log and appends) and is denied everywhere else."""
from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import aetcd
import pytest
from aetcd import rpc
from aetcd.rpc import auth_pb2
from opfakes import FakeKube, RecordingEvents
from picchio_harness.etcd import etcd36_binary, start_etcd
from picchio_operator.adapters.etcd import EtcdError, EtcdKeyspace
from picchio_operator.adapters.logs import LogClients
from picchio_operator.handlers import cluster as H
from picchio_operator.model import constants as k
from picchio_operator.model.cluster import statefulset
from picchio_operator.model.conditions import get_condition
from picchio_operator.model.config import client_config, render_config
from picchio_operator.model.etcdkeys import client_permission
from picchio_operator.model.spec import parse_cluster
from picchio_operator.runtime import Runtime

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


async def test_wrong_admin_password_is_auth_failed(auth_etcd) -> None:
    with pytest.raises(EtcdError) as e:
        async with EtcdKeyspace([auth_etcd.endpoint], username="root", password="wrong"):
            pass
    assert e.value.reason == "EtcdAuthFailed"


# -- the handler --------------------------------------------------------------------
@pytest.fixture
async def rt():
    r = Runtime(kube=FakeKube(), logs=LogClients(), events=RecordingEvents())  # type: ignore[arg-type]
    r.tunables.etcd_timeout = 5
    r.tunables.s3_timeout = 5
    yield r
    await r.logs.close()


def add_cluster(rt, s3, etcd_ep: str, name: str = "wal") -> dict:
    uid = uuid.uuid4().hex[:8]
    rt.kube.secret(NS, "s3", {"accessKeyID": s3.access_key, "secretAccessKey": s3.secret_key})
    rt.kube.secret(NS, "etcd-admin", {"username": "root", "password": ROOT_PW})
    return rt.kube.put(k.CLUSTER_PLURAL, {
        "apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"mode": "service", "replicas": 3,
                 "etcd": {"endpoints": [etcd_ep], "rootPath": f"op-{uid}", "credentialsSecret": "etcd-admin"},
                 "storage": {"endpoint": s3.endpoint, "bucket": f"op-{uid}", "rootPath": f"r-{uid}",
                             "credentialsSecret": "s3", "createBucket": True},
                 "deletionPolicy": "Delete"}})


def pod_env(rt, name: str, secret: dict) -> dict[str, str]:
    """The PICCHIO_* variables a LogStore pod would get, resolved the way the
    kubelet does it (secretKeyRef → the Secret's data)."""
    sts = rt.kube.obj("StatefulSet", NS, f"{name}-server")
    out = {}
    for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] == secret["metadata"]["name"]:
            out[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return out


async def test_cluster_with_etcd_auth_gets_a_scoped_user(rt, s3, auth_etcd) -> None:
    body = add_cluster(rt, s3, auth_etcd.endpoint)
    assert await H.reconcile(rt, body) == []
    st = rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal")["status"]
    etcd_ready = get_condition(st["conditions"], "EtcdReady")
    principal = f"picchio-{NS}-wal"
    assert etcd_ready["status"] == "True", etcd_ready
    assert principal in etcd_ready["message"] and "wal-etcd-client" in etcd_ready["message"]
    assert st["etcdClientSecret"] == "wal-etcd-client"
    assert "EtcdUserReady" in rt.events.reasons()

    secret = rt.kube.obj("Secret", NS, "wal-etcd-client")
    (ref,) = secret["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("WoodpeckerCluster", body["metadata"]["uid"], True)
    env = pod_env(rt, "wal", secret)
    assert env["PICCHIO_ETCD_USERNAME"] == principal and len(env["PICCHIO_ETCD_PASSWORD"]) >= 24
    assert ROOT_PW not in str(rt.kube.obj("StatefulSet", NS, "wal-server"))  # the admin never reaches pods

    # the pods' user works for the WAL under the prefix (Config.with_env, as `logstore serve` does) ...
    c = parse_cluster(rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"))
    cfg = render_config(c)
    values = client_config(cfg, {"minio.accessKeyID": s3.access_key, "minio.secretAccessKey": s3.secret_key})
    conf = logstore.Config.from_dict(values).with_env(env)
    assert conf["etcd.username"] == principal
    async with logstore.Client(conf) as client:
        h = await client.create_log("scoped")
        async with await h.open_writer() as w:
            await w.append(b"hello")
    # ... and nowhere else
    ep, pw = auth_etcd.endpoint, env["PICCHIO_ETCD_PASSWORD"]
    assert await can(ep, principal, pw, f"{cfg.meta_prefix}/probe".encode()) == (True, True)
    assert await can(ep, principal, pw, b"milvus/probe") == (False, False)
    assert await can(ep, principal, pw, f"{cfg.meta_prefix}-other/probe".encode()) == (False, False)

    # a second pass changes nothing: same password, no events, no status write
    events, writes, state = len(rt.events.events), rt.kube.status_writes, await auth_state(ep)
    assert await H.reconcile(rt, rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal")) == []
    assert rt.kube.obj("Secret", NS, "wal-etcd-client")["data"] == secret["data"]
    assert len(rt.events.events) == events and rt.kube.status_writes == writes
    assert await auth_state(ep) == state

    # the Secret is lost (deleted by hand): a new password is generated and set on the user
    del rt.kube.objects[("Secret", NS, "wal-etcd-client")]
    assert await H.reconcile(rt, rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal")) == []
    new = rt.kube.obj("Secret", NS, "wal-etcd-client")
    new_pw = base64.b64decode(new["data"]["password"]).decode()
    assert new_pw != pw and "reset the password" in rt.events.events[-1][2]
    assert await can(ep, principal, new_pw, f"{cfg.meta_prefix}/probe".encode()) == (True, True)

    # deletionPolicy Delete removes the user and the role with the keys; others stay
    await H._delete_handler(body=rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal"), memo=SimpleNamespace(rt=rt), retry=0,
                            logger=logging.getLogger("test"))
    after = await auth_state(ep)
    assert principal not in after["users"] and principal not in after["roles"]
    assert after["users"]["milvus"] == ["milvus"] and "root" in after["users"]


async def test_cluster_with_credentials_but_no_auth_is_etcd_ready_false(rt, s3, etcd) -> None:
    body = add_cluster(rt, s3, etcd.endpoint)
    failures = await H.reconcile(rt, body)
    assert failures
    c = get_condition(rt.kube.obj(k.CLUSTER_PLURAL, NS, "wal")["status"]["conditions"], "EtcdReady")
    assert (c["status"], c["reason"]) == ("False", "EtcdAuthDisabled")
    assert rt.kube.obj("Secret", NS, "wal-etcd-client") is None  # nothing handed out


def test_pods_never_get_the_admin_secret() -> None:
    c = parse_cluster({"metadata": {"name": "wal", "namespace": NS, "uid": "u", "generation": 1},
                       "spec": {"mode": "service",
                                "etcd": {"endpoints": ["etcd:2379"], "credentialsSecret": "etcd-admin"},
                                "storage": {"endpoint": "http://minio:9000", "bucket": "b"}}})
    env = {e["name"]: e for e in statefulset(c, render_config(c))["spec"]["template"]["spec"]["containers"][0]["env"]}
    for var, key in (("PICCHIO_ETCD_USERNAME", "username"), ("PICCHIO_ETCD_PASSWORD", "password")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "wal-etcd-client", "key": key}
