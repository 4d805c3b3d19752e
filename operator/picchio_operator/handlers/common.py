"""Small pieces shared by the handlers: reading a cluster's credentials and
turning a cluster object into what the log handlers need."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from logstore.config import SETTINGS
from logstore.meta.etcdconn import EtcdTLS

from ..adapters import AdapterError
from ..adapters.kube import Kube, NotFound
from ..model import constants as k
from ..model.config import client_config, render_config
from ..model.spec import ClusterSpec


_TABLE_DEFAULT_MIN_TLS = next(s.default for s in SETTINGS if s.key == "etcd.ssl.tlsMinVersion")


# Keys of the Secrets we read whose values must never be shown (usernames and certificates may be)
SECRET_VALUE_KEYS = frozenset({"accessKeyID", "secretAccessKey", "password", k.TLS_KEY})


class SecretError(AdapterError):
    reason = "SecretNotFound"


async def read_credentials(kube: Kube, namespace: str, secret: str | None, keys: tuple[str, ...],
                           field: str) -> dict[str, str]:
    """Values of ``keys`` in Secret ``secret``; a missing Secret or key is an
    error naming the spec field that points at it."""
    if not secret:
        return {}
    try:
        data = await kube.read_secret(namespace, secret)
    except NotFound:
        raise SecretError(f"{field}: Secret {namespace}/{secret} not found") from None
    kube.redactor.add(*(data.get(key) for key in keys if key in SECRET_VALUE_KEYS))
    missing = [key for key in keys if not data.get(key)]
    if missing:
        raise SecretError(f"{field}: Secret {namespace}/{secret} lacks key(s) {', '.join(missing)}",
                          "SecretIncomplete")
    return {key: data[key] for key in keys}


async def s3_credentials(kube: Kube, c: ClusterSpec) -> tuple[str | None, str | None]:
    creds = await read_credentials(kube, c.namespace, c.storage.credentials_secret, k.S3_SECRET_KEYS,
                                   "spec.storage.credentialsSecret")
    return creds.get("accessKeyID"), creds.get("secretAccessKey")


async def etcd_credentials(kube: Kube, c: ClusterSpec) -> tuple[str | None, str | None]:
    creds = await read_credentials(kube, c.namespace, c.etcd.credentials_secret, k.ETCD_SECRET_KEYS,
                                   "spec.etcd.credentialsSecret")
    return creds.get("username"), creds.get("password")


async def etcd_tls(rt: Any, c: ClusterSpec) -> EtcdTLS | None:
    """spec.etcd.tlsSecret as the operator's own etcd clients use it: its
    files written privately (``rt.tls_files``), TLS on.  None without it."""
    if not c.etcd.tls_secret:
        return None
    data = await read_credentials(rt.kube, c.namespace, c.etcd.tls_secret, k.ETCD_TLS_KEYS, "spec.etcd.tlsSecret")
    paths = rt.tls_files.write(c.namespace, c.etcd.tls_secret, data, k.ETCD_TLS_KEYS)
    return EtcdTLS(ca_file=paths[k.TLS_CA], cert_file=paths[k.TLS_CERT], key_file=paths[k.TLS_KEY],
                   min_version=_TABLE_DEFAULT_MIN_TLS, enabled=True, names=(
                       f"spec.etcd.tlsSecret ({k.TLS_CA})", f"spec.etcd.tlsSecret ({k.TLS_CERT})",
                       f"spec.etcd.tlsSecret ({k.TLS_KEY})"))


async def storage_ca(rt: Any, c: ClusterSpec) -> str | None:
    """The file holding spec.storage.caSecret's ``ca.crt`` (None without it)."""
    if c.storage.type != "minio" or not c.storage.ca_secret:
        return None
    data = await read_credentials(rt.kube, c.namespace, c.storage.ca_secret, k.STORAGE_CA_KEYS,
                                  "spec.storage.caSecret")
    return rt.tls_files.write(c.namespace, c.storage.ca_secret, data, k.STORAGE_CA_KEYS)[k.TLS_CA]


async def tls_settings(rt: Any, c: ClusterSpec) -> dict[str, Any]:
    """The etcd.ssl.* / minio.ssl.tlsCACert keys of the operator's own
    logstore client: the same settings as the pods', pointing at the
    operator's private copies of the Secrets instead of the pods' mounts."""
    out: dict[str, Any] = {}
    tls = await etcd_tls(rt, c)
    if tls is not None:
        out.update({"etcd.ssl.enabled": True, "etcd.ssl.tlsCACert": tls.ca_file, "etcd.ssl.tlsCert": tls.cert_file,
                    "etcd.ssl.tlsKey": tls.key_file})
    ca = await storage_ca(rt, c)
    if ca:
        out["minio.ssl.tlsCACert"] = ca
    return out


async def client_secrets(kube: Kube, c: ClusterSpec) -> dict[str, Any]:
    """Credentials as dotted config keys, for the operator's logstore client."""
    out: dict[str, Any] = {}
    if c.storage.type == "minio":
        ak, sk = await s3_credentials(kube, c)
        if ak and sk:
            out.update({"minio.accessKeyID": ak, "minio.secretAccessKey": sk})
    user, pw = await etcd_credentials(kube, c)
    if user and pw:
        out.update({"etcd.auth.enabled": True, "etcd.auth.userName": user, "etcd.auth.password": pw})
    return out


async def cluster_client(rt: Any, c: ClusterSpec) -> tuple[Any, str]:
    """The pooled ``logstore.Client`` for cluster ``c`` and its pool key
    (the WoodpeckerLog passes and the orphan scan share it).  Raises
    InvalidConfig when the cluster's config does not render."""
    cfg = render_config(c)
    key = f"{c.namespace}/{c.name}/{c.uid}"
    values = client_config(cfg, {**await client_secrets(rt.kube, c), **await tls_settings(rt, c)})
    return await rt.logs.get(key, values), key


IN_USE_FINALIZER = "picchio.dev/in-use"


def referenced_secrets(c: ClusterSpec) -> set[str]:
    minio = c.storage.type == "minio"
    return {s for s in (c.storage.credentials_secret if minio else None, c.storage.ca_secret if minio else None,
                        c.etcd.credentials_secret, c.etcd.tls_secret) if s}


async def protect_secrets(kube: Kube, c: ClusterSpec, previously: list[str], log: Any) -> list[str]:
    """Put the in-use finalizer on the Secrets the cluster reads, so that a
    namespace deletion cannot remove credentials before the cluster's (and
    its logs') deletion handlers have used them — the same idea as
    kubernetes.io/pvc-protection.  Secrets no longer referenced are released.
    Returns the names now protected (recorded in status.protectedSecrets)."""
    from ..adapters.kube import KubeError

    protected: list[str] = []
    for name in sorted(referenced_secrets(c)):
        try:
            if await kube.set_finalizer("v1", "Secret", c.namespace, name, IN_USE_FINALIZER, True):
                protected.append(name)
        except KubeError as e:  # e.g. 422: already being deleted — nothing to protect any more
            log.warning("cannot protect Secret %s/%s: %s", c.namespace, name, e)
    for name in sorted(set(previously) - set(protected) - referenced_secrets(c)):
        await release_secret(kube, c, name)
    return protected


async def release_secret(kube: Kube, c: ClusterSpec, name: str) -> None:
    """Drop the in-use finalizer unless another cluster still needs the Secret.

    A cluster that is being deleted and has already set ``status.finalized``
    no longer needs it.  Each deleting cluster sets its own flag *before*
    looking at the others, so when two clusters sharing a Secret finish at
    the same moment at least one of them sees the other's flag and releases
    the Secret — it can never stay protected by two departed clusters."""
    from ..model.spec import SpecError, parse_cluster

    for other in await kube.list_custom(k.CLUSTER_PLURAL, c.namespace):
        if other["metadata"].get("uid") == c.uid:
            continue
        if other["metadata"].get("deletionTimestamp") and (other.get("status") or {}).get("finalized"):
            continue
        try:
            if name in referenced_secrets(parse_cluster(other)):
                return
        except SpecError:
            continue
    await kube.set_finalizer("v1", "Secret", c.namespace, name, IN_USE_FINALIZER, False)


def status_of(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})
