"""Small pieces shared by the handlers: reading a cluster's credentials and
turning a cluster object into what the log handlers need."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..adapters import AdapterError
from ..adapters.kube import Kube, NotFound
from ..model import constants as k
from ..model.spec import ClusterSpec


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


async def client_secrets(kube: Kube, c: ClusterSpec) -> dict[str, str]:
    """Credentials as dotted config keys, for the operator's logstore client."""
    out: dict[str, str] = {}
    if c.storage.type == "minio":
        ak, sk = await s3_credentials(kube, c)
        if ak and sk:
            out.update({"minio.accessKeyID": ak, "minio.secretAccessKey": sk})
    user, pw = await etcd_credentials(kube, c)
    if user and pw:
        out.update({"etcd.username": user, "etcd.password": pw})
    return out


IN_USE_FINALIZER = "picchio.dev/in-use"


def referenced_secrets(c: ClusterSpec) -> set[str]:
    return {s for s in (c.storage.credentials_secret if c.storage.type == "minio" else None,
                        c.etcd.credentials_secret) if s}


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
