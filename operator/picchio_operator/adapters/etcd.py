"""The cluster's etcd keyspace: reachability, first-time initialisation and
purge.

Initialisation writes the four keys in one transaction guarded by "none of
them exists", so it can never overwrite a keyspace that clients (or another
operator) already use — ``logidgen`` going back to 0 would hand out log ids
twice.  A *partial* keyspace is reported, not repaired, for the same reason.

With authentication on (``spec.etcd.credentialsSecret`` names an admin),
:meth:`EtcdKeyspace.ensure_client_user` gives the cluster a role that may read
and write only its own prefix and a user holding just that role.  aetcd has no
auth-management API, so this uses its generated ``AuthStub`` on the same
channel and token.  Every step looks before it writes (role, permission,
user, grant, password), so re-running changes nothing and never revokes or
edits anything outside the cluster's own role and user: a password is
changed only when the Secret's no longer authenticates, because every auth
write bumps etcd's auth revision and makes all clients re-authenticate.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc
from aetcd.rpc import auth_pb2

from logstore.errors import ConfigError, MetadataError
from logstore.meta.etcdconn import EtcdTLS, open_client
from logstore.redact import redact

from ..model.etcdkeys import initial_keys, purge_prefix
from . import AdapterError

log = logging.getLogger(__name__)
T = TypeVar("T")


class EtcdError(AdapterError):
    reason = "EtcdUnreachable"


@dataclass(frozen=True)
class KeyspaceReport:
    initialised: bool  # this call created the keys
    version: str       # etcd server version


def _split(endpoint: str) -> tuple[str, int]:
    ep = endpoint.split("://", 1)[-1].rstrip("/")
    host, sep, port = ep.rpartition(":")
    if not sep or not port.isdigit():
        return ep, 2379
    return host, int(port)


@dataclass(frozen=True)
class ClientUserReport:
    """What :meth:`EtcdKeyspace.ensure_client_user` changed (all False on a
    re-run against an etcd that is already set up)."""

    role_created: bool
    permission_granted: bool
    user_created: bool
    role_granted: bool
    password_changed: bool

    @property
    def changed(self) -> bool:
        return any((self.role_created, self.permission_granted, self.user_created, self.role_granted,
                    self.password_changed))


_NOT_FOUND = ("role name not found", "user name not found")
_AUTH_OFF = "authentication is not enabled"


class EtcdKeyspace:
    """One short-lived connection to the first reachable endpoint."""

    def __init__(self, endpoints: Sequence[str], *, username: str | None = None, password: str | None = None,
                 timeout: float = 5.0, attempts: int = 3, tls: EtcdTLS | None = None) -> None:
        self._endpoints = list(endpoints)
        self._username, self._password = username or None, password or None
        # TLS (spec.etcd.tlsSecret) as the WAL does it: same client class, same endpoint rule
        # (https:// always, bare host:port when tls.enabled)
        self._tls = tls or EtcdTLS(enabled=False)
        self._more_secrets: list[str] = []  # passwords this connection sets (ensure_client_user)
        self._timeout = timeout
        self._attempts = attempts
        self._client: aetcd.Client | None = None
        self.server_version = ""

    async def __aenter__(self) -> EtcdKeyspace:
        errors: list[str] = []
        for ep in self._endpoints:
            host, port = _split(ep)
            url = f"{'https' if self._tls.uses_tls(ep) else 'http'}://{host}:{port}"
            try:
                client = await open_client(url, tls=self._tls, username=self._username, password=self._password,
                                           timeout=self._timeout)
                st = client.server_status
            except ConfigError as e:  # a TLS file the Secret gave us is unusable
                raise EtcdError(self._redact(f"spec.etcd.tlsSecret: {e}"), "EtcdTLSInvalid") from None
            except MetadataError as e:  # the TLS handshake failed (wrong CA, TLS version, not TLS)
                errors.append(self._redact(f"{ep}: {e}"))
                continue
            except (TimeoutError, Exception) as e:  # noqa: BLE001 - any failure: try the next endpoint
                if _AUTH_OFF in str(e):
                    raise EtcdError(f"etcd at {ep} has authentication off, but spec.etcd.credentialsSecret is "
                                    "set: enable authentication on etcd, or remove credentialsSecret",
                                    "EtcdAuthDisabled") from None
                if "authentication failed" in str(e):
                    raise EtcdError(self._redact(f"etcd at {ep} rejected the user in spec.etcd.credentialsSecret: "
                                                 f"{e}"), "EtcdAuthFailed") from None
                errors.append(self._redact(f"{ep}: {type(e).__name__}: {e}"))
                continue
            self._client = client
            self.server_version = str(getattr(st, "version", ""))
            return self
        hint = "" if self._tls.enabled else " (if etcd serves TLS, set spec.etcd.tlsSecret)"
        raise EtcdError(f"no etcd endpoint reachable ({'; '.join(errors)}); check spec.etcd.endpoints{hint}",
                        "EtcdTLSFailed" if any("TLS" in e or "certificate" in e for e in errors) else None)

    def _redact(self, text: str) -> str:
        return redact(text, (self._password, *self._more_secrets))

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await _close(self._client)
            self._client = None

    @property
    def client(self) -> aetcd.Client:
        assert self._client is not None, "use EtcdKeyspace as an async context manager"
        return self._client

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        for attempt in range(1, self._attempts + 1):
            try:
                return await asyncio.wait_for(fn(), self._timeout)
            except (TimeoutError, aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, aetcd.InternalError) as e:
                if attempt == self._attempts:
                    raise EtcdError(self._redact(f"etcd {what} failed after {attempt} attempts: {e!r}")) from None
                log.warning("etcd %s failed (attempt %d/%d): %s; retrying", what, attempt, self._attempts,
                            self._redact(repr(e)))
                await asyncio.sleep(delay)
                delay *= 2
            except aetcd.ClientError as e:
                reason = "EtcdAuthFailed" if "auth" in type(e).__name__.lower() else "EtcdError"
                raise EtcdError(self._redact(f"etcd {what} failed: {e!r}"), reason) from None
        raise AssertionError("unreachable")

    async def ensure_keyspace(self, meta_prefix: str) -> KeyspaceReport:
        """Create instance/version/logidgen/quorumidgen if all are absent."""
        keys = initial_keys(meta_prefix, str(uuid.uuid4()))
        c = self.client
        tx = c.transactions
        def txn() -> Awaitable[tuple[bool, list[Any]]]:
            return c.transaction(compare=[tx.create(k) == 0 for k in keys],
                                 success=[tx.put(k, v) for k, v in keys.items()], failure=[])

        ok, _ = await self._call("initialise keyspace", txn)
        if ok:
            log.info("initialised etcd keyspace %s", meta_prefix)
            return KeyspaceReport(True, self.server_version)
        present: list[bool] = []
        for key in keys:
            def read(key: bytes = key) -> Awaitable[Any]:
                return c.get(key)

            present.append(await self._call("read keyspace", read) is not None)
        if not all(present):
            missing = [k.decode() for k, p in zip(keys, present) if not p]
            raise EtcdError(f"etcd keyspace {meta_prefix} is partially initialised (missing {missing}); "
                            "the operator never repairs it (log ids could repeat) — restore it or point "
                            "spec.etcd.rootPath elsewhere", "PartialKeyspace")
        return KeyspaceReport(False, self.server_version)

    # -- authentication ---------------------------------------------------------
    async def _auth(self, what: str, method: str, request: Any, *, missing_ok: bool = False) -> Any:
        """One Auth RPC with the connection's token and the deadline; a
        "not found" answer is None when ``missing_ok``."""
        stub = rpc.AuthStub(self.client.channel)
        try:
            return await self._call(what, lambda: getattr(stub, method)(request, metadata=self.client.metadata,
                                                                        timeout=self._timeout))
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            if missing_ok and any(m in details for m in _NOT_FOUND):
                return None
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                reason = "EtcdUnreachable"
            elif e.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) \
                    or "permission denied" in details:
                reason = "EtcdPermissionDenied"
                details += (" (the user in spec.etcd.credentialsSecret must be allowed to manage etcd "
                            "authentication, e.g. hold the root role)")
            else:
                reason = "EtcdAuthError"
            raise EtcdError(self._redact(f"etcd {what} failed: {e.code().name}: {details}"), reason) from None

    async def auth_enabled(self) -> bool:
        st = await self._auth("auth status", "AuthStatus", rpc.AuthStatusRequest())
        return bool(st.enabled)

    async def ensure_client_user(self, *, user: str, role: str, password: str, key: bytes,
                                 range_end: bytes) -> ClientUserReport:
        """Role ``role`` with READWRITE on ``[key, range_end)``, and user
        ``user`` with ``password`` holding that role.  Needs an admin
        connection (the root role, or a user allowed to manage auth)."""
        self._more_secrets.append(password)
        perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=key, range_end=range_end)
        got = await self._auth("role get", "RoleGet", rpc.AuthRoleGetRequest(role=role), missing_ok=True)
        role_created = got is None
        if role_created:
            await self._auth("role add", "RoleAdd", rpc.AuthRoleAddRequest(name=role))
        perms = [] if got is None else list(got.perm)
        have = any(p.permType == perm.permType and p.key == key and p.range_end == range_end for p in perms)
        if not have:
            await self._auth("role grant", "RoleGrantPermission",
                             rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm))
        foreign = [p for p in perms if not (p.key == key and p.range_end == range_end)]
        if foreign:  # someone widened our role: say so, but leave it to them
            log.warning("etcd role %s also grants %s (not the operator's doing; left in place)", role,
                        ", ".join(f"{bytes(p.key)!r}..{bytes(p.range_end)!r}" for p in foreign))
        u = await self._auth("user get", "UserGet", rpc.AuthUserGetRequest(name=user), missing_ok=True)
        user_created = password_changed = False
        if u is None:
            await self._auth("user add", "UserAdd", rpc.AuthUserAddRequest(name=user, password=password))
            user_created = True
        elif not await self._authenticates(user, password):
            await self._auth("user change password", "UserChangePassword",
                             rpc.AuthUserChangePasswordRequest(name=user, password=password))
            password_changed = True
        role_granted = u is None or role not in list(u.roles)
        if role_granted:
            await self._auth("user grant", "UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role))
        rep = ClientUserReport(role_created, not have, user_created, role_granted, password_changed)
        if rep.changed:
            log.info("etcd user %s / role %s on %r: %s", user, role, key, rep)
        return rep

    async def _authenticates(self, user: str, password: str) -> bool:
        stub = rpc.AuthStub(self.client.channel)
        try:
            await asyncio.wait_for(stub.Authenticate(rpc.AuthenticateRequest(name=user, password=password),
                                                     timeout=self._timeout), self._timeout)
        except grpc.aio.AioRpcError as e:
            if "authentication failed" in (e.details() or ""):
                return False
            raise EtcdError(f"etcd authenticate {user} failed: {e.code().name}: {e.details()}",
                            "EtcdAuthError") from None
        except TimeoutError:
            raise EtcdError(f"etcd authenticate {user}: no answer in {self._timeout}s") from None
        return True

    async def remove_client_user(self, *, user: str, role: str) -> tuple[bool, bool]:
        """deletionPolicy Delete: drop the cluster's user and role (each only
        if present).  Returns (user deleted, role deleted)."""
        u = await self._auth("user delete", "UserDelete", rpc.AuthUserDeleteRequest(name=user), missing_ok=True)
        r = await self._auth("role delete", "RoleDelete", rpc.AuthRoleDeleteRequest(role=role), missing_ok=True)
        return u is not None, r is not None

    async def purge(self, meta_prefix: str) -> int:
        """deletionPolicy=Delete: remove every key under ``P/``."""
        c = self.client
        out = await self._call("purge keyspace", lambda: c.delete_prefix(purge_prefix(meta_prefix)))
        return int(getattr(out, "deleted", 0) or 0)


async def _close(client: aetcd.Client) -> None:
    try:
        await asyncio.wait_for(client.close(), 2.0)
    except (TimeoutError, Exception) as e:  # noqa: BLE001 - closing a broken channel may fail any way
        log.debug("closing etcd client: %r", e)
