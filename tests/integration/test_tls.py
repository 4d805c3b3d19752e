"""etcd over TLS and S3 over TLS with a private CA, against the real servers.

etcd 3.6 (the Go-module build) serves its client port with a certificate
from a CA the test makes (``--cert-file/--key-file``), demanding client
certificates from that CA (``--client-cert-auth --trusted-ca-file``) or,
in the second server, TLS plus user/password authentication.  MinIO serves
https from ``--certs-dir``.  What is checked is what a user would see: the
WAL works end to end (a log written and read back, LogStores registering
over TLS), and every misconfiguration — wrong CA, no client certificate,
plaintext against TLS, a TLS version etcd cannot do — is a typed error within
the deadline, naming the setting to fix.  Both servers are Go-module builds:
``cluster``.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import aetcd
import pytest
from picchio_harness.etcd import EtcdServerTLS, etcd36_binary, start_etcd
from tlsenv import (DEADLINE, ROOT_PW, auth_etcd, cert_etcd, etcd_config, minio_config, pki,  # noqa: F401 - fixtures
                    tls_dir, tls_minio)

import logstore
from logstore import Config
from logstore.errors import ConfigError, MetadataError, StorageError
from logstore.meta import MetaStore
from logstore.meta.etcdconn import EtcdTLS

pytestmark = pytest.mark.cluster


async def round_trip(cfg: Config, n: int = 5) -> list[bytes]:
    """Create a log, append ``n`` entries, read them back."""
    async with logstore.Client(cfg) as client:
        h = await client.create_log("tls")
        async with await h.open_writer() as w:
            await asyncio.gather(*(w.append(b"e%d" % i) for i in range(n)))
        r = await h.open_reader(logstore.EARLIEST)
        return [(await r.read_next(timeout=5)).payload for _ in range(n)]


async def connect(cfg: Config) -> None:
    """Open (and close) a Client: what fails here is the connection."""
    async with logstore.Client(cfg):
        pass


async def fails_within(exc: type[Exception], coro, deadline: float) -> Exception:
    t = time.monotonic()
    with pytest.raises(exc) as e:
        await coro
    took = time.monotonic() - t
    assert took < deadline, f"{exc.__name__} after {took:.1f}s (deadline {deadline}s): {e.value}"
    return e.value


# -- etcd ---------------------------------------------------------------------------------
async def test_client_certificate_auth_end_to_end(cert_etcd, pki, tmp_path) -> None:
    """Woodpecker's keys as Woodpecker's own file spells them (nested, tlsMinVersion a YAML float)."""
    f = tmp_path / "woodpecker.yaml"
    f.write_text(f"""
etcd:
  endpoints: [{cert_etcd.endpoint}]
  rootPath: tls-{uuid.uuid4().hex[:8]}
  ssl: {{enabled: true, tlsCert: {pki.client.cert}, tlsKey: {pki.client.key}, tlsCACert: {pki.ca.pair.cert},
        tlsMinVersion: 1.3}}
woodpecker: {{storage: {{type: local, rootPath: {tmp_path / 'wal'}}}}}
""")
    cfg = Config.from_yaml(f)
    assert cfg["etcd.ssl.tlsMinVersion"] == "1.3"
    assert await round_trip(cfg) == [b"e%d" % i for i in range(5)]


async def test_https_endpoint_means_tls_without_ssl_enabled(cert_etcd, pki, tmp_path) -> None:
    """etcd's Go client's rule: the https:// scheme turns TLS on by itself."""
    ssl = pki.etcd_ssl()
    ssl["etcd.ssl.enabled"] = False
    cfg = Config({**etcd_config(f"https://{cert_etcd.endpoint}", **ssl),
                  "woodpecker.storage.type": "local", "woodpecker.storage.rootPath": str(tmp_path / "wal")})
    assert await round_trip(cfg, 2) == [b"e0", b"e1"]


async def test_tls_plus_user_and_password(auth_etcd, pki, tmp_path) -> None:
    base = {**etcd_config(auth_etcd.endpoint, **pki.etcd_ssl(client_cert=False)),
            "etcd.auth.enabled": True, "etcd.auth.userName": "root",
            "woodpecker.storage.type": "local", "woodpecker.storage.rootPath": str(tmp_path / "wal")}
    assert await round_trip(Config({**base, "etcd.auth.password": ROOT_PW}), 3) == [b"e0", b"e1", b"e2"]
    wrong = "wrong-" + uuid.uuid4().hex
    e = await fails_within(MetadataError, connect(Config({**base, "etcd.auth.password": wrong})),
                           DEADLINE + 1)
    assert "authentication failed" in str(e) and wrong not in str(e) and ROOT_PW not in str(e)


async def test_wrong_ca_is_a_typed_error_within_the_deadline(cert_etcd, pki) -> None:
    cfg = Config(etcd_config(cert_etcd.endpoint, **pki.etcd_ssl(ca=pki.other.pair.cert)))
    e = await fails_within(MetadataError, connect(cfg), DEADLINE + 1)
    assert "not trusted" in str(e) and "etcd.ssl.tlsCACert" in str(e), e


async def test_missing_client_certificate_is_a_typed_error(cert_etcd, pki) -> None:
    cfg = Config(etcd_config(cert_etcd.endpoint, **pki.etcd_ssl(client_cert=False)))
    e = await fails_within(MetadataError, connect(cfg), DEADLINE + 1)
    assert "etcd.ssl.tlsCert" in str(e), e


async def test_plaintext_client_against_tls_etcd_is_a_typed_error(cert_etcd) -> None:
    cfg = Config(etcd_config(cert_etcd.endpoint))
    e = await fails_within(MetadataError, connect(cfg), DEADLINE + 1)
    assert "etcd.ssl.enabled" in str(e), e


async def test_tls_client_against_plaintext_etcd_is_a_typed_error(etcd, pki) -> None:
    cfg = Config(etcd_config(etcd.endpoint, **pki.etcd_ssl()))
    e = await fails_within(MetadataError, connect(cfg), DEADLINE + 1)
    assert "TLS" in str(e), e


async def test_min_tls_version_is_enforced(tls_dir, pki) -> None:
    """An etcd that stops at TLS 1.2 is refused with tlsMinVersion 1.3 and accepted with 1.2."""
    old = start_etcd(tls_dir, name="etcd-tls12", binary=etcd36_binary(),
                     tls=EtcdServerTLS(pki.etcd.cert, pki.etcd.key, client_ca=pki.ca.pair.cert, max_version="TLS1.2"))
    try:
        ssl = pki.etcd_ssl()
        e = await fails_within(MetadataError, connect(Config(etcd_config(
            old.endpoint, **ssl, **{"etcd.ssl.tlsMinVersion": "1.3"}))), DEADLINE + 1)
        assert "tlsMinVersion" in str(e), e
        meta = MetaStore(Config(etcd_config(old.endpoint, **ssl, **{"etcd.ssl.tlsMinVersion": "1.2"})))
        await meta.connect()
        await meta.close()
    finally:
        old.stop()


async def test_unreadable_tls_files_are_config_errors_naming_the_key(cert_etcd, pki, tmp_path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"etcd\.ssl\.tlsCACert: cannot read .*nope\.pem"):
        async with logstore.Client(Config(etcd_config(cert_etcd.endpoint, **{
                **pki.etcd_ssl(), "etcd.ssl.tlsCACert": str(missing)}))):
            pass
    with pytest.raises(ConfigError, match="go together"):
        async with logstore.Client(Config(etcd_config(cert_etcd.endpoint, **{
                **pki.etcd_ssl(), "etcd.ssl.tlsKey": ""}))):
            pass
    # a key that does not match the certificate: named by path, its contents never shown
    ssl = {**pki.etcd_ssl(), "etcd.ssl.tlsKey": str(pki.etcd.key)}
    with pytest.raises(ConfigError) as e:
        async with logstore.Client(Config(etcd_config(cert_etcd.endpoint, **ssl))):
            pass
    assert str(pki.etcd.key) in str(e.value) and pki.etcd.key.read_text().splitlines()[1] not in str(e.value)


async def test_logstores_register_over_tls_and_serve_a_writer(cert_etcd, tls_minio, pki, tmp_path) -> None:
    """Service mode end to end: three `picchio logstore serve` processes
    connect to the TLS etcd with their client certificate (registration, ready
    file), upload to the https MinIO, and a client writes and reads through
    them."""
    from logstore.dev.logstores import start_logstores

    base = {**etcd_config(cert_etcd.endpoint, **pki.etcd_ssl()),
            **minio_config(tls_minio, tmp_path, **{"minio.ssl.tlsCACert": str(pki.ca.pair.cert)})}
    base["etcd.requestTimeout"] = 10000
    stores = start_logstores(tmp_path / "ls", base)
    try:
        cfg = Config({**base, "woodpecker.storage.type": "service"})
        assert await round_trip(cfg, 4) == [b"e0", b"e1", b"e2", b"e3"]
    finally:
        for s in stores:
            s.stop()


# -- S3 ---------------------------------------------------------------------------------------
async def test_s3_private_ca_end_to_end(etcd, tls_minio, pki, tmp_path) -> None:
    cfg = Config({**etcd_config(etcd.endpoint), **minio_config(tls_minio, tmp_path, **{
        "minio.ssl.tlsCACert": str(pki.ca.pair.cert)})})
    assert await round_trip(cfg) == [b"e%d" % i for i in range(5)]


async def test_s3_wrong_ca_is_a_storage_error_within_the_deadline(etcd, tls_minio, pki, tmp_path) -> None:
    for ca in (str(pki.other.pair.cert), ""):  # a CA that did not sign it; the system CAs
        cfg = Config({**etcd_config(etcd.endpoint), **minio_config(tls_minio, tmp_path, **{
            "minio.ssl.tlsCACert": ca})})
        e = await fails_within(StorageError, connect(cfg), DEADLINE + 1)
        assert "minio.ssl.tlsCACert" in str(e) and "CERTIFICATE_VERIFY_FAILED" in str(e), e


async def test_s3_ca_file_that_is_not_pem_is_a_config_error(etcd, tls_minio, tmp_path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"minio\.ssl\.tlsCACert: .*ca\.crt is not a PEM file"):
        async with logstore.Client(Config({**etcd_config(etcd.endpoint), **minio_config(tls_minio, tmp_path, **{
                "minio.ssl.tlsCACert": str(bad)})})):
            pass


def test_aetcd_alone_cannot_do_tls(cert_etcd) -> None:
    """Why logstore.meta.etcdconn exists: aetcd 1.0.0's client dials plaintext
    whatever it is given, so against a TLS etcd it can only fail."""
    async def go() -> None:
        host, port = cert_etcd.endpoint.rsplit(":", 1)
        async with aetcd.Client(host=host, port=int(port), timeout=2) as c:
            await c.status()
    with pytest.raises(aetcd.ClientError):
        asyncio.run(go())


# -- the operator's adapters over TLS (the cluster tier runs them inside the operator) -----------
async def test_operator_keyspace_adapter_over_tls(cert_etcd, pki) -> None:
    from picchio_operator.adapters.etcd import EtcdError, EtcdKeyspace

    good = EtcdTLS(ca_file=str(pki.ca.pair.cert), cert_file=str(pki.client.cert), key_file=str(pki.client.key))
    async with EtcdKeyspace([cert_etcd.endpoint], tls=good, timeout=DEADLINE) as ks:
        rep = await ks.ensure_keyspace(f"op-{uuid.uuid4().hex[:8]}/woodpecker")
        assert rep.initialised and rep.version.startswith("3.6")
    wrong = EtcdTLS(ca_file=str(pki.other.pair.cert), cert_file=str(pki.client.cert), key_file=str(pki.client.key))
    t = time.monotonic()
    with pytest.raises(EtcdError) as e:
        async with EtcdKeyspace([cert_etcd.endpoint], tls=wrong, timeout=DEADLINE):
            pass
    assert e.value.reason == "EtcdTLSFailed" and time.monotonic() - t < DEADLINE + 1, e.value
    with pytest.raises(EtcdError) as e:  # no tlsSecret against a TLS etcd: says which field is missing
        async with EtcdKeyspace([cert_etcd.endpoint], timeout=DEADLINE):
            pass
    assert "spec.etcd.tlsSecret" in str(e.value)


def test_operator_bucket_adapter_over_tls(tls_minio, pki) -> None:
    from picchio_operator.adapters import bucket as B
    from picchio_operator.model.spec import parse_cluster

    c = parse_cluster({"metadata": {"name": "w", "namespace": "n"}, "spec": {
        "etcd": {"endpoints": ["x:1"]}, "storage": {"endpoint": tls_minio.endpoint, "bucket": "picchio-op-tls",
                                                   "createBucket": True, "rootPath": "w"}}})
    good = B.s3_client(c, tls_minio.access_key, tls_minio.secret_key, timeout=DEADLINE,
                       ca_file=str(pki.ca.pair.cert))
    B.ensure_storage(good, c)
    bad = B.s3_client(c, tls_minio.access_key, tls_minio.secret_key, timeout=DEADLINE, attempts=1,
                      ca_file=str(pki.other.pair.cert))
    with pytest.raises(B.StorageError) as e:
        B.ensure_storage(bad, c)
    assert e.value.reason == "StorageTLSFailed" and "spec.storage.caSecret" in str(e.value)
