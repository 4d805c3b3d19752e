"""The bucket and etcd adapters against real servers: MinIO (always: it checks
credentials and refuses lifecycle actions it does not support, which moto
does not; a Go-module build, hence ``cluster`` on those tests) and etcd from
the harness."""
from __future__ import annotations

import uuid

import boto3
import pytest
from picchio_harness.procs import free_port
from picchio_operator.adapters import bucket as B
from picchio_operator.adapters.etcd import EtcdError, EtcdKeyspace
from picchio_operator.model.etcdkeys import initial_keys
from picchio_operator.model.lifecycle import desired_rules
from picchio_operator.model.spec import parse_cluster


def spec_for(s3, *, bucket: str, root: str, create: bool = True, name: str = "wal", ns: str = "team-a", **storage):
    return parse_cluster({
        "metadata": {"name": name, "namespace": ns, "uid": "u", "generation": 1},
        "spec": {"etcd": {"endpoints": ["127.0.0.1:1"]},
                 "storage": {"endpoint": s3.endpoint, "bucket": bucket, "rootPath": root, "createBucket": create,
                             **storage}}})


@pytest.fixture
def s3(minio):
    """This module's S3 is the real MinIO, never the moto fallback."""
    return minio


@pytest.fixture
def s3c(s3):
    return boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name="us-east-1")


def bucket_name() -> str:
    return f"op-{uuid.uuid4().hex[:12]}"


def client(s3, c):
    return B.s3_client(c, s3.access_key, s3.secret_key, timeout=5)


# -- bucket ------------------------------------------------------------------------
@pytest.mark.cluster
def test_missing_bucket_without_create_is_a_clear_error(s3) -> None:
    c = spec_for(s3, bucket=bucket_name(), root="wal", create=False)
    with pytest.raises(B.StorageError) as e:
        B.ensure_storage(client(s3, c), c)
    assert e.value.reason == "BucketMissing" and "createBucket" in str(e.value)


@pytest.mark.cluster
def test_ensure_storage_creates_probes_and_merges_lifecycle(s3, s3c) -> None:
    name = bucket_name()
    s3c.create_bucket(Bucket=name)
    foreign = {"ID": "someone-else", "Status": "Enabled", "Filter": {"Prefix": "milvus/"}, "Expiration": {"Days": 30}}
    s3c.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [foreign]})
    c = spec_for(s3, bucket=name, root="wal")
    rep = B.ensure_storage(client(s3, c), c)
    assert not rep.created and rep.lifecycle_changed
    rules = {r["ID"]: r for r in s3c.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]}
    # MinIO refuses AbortIncompleteMultipartUpload: that rule is reported, not hidden, and not written
    assert rep.unsupported == ("AbortIncompleteMultipartUpload",)
    assert set(rules) == {"someone-else", "picchio-team-a-wal-tombstones"} and rep.rules == 1
    assert rules["someone-else"]["Expiration"]["Days"] == 30
    assert rules["picchio-team-a-wal-tombstones"]["Filter"]["Prefix"] == "wal/tombstones/"
    # the probe leaves nothing behind
    assert s3c.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
    # a second pass changes nothing
    assert B.ensure_storage(client(s3, c), c).lifecycle_changed is False
    # a second cluster on the same bucket adds its rules and keeps the first's
    c2 = spec_for(s3, bucket=name, root="wal-2", name="wal-2")
    B.ensure_storage(client(s3, c2), c2)
    ids = {r["ID"] for r in s3c.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]}
    assert ids == {"someone-else", "picchio-team-a-wal-tombstones", "picchio-team-a-wal-2-tombstones"}


@pytest.mark.cluster
def test_create_bucket_when_asked(s3, s3c) -> None:
    name = bucket_name()
    c = spec_for(s3, bucket=name, root="wal")
    assert B.ensure_storage(client(s3, c), c).created
    s3c.head_bucket(Bucket=name)


@pytest.mark.cluster
def test_purge_deletes_only_our_prefix_and_our_rules(s3, s3c) -> None:
    name = bucket_name()
    c = spec_for(s3, bucket=name, root="wal")
    B.ensure_storage(client(s3, c), c)
    foreign = {"ID": "someone-else", "Status": "Enabled", "Filter": {"Prefix": "milvus/"}, "Expiration": {"Days": 30}}
    ours = [r for r in desired_rules(c) if "AbortIncompleteMultipartUpload" not in r]
    s3c.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [foreign, *ours]})
    for i in range(25):
        s3c.put_object(Bucket=name, Key=f"wal/1/{i}/0.blk", Body=b"x")
    s3c.put_object(Bucket=name, Key="wal-2/keep.blk", Body=b"y")
    s3c.put_object(Bucket=name, Key="milvus/keep", Body=b"z")
    deleted, done = B.purge(client(s3, c), c, max_objects=10)
    assert (deleted, done) == (10, False)  # bounded per call
    deleted, done = B.purge(client(s3, c), c)
    assert (deleted, done) == (15, True)
    keys = sorted(o["Key"] for o in s3c.list_objects_v2(Bucket=name).get("Contents", []))
    assert keys == ["milvus/keep", "wal-2/keep.blk"]
    assert [r["ID"] for r in s3c.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]] == ["someone-else"]


@pytest.mark.cluster
def test_wrong_credentials_and_unreachable_endpoint(s3) -> None:
    c = spec_for(s3, bucket=bucket_name(), root="wal")
    with pytest.raises(B.StorageError):
        B.ensure_storage(B.s3_client(c, "nobody", "wrong-secret", timeout=5, attempts=1), c)
    dead = spec_for(type("S", (), {"endpoint": f"http://127.0.0.1:{free_port()}"})(), bucket="b", root="wal")
    with pytest.raises(B.StorageError) as e:
        B.ensure_storage(B.s3_client(dead, "a", "b", timeout=1, attempts=1), dead)
    assert e.value.reason == "StorageUnreachable"


# -- etcd --------------------------------------------------------------------------
async def test_keyspace_initialised_once_and_never_overwritten(etcd) -> None:
    prefix = f"op-{uuid.uuid4().hex[:8]}/woodpecker"
    async with EtcdKeyspace([etcd.endpoint], timeout=5) as ks:
        first = await ks.ensure_keyspace(prefix)
        assert first.initialised
        inst = (await ks.client.get(f"{prefix}/instance".encode())).value
        await ks.client.put(f"{prefix}/logidgen".encode(), b"41")  # clients created logs meanwhile
        again = await ks.ensure_keyspace(prefix)
        assert not again.initialised
        assert (await ks.client.get(f"{prefix}/instance".encode())).value == inst
        assert (await ks.client.get(f"{prefix}/logidgen".encode())).value == b"41"


async def test_partial_keyspace_is_reported_not_repaired(etcd) -> None:
    prefix = f"op-{uuid.uuid4().hex[:8]}/woodpecker"
    async with EtcdKeyspace([etcd.endpoint], timeout=5) as ks:
        await ks.client.put(f"{prefix}/logidgen".encode(), b"7")
        with pytest.raises(EtcdError) as e:
            await ks.ensure_keyspace(prefix)
        assert e.value.reason == "PartialKeyspace"
        assert await ks.client.get(f"{prefix}/instance".encode()) is None


async def test_purge_is_scoped_to_the_prefix(etcd) -> None:
    root = f"op-{uuid.uuid4().hex[:8]}"
    async with EtcdKeyspace([etcd.endpoint], timeout=5) as ks:
        await ks.ensure_keyspace(f"{root}/woodpecker")
        await ks.client.put(f"{root}/woodpecker2/keep".encode(), b"1")
        assert await ks.purge(f"{root}/woodpecker") == len(initial_keys("x", "y"))
        assert await ks.client.get(f"{root}/woodpecker/instance".encode()) is None
        assert (await ks.client.get(f"{root}/woodpecker2/keep".encode())).value == b"1"


async def test_unreachable_etcd_fails_within_the_deadline() -> None:
    import time

    t0 = time.monotonic()
    with pytest.raises(EtcdError) as e:
        async with EtcdKeyspace([f"127.0.0.1:{free_port()}"], timeout=1):
            pass
    assert time.monotonic() - t0 < 10
    assert "spec.etcd.endpoints" in str(e.value)


async def test_logstore_client_accepts_the_operators_keyspace(etcd) -> None:
    """The WAL library connects to a keyspace the operator initialised and
    hands out log ids from it."""
    import logstore

    root = f"op-{uuid.uuid4().hex[:8]}"
    async with EtcdKeyspace([etcd.endpoint], timeout=5) as ks:
        await ks.ensure_keyspace(f"{root}/woodpecker")
    cfg = logstore.Config.from_dict({"etcd.endpoints": [etcd.endpoint], "etcd.rootPath": root,
                                     "woodpecker.storage.type": "local", "woodpecker.storage.rootPath": "/tmp/unused"})
    async with logstore.Client(cfg) as c:
        h = await c.create_log("first")
        assert h.log_id == 1
