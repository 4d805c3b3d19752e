"""Operator-managed mTLS against real LogStore processes: per-RPC authorization
by the client certificate's role (CN ``<role>:<name>``, ``logstore.authz``)
and certificate/CA rotation without restarting anything."""
from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import pytest

import logstore
from logstore import EARLIEST, authz
from logstore.rpc import METHODS, FenceSegmentRequest, CleanSegmentRequest, MarkLogDeletedRequest
from logstore.storage.service import Node, NodeError
from picchio_harness.pki import CertificateAuthority, CertPair
from svcutil import http_get, until

_T = "woodpecker.logstore.tls."
TIMEOUT = 2.0  # woodpecker.client.quorum.requestTimeout of these tests, seconds


def _server(ca: CertificateAuthority, name: str) -> CertPair:
    return ca.issue(name, "logstore", server=True, dns=("localhost",), ips=("127.0.0.1",))


def server_tls(cert: Path, key: Path, ca: Path, **extra) -> dict:
    return {_T + "enabled": True, _T + "certFile": str(cert), _T + "keyFile": str(key), _T + "caFile": str(ca),
            _T + "requireClientCert": True, **extra}


def client_tls(ca: Path, pair: CertPair | None) -> dict:
    return {_T + "enabled": True, _T + "caFile": str(ca), _T + "clientCertFile": str(pair.cert) if pair else "",
            _T + "clientKeyFile": str(pair.key) if pair else ""}


class SecretDir:
    """A directory laid out like a Kubernetes Secret volume: ``name`` →
    ``..data/name``, and :meth:`write` swaps ``..data`` atomically."""

    def __init__(self, d: Path, files: dict[str, bytes]) -> None:
        self.dir, self._n = d, itertools.count()
        d.mkdir(parents=True)
        self.write(files)
        for name in files:
            os.symlink(f"..data/{name}", d / name)

    def write(self, files: dict[str, bytes]) -> None:
        ts = self.dir / f"..ts{next(self._n)}"
        ts.mkdir()
        for name, body in files.items():
            (ts / name).write_bytes(body)
        os.symlink(ts.name, self.dir / "..tmp")
        os.replace(self.dir / "..tmp", self.dir / "..data")

    def __truediv__(self, name: str) -> Path:
        return self.dir / name


def _probe_request(name: str):
    """A request every RPC accepts without touching real data: a bucket/root no
    client uses (MarkInstanceDeleted with empty names would wipe the data dir)."""
    req = METHODS[name][0]()
    for attr, v in (("bucket_name", "authz-probe"), ("root_path", "nothing"), ("log_id", 999999)):
        if hasattr(req, attr):
            setattr(req, attr, v)
    return req


async def _call(endpoint: str, cfg: logstore.Config, name: str, req=None, timeout: float = TIMEOUT):
    """One RPC on a channel of its own: a new TLS handshake every time."""
    node = Node(endpoint, cfg, options=(("grpc.use_local_subchannel_pool", 1),))
    try:
        return await node.call(name, req if req is not None else _probe_request(name), timeout)
    finally:
        await node.close()


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    cns = {**{role: f"{role}:test" for role in authz.ROLES}, "norole": "picchio-client"}
    return ca, _server(ca, "logstore"), {who: ca.issue(who, cn) for who, cn in cns.items()}, cns


async def test_every_rpc_is_allowed_exactly_to_its_roles(service_cluster, pki):
    """The real server against the table, for every RPC and role: refused calls
    raise PermissionDeniedError naming role and RPC, at once, and are counted."""
    ca, srv, certs, cns = pki
    sc = service_cluster(n=1, logstore_overrides=server_tls(srv.cert, srv.key, ca.pair.cert))
    ls = sc.logstores[0]
    for (who, pair), name in itertools.product(certs.items(), METHODS):
        role = authz.role_of(cns[who])
        t0 = time.monotonic()
        try:
            await _call(ls.endpoint, sc.client_config(**client_tls(ca.pair.cert, pair)), name)
            denied = None
        except logstore.PermissionDeniedError as e:
            denied = str(e)
        except NodeError as e:  # an answer about the (absent) data: the call was let through
            assert "PERMISSION" not in str(e), e
            denied = None
        assert time.monotonic() - t0 < TIMEOUT, (who, name)
        assert (denied is None) == authz.allowed(role, name), (who, name, denied)
        if denied is not None:
            assert name in denied and (who in denied if role else "no role" in denied), denied
    assert not authz.allowed("reader", "AddEntries")  # the table itself refuses something
    _, body = http_get(ls.http_port, "/metrics")
    assert 'picchio_logstore_authz_denied_total{role="reader",rpc="AddEntries"} 1' in body
    assert 'picchio_logstore_authz_denied_total{role="none",rpc="GetBatchEntriesAdv"} 1' in body


async def test_authorization_off_lets_any_ca_signed_cert_in(service_cluster, pki):
    """``tls.authorization: false`` restores the previous behaviour (so the
    refusals above come from the new check, not from the TLS setup)."""
    ca, srv, certs, _ = pki
    sc = service_cluster(n=1, logstore_overrides=server_tls(srv.cert, srv.key, ca.pair.cert,
                                                            **{_T + "authorization": False}))
    for who in ("reader", "norole"):
        cfg = sc.client_config(**client_tls(ca.pair.cert, certs[who]))
        with pytest.raises(NodeError, match="without entries"):  # served (and refused for its content)
            await _call(sc.logstores[0].endpoint, cfg, "AddEntries")


async def test_writer_writes_reader_only_reads(service_cluster, pki):
    ca, srv, certs, _ = pki
    sc = service_cluster(logstore_overrides=server_tls(srv.cert, srv.key, ca.pair.cert),
                         **{"woodpecker.client.quorum.requestTimeout": f"{TIMEOUT}s"})
    wcfg = sc.client_config(**client_tls(ca.pair.cert, certs["writer"]))
    rcfg = sc.client_config(**client_tls(ca.pair.cert, certs["reader"]))
    async with logstore.Client(wcfg) as wc, logstore.Client(rcfg) as rc:
        wlog = await wc.create_log("roles")
        w = await wlog.open_writer()
        ids = [await w.append(b"m%d" % i) for i in range(5)]
        rlog = await rc.open_log("roles")
        r = await rlog.open_reader(EARLIEST)  # the segment is active: these reads go to the LogStores
        assert [(await r.read_next(timeout=10)).payload for _ in ids] == [b"m%d" % i for i in range(5)]
        # the reader's own writes: refused with the typed error, well within the deadline
        t0 = time.monotonic()
        with pytest.raises(logstore.PermissionDeniedError, match="reader"):
            rw = await (await rc.create_log("mine")).open_writer()
            await rw.append(b"nope")
        with pytest.raises(logstore.PermissionDeniedError, match="FenceSegment"):
            await rlog.open_writer()  # taking over fences the writer's segment
        assert time.monotonic() - t0 < 3 * TIMEOUT
        seg = ids[0].segment_id
        log_id = (await rc.meta.get_log("roles")).value.log_id
        b, root = rcfg["minio.bucketName"], rcfg["minio.rootPath"]
        for name, req in (("FenceSegment", FenceSegmentRequest(b, root, log_id, seg)),
                          ("CleanSegment", CleanSegmentRequest(b, root, log_id, seg, 0)),
                          ("MarkLogDeleted", MarkLogDeletedRequest(b, root, log_id))):
            for ls in sc.logstores:
                with pytest.raises(logstore.PermissionDeniedError, match=f"{name}.*reader"):
                    await _call(ls.endpoint, rcfg, name, req)
        with pytest.raises(logstore.PermissionDeniedError):
            await rc.delete_log("roles")
        # nothing of it happened: the writer goes on in the same segment, everything reads back
        ids.append(await w.append(b"m5"))
        assert ids[-1].segment_id == seg
        await w.close()
        r2 = await (await wc.open_log("roles")).open_reader(EARLIEST)
        assert [(await r2.read_next(timeout=10)).payload for _ in ids] == [b"m%d" % i for i in range(6)]


async def test_foreign_ca_no_cert_and_no_role_refused(service_cluster, pki, tmp_path):
    ca, srv, certs, _ = pki
    other = CertificateAuthority(tmp_path / "other", cn="someone-else")
    sc = service_cluster(logstore_overrides=server_tls(srv.cert, srv.key, ca.pair.cert),
                         **{"woodpecker.client.quorum.requestTimeout": f"{TIMEOUT}s"})
    async with logstore.Client(sc.client_config(**client_tls(ca.pair.cert, certs["writer"]))) as c:
        async with await (await c.create_log("x")).open_writer() as w:
            await w.append(b"x")
    cases = {"foreign CA": (client_tls(ca.pair.cert, other.issue("w", "writer:intruder")),
                            logstore.QuorumUnavailableError),
             "no cert": (client_tls(ca.pair.cert, None), logstore.QuorumUnavailableError),
             "no role": (client_tls(ca.pair.cert, certs["norole"]), logstore.PermissionDeniedError)}
    for what, (tls, error) in cases.items():
        async with logstore.Client(sc.client_config(**tls)) as c:
            log = await c.open_log("x")
            t0 = time.monotonic()
            with pytest.raises(error):
                w = await log.open_writer()
                await w.append(b"y")
            # a handshake refusal is a failed call per replica, bounded like any other
            assert time.monotonic() - t0 < 4 * TIMEOUT, what


async def test_rotation_without_restart(service_cluster, tmp_path):
    """Server and client files swapped like Secret volumes while a writer
    appends: CA bundle first, then the server's and the writer's certificates,
    then the old CA dropped.  Nothing acknowledged is lost; a new-CA-only
    client gets in once the server reloaded; an old-CA client is refused once
    the old CA left the bundle; a broken file set is ignored."""
    old, new = CertificateAuthority(tmp_path / "old", cn="ca-old"), CertificateAuthority(tmp_path / "new", cn="ca-new")
    pem = lambda p: p.read_bytes()  # noqa: E731
    bundle = pem(old.pair.cert) + pem(new.pair.cert)
    s_old, s_new = _server(old, "logstore"), _server(new, "logstore")
    w_old, w_new = old.issue("w", "writer:app"), new.issue("w", "writer:app")
    srv = SecretDir(tmp_path / "srv", {"tls.crt": pem(s_old.cert), "tls.key": pem(s_old.key),
                                       "ca.crt": pem(old.pair.cert)})
    cli = SecretDir(tmp_path / "cli", {"tls.crt": pem(w_old.cert), "tls.key": pem(w_old.key),
                                       "ca.crt": pem(old.pair.cert)})
    sc = service_cluster(logstore_overrides=server_tls(srv / "tls.crt", srv / "tls.key", srv / "ca.crt"),
                         **{"woodpecker.client.quorum.requestTimeout": "5s"})
    steady_cfg = sc.client_config(**client_tls(cli / "ca.crt", CertPair(cli / "tls.crt", cli / "tls.key")))
    new_only = sc.client_config(**client_tls(new.pair.cert, w_new))
    old_cert = sc.client_config(**client_tls(tmp_path / "bundle.pem", w_old))
    (tmp_path / "bundle.pem").write_bytes(bundle)

    failures: list[str] = []

    async def answers(cfg) -> bool:
        """Every LogStore completes a new handshake with ``cfg`` and answers."""
        for ls in sc.logstores:
            try:
                await _call(ls.endpoint, cfg, "GetSegmentBlockCount", timeout=5.0)
            except NodeError as e:
                if e.code == -1:  # the transport (handshake) failed; anything else is an answer
                    failures.append(str(e))
                    return False
        return True

    async def refused(cfg) -> bool:
        """Every LogStore refuses a new handshake with ``cfg``."""
        for ls in sc.logstores:
            try:
                await _call(ls.endpoint, cfg, "GetSegmentBlockCount", timeout=5.0)
                return False
            except NodeError as e:
                if e.code != -1:
                    return False
        return True

    acked: list = []
    stop = asyncio.Event()
    async with logstore.Client(steady_cfg) as c:
        log = await c.create_log("rot")

        async def steady() -> None:
            async with await log.open_writer() as w:
                while not stop.is_set():
                    acked.append(await w.append(b"e%d" % len(acked)))

        task = asyncio.create_task(steady())

        async def progress(n: int) -> None:
            await until(lambda: task.done() or len(acked) >= n, f"{n} appends", 30)
            if task.done():
                task.result()  # re-raises what stopped the writer
                raise AssertionError("the writer stopped")
        await progress(20)
        old_only = sc.client_config(**client_tls(old.pair.cert, w_old))
        assert not await answers(new_only)  # the server presents an old-CA certificate: refused
        # a broken set (key of another certificate) is logged and ignored
        srv.write({"tls.crt": pem(s_new.cert), "tls.key": pem(s_old.key), "ca.crt": pem(old.pair.cert)})

        async def reported() -> bool:  # the files are looked at when a handshake comes: make some
            assert await answers(old_only), f"the broken files were used: {failures[-1]}"
            return all("new certificate files not usable" in ls.log_path.read_text() for ls in sc.logstores)
        await until(reported, "the broken files reported", 15)
        # overlap: both sides trust both CAs; then the server and the writer move to new-CA certificates
        nodes = lambda: list(c.backend._nodes.values())  # noqa: E731
        cli.write({"tls.crt": pem(w_old.cert), "tls.key": pem(w_old.key), "ca.crt": bundle})
        await until(lambda: nodes() and all(n.rebuilds >= 1 for n in nodes()), "the writer trusts both CAs", 15)
        srv.write({"tls.crt": pem(s_new.cert), "tls.key": pem(s_new.key), "ca.crt": bundle})
        await until(lambda: answers(new_only), "a new-CA-only client gets in", 15)
        cli.write({"tls.crt": pem(w_new.cert), "tls.key": pem(w_new.key), "ca.crt": bundle})
        await until(lambda: all(n.rebuilds >= 2 for n in nodes()), "the writer's new certificate in use", 15)
        await progress(len(acked) + 20)
        # the old CA leaves the bundle: its certificates are refused from now on
        srv.write({"tls.crt": pem(s_new.cert), "tls.key": pem(s_new.key), "ca.crt": pem(new.pair.cert)})
        await until(lambda: refused(old_cert), "old-CA client refused by every LogStore", 15)
        await progress(len(acked) + 20)
        stop.set()
        await task  # re-raises whatever stopped the writer
    for ls in sc.logstores:  # no key material in any log
        text = ls.log_path.read_text()
        assert "BEGIN" not in text and pem(s_old.key).decode().splitlines()[1] not in text
    async with logstore.Client(new_only) as c:
        r = await (await c.open_log("rot")).open_reader(EARLIEST)
        got = [await r.read_next(timeout=10) for _ in acked]
        assert [m.id for m in got] == acked
        assert [m.payload for m in got] == [b"e%d" % i for i in range(len(acked))]
        with pytest.raises(TimeoutError):  # and nothing else
            await r.read_next(timeout=0.5)

