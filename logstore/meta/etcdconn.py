"""Connections to etcd, plaintext or TLS: the one place an etcd channel is made.

Why this module: ``aetcd`` 1.0.0 (the asyncio etcd client we use) only ever
opens ``grpc.aio.insecure_channel`` — it has no TLS options at all.
:class:`EtcdClient` is ``aetcd.Client`` with one change: :meth:`connect`
opens ``grpc.aio.secure_channel`` with :class:`EtcdTLS`'s credentials (the
CA that signed etcd's certificate, and a client certificate for etcd's
``--client-cert-auth``).  Everything else — KV, leases, watches, the
user/password token — is aetcd's own.  The WAL's ``MetaStore`` and the
operator's keyspace adapter both connect through :func:`open_client`.

Which endpoints use TLS follows etcd's Go client (``clientv3``), so a
Woodpecker/Milvus configuration means the same here: ``https://host:port``
always, ``http://host:port`` never, a bare ``host:port`` when
``etcd.ssl.enabled`` is true.

``etcd.ssl.tlsMinVersion``: gRPC's Python API cannot set a TLS version range
(its core speaks TLS 1.2 and 1.3).  So before the gRPC channel is opened,
:func:`tls_handshake` makes one TLS handshake with Python's ``ssl`` module,
with the same CA and client certificate and the minimum version set; a
server that cannot do that version fails here with a typed error.  It also
gives readable reasons ("certificate verify failed: …") for a wrong CA.  The
gRPC handshake that follows negotiates the highest common version (TLS 1.3's
downgrade protection keeps it from going lower than the check saw).

Certificate and key *contents* never appear in a message; paths do.
"""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher
from aetcd.client import _handle_errors

from ..config import Config, split_endpoint
from ..errors import ConfigError, MetadataError
from ..pem import given_path, read_pem

_TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                 "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class EtcdTLS:
    """TLS settings for etcd: file paths (the files are read when a
    connection is made, so a rotated certificate is picked up by the next
    connect) and the minimum TLS version.  Empty paths: the system CAs / no
    client certificate."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    min_version: str = "1.2"
    enabled: bool = True  # bare host:port endpoints use TLS
    names: tuple[str, str, str] = ("etcd.ssl.tlsCACert", "etcd.ssl.tlsCert", "etcd.ssl.tlsKey")

    @classmethod
    def from_config(cls, config: Config) -> EtcdTLS:
        return cls(ca_file=given_path(config["etcd.ssl.tlsCACert"]), cert_file=given_path(config["etcd.ssl.tlsCert"]),
                   key_file=given_path(config["etcd.ssl.tlsKey"]), min_version=config["etcd.ssl.tlsMinVersion"],
                   enabled=bool(config["etcd.ssl.enabled"]))

    def uses_tls(self, endpoint: str) -> bool:
        """etcd's Go client's rule: the scheme decides, else ``enabled``."""
        ep = endpoint.strip().lower()
        if ep.startswith("https://"):
            return True
        if ep.startswith("http://"):
            return False
        return self.enabled

    def check(self) -> None:
        """Every configured file readable and PEM, a key with a certificate:
        a ConfigError naming the setting, before any connection is tried."""
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{self.names[1]} and {self.names[2]} go together: set both (client certificate "
                              "authentication) or neither")
        for path, name in zip((self.ca_file, self.cert_file, self.key_file), self.names):
            if path:
                read_pem(path, name)

    def credentials(self) -> grpc.ChannelCredentials:
        ca = read_pem(self.ca_file, self.names[0]) if self.ca_file else None
        cert = read_pem(self.cert_file, self.names[1]) if self.cert_file else None
        key = read_pem(self.key_file, self.names[2]) if self.key_file else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = _TLS_VERSIONS[self.min_version]
        try:
            if self.ca_file:
                ctx.load_verify_locations(cafile=self.ca_file)
            else:
                ctx.load_default_certs()
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"{self.names[0]}: {self.ca_file} is not a usable CA bundle "
                              f"({getattr(e, 'reason', None) or type(e).__name__})") from None
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as e:
                raise ConfigError(f"{self.names[1]}/{self.names[2]}: {self.cert_file} and {self.key_file} are not "
                                  f"a matching certificate and key ({getattr(e, 'reason', None) or type(e).__name__})"
                                  ) from None
        ctx.set_alpn_protocols(["h2"])
        return ctx


class EtcdClient(aetcd.Client):
    """``aetcd.Client`` that can open a TLS channel (``credentials``); with
    ``credentials=None`` it is aetcd's plaintext client unchanged."""

    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._credentials = credentials
        self.server_status: Any = None  # what open_client's status() call returned

    @_handle_errors
    async def connect(self) -> None:
        # aetcd 1.0.0's connect(), with the channel chosen by self._credentials.
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            options = list(self._options.items())
            if self._credentials is None:
                self.channel = rpc.insecure_channel(target, options=options)
            else:
                self.channel = rpc.secure_channel(target, self._credentials, options=options)
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                resp = await self.auth_stub.Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


async def tls_handshake(host: str, port: int, tls: EtcdTLS, timeout: float) -> str:
    """One TLS handshake with Python's ssl (CA, client certificate, minimum
    version as configured); returns the negotiated version.  Raises
    MetadataError saying which setting to check."""
    ctx = tls.ssl_context()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host, ssl_handshake_timeout=timeout),
            timeout)
    except asyncio.TimeoutError:
        raise MetadataError(f"TLS handshake with etcd at {host}:{port} did not finish within {timeout:g}s "
                            "(etcd.requestTimeout)") from None
    except ssl.SSLCertVerificationError as e:
        raise MetadataError(f"etcd at {host}:{port}: server certificate not trusted: {e.verify_message} "
                            f"(check {tls.names[0]}: the CA that signed etcd's certificate"
                            f"{', currently ' + tls.ca_file if tls.ca_file else ', currently the system CAs'})"
                            ) from None
    except ssl.SSLError as e:
        hint = (f"etcd does not offer TLS ≥ {tls.min_version} (etcd.ssl.tlsMinVersion)"
                if "VERSION" in str(e).upper() else "is it serving TLS on this port?")
        raise MetadataError(f"TLS handshake with etcd at {host}:{port} failed: {e.reason or e} ({hint})") from None
    except ConnectionRefusedError as e:
        raise MetadataError(f"etcd at {host}:{port}: {e.strerror or 'connection refused'}") from None
    except OSError as e:  # reset/closed mid-handshake: typically a plaintext port
        raise MetadataError(f"TLS handshake with etcd at {host}:{port} failed: {e.strerror or type(e).__name__} "
                            "(is it serving TLS on this port?)") from None
    try:
        version = str(writer.get_extra_info("ssl_object").version())
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (asyncio.TimeoutError, OSError, ssl.SSLError):
            pass
    return version


async def open_client(endpoint: str, *, tls: EtcdTLS | None, username: str | None, password: str | None,
                      timeout: float) -> EtcdClient:
    """A connected client for one endpoint, its status read (so a wrong
    password, CA or protocol shows here), all within ``timeout``.  The
    caller closes it.  Raises MetadataError or aetcd's errors."""
    host, port = split_endpoint(endpoint, "etcd.endpoints")
    secure = tls is not None and tls.uses_tls(endpoint)
    creds = None
    if secure:
        assert tls is not None
        tls.check()
        await tls_handshake(host, port, tls, timeout)
        creds = tls.credentials()
    client = EtcdClient(host=host, port=port, username=username, password=password, credentials=creds,
                        timeout=timeout, connect_wait_timeout=max(1, int(timeout)))
    try:
        async def go() -> None:
            await client.connect()
            client.server_status = await client.status()

        await asyncio.wait_for(go(), timeout)
    except BaseException:
        await quiet_close(client)
        raise
    return client


async def quiet_close(client: aetcd.Client) -> None:
    """Close, ignoring what a broken channel raises; bounded."""
    try:
        await asyncio.wait_for(client.close(), 2.0)
    except Exception:  # noqa: BLE001 - closing a broken channel may raise anything
        pass
