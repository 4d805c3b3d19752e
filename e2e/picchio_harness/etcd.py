"""A real etcd on loopback: the product's starter (``logstore.dev.etcd``:
cached etcd 3.6 build, else Debian's 3.4), plus :func:`etcd36_binary` for
what needs exactly the pinned 3.6 build (kube-apiserver, the cluster tests)."""
from __future__ import annotations

from logstore.dev.etcd import EtcdNotFound, EtcdServer, EtcdServerTLS, etcd_binary, start_etcd  # noqa: F401 - re-exports


def etcd36_binary() -> str:
    """The Go-module build of etcd 3.6 pinned in versions.env only:
    kube-apiserver 1.34 refuses the 3.4 that Debian ships (it wants >= 3.5.11)."""
    from .build import component_binary

    return component_binary("etcd")


def enable_auth(server: EtcdServer, root_password: str, tls: object | None = None) -> None:
    """Turn etcd's authentication on with a ``root`` user (role root) and
    ``root_password``; ``tls`` (a ``logstore.meta.etcdconn.EtcdTLS``) for a
    server that serves TLS.  For tests of "TLS plus user/password"."""
    import asyncio

    from aetcd import rpc

    from logstore.meta.etcdconn import EtcdClient

    async def go() -> None:
        host, port = server.endpoint.rsplit(":", 1)
        creds = tls.credentials() if tls is not None else None  # type: ignore[attr-defined]
        async with EtcdClient(host=host, port=int(port), timeout=5, credentials=creds) as c:
            auth = rpc.AuthStub(c.channel)
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=root_password), timeout=5)
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
            await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)

    asyncio.run(go())
