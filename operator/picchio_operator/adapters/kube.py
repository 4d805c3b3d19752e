"""Kubernetes API access: server-side apply with one stable field manager,
reads, and status writes.

Why raw paths instead of the typed ``*Api`` classes: server-side apply is the
same PATCH for every kind, the typed models would round-trip our dicts through
generated classes (and drop fields they do not know), and custom resources are
dicts anyway.  The sync client runs in a worker thread (``asyncio.to_thread``)
so the kopf event loop never blocks; every request carries a timeout.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from logstore.redact import SecretFilter, redact

from ..model.constants import FIELD_MANAGER, GROUP, VERSION
from . import AdapterError

log = logging.getLogger(__name__)

# (apiVersion, kind) → (path prefix, plural).  Only the kinds the operator
# manages — the RBAC in manifests/ grants exactly these.
_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
}
# The kinds the operator ever deletes itself (delete_owned); every other child goes
# only with its owner, by garbage collection.  The RBAC grants delete on exactly these.
DELETABLE: frozenset[tuple[str, str]] = frozenset({("networking.k8s.io/v1", "NetworkPolicy")})


class KubeError(AdapterError):
    reason = "KubernetesApiError"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    pass


def _redacted(value: Any, secrets: list[str]) -> Any:
    """``value`` with every string in it passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, secrets) for v in value]
    return value


@dataclass
class Kube:
    """One authenticated API client; ``timeout`` bounds every request
    (connect, read) in seconds."""

    api: ApiClient
    timeout: tuple[float, float] = (5.0, 30.0)
    field_manager: str = FIELD_MANAGER
    # Secret values the operator has read or made (handlers.common.read_credentials adds them):
    # redacted from every status this adapter writes, from events and from log records.
    redactor: SecretFilter = field(default_factory=lambda: SecretFilter(()))

    # -- plumbing ----------------------------------------------------------------
    def _request_sync(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
                      body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        # The REST layer JSON-encodes bodies of JSON content types itself; an
        # apply patch (YAML content type) goes as text — JSON is valid YAML.
        raw = json.dumps(body) if body is not None and content_type and content_type.endswith("yaml") else body
        m, url, hdrs, b, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers,
            body=raw, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(m, url, header_params=hdrs, body=b, post_params=post,
                                     _request_timeout=self.timeout)
            resp.read()
        except ApiException as e:  # transport-level failure mapped by the client
            raise KubeError(f"{method} {path}: {e.reason or e}", e.status) from e
        except Exception as e:
            raise KubeError(f"{method} {path}: {e!r}") from e
        text = resp.data.decode("utf-8", "replace") if resp.data else ""
        if not 200 <= resp.status <= 299:
            msg = text
            try:
                msg = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                pass
            cls = NotFound if resp.status == 404 else KubeError
            raise cls(redact(f"{method} {path}: {resp.status} {msg}", self.redactor.secrets), resp.status)
        return json.loads(text) if text else None

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        return await asyncio.to_thread(self._request_sync, method, path, **kw)

    @staticmethod
    def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
        try:
            prefix, plural = _KINDS[(api_version, kind)]
        except KeyError:
            raise KubeError(f"the operator does not manage {api_version} {kind}") from None
        p = f"{prefix}/namespaces/{namespace}/{plural}"
        return f"{p}/{name}" if name else p

    @staticmethod
    def _custom_path(plural: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        p = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    # -- children ----------------------------------------------------------------
    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as ``picchio-operator`` (force: the operator
        is the authority on the fields it sets; fields it does not set — e.g.
        an HPA's replicas on other objects, or a user's extra annotations — stay
        with their managers)."""
        meta = obj["metadata"]
        path = self._path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        return await self._request("PATCH", path, body=obj, content_type="application/apply-patch+yaml",
                                   query=[("fieldManager", self.field_manager), ("force", "true")])

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", self._path(api_version, kind, namespace, name))
        except NotFound:
            return None

    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete a child only if ``owner_uid`` is its controller (a same-named
        object of someone else's stays), guarded by the uid read (a replaced
        object is not deleted either).  True if deleted; absent → False."""
        if (api_version, kind) not in DELETABLE:
            raise KubeError(f"the operator does not delete {api_version} {kind}")
        obj = await self.get(api_version, kind, namespace, name)
        if obj is None:
            return False
        meta = obj["metadata"]
        if not any(o.get("controller") and o.get("uid") == owner_uid for o in meta.get("ownerReferences") or ()):
            log.info("not deleting %s %s/%s: not controlled by %s", kind, namespace, name, owner_uid)
            return False
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": meta["uid"]}}
        try:
            await self._request("DELETE", self._path(api_version, kind, namespace, name), body=body,
                                content_type="application/json")
        except NotFound:
            return False
        return True

    async def remove_custom_annotation(self, plural: str, namespace: str, name: str, key: str, value: str) -> bool:
        """Remove annotation ``key`` of a custom resource if it still says
        ``value``: a JSON patch whose ``test`` makes a user's newer value win
        (it is then acted on next pass).  False if it changed or is gone."""
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        body = [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]
        try:
            await self._request("PATCH", self._custom_path(plural, namespace, name), body=body,
                                content_type="application/json-patch+json")
            return True
        except KubeError as e:
            if e.status in (404, 409, 422):
                return False
            raise

    async def set_finalizer(self, api_version: str, kind: str, namespace: str, name: str, finalizer: str,
                            present: bool, *, attempts: int = 4) -> bool:
        """Add or remove one finalizer, keeping everyone else's: read, edit the
        list, write it back guarded by resourceVersion (a concurrent edit is a
        409 and we re-read).  False if the object does not exist."""
        path = self._path(api_version, kind, namespace, name)
        for attempt in range(1, attempts + 1):
            obj = await self.get(api_version, kind, namespace, name)
            if obj is None:
                return False
            meta = obj["metadata"]
            current = list(meta.get("finalizers") or [])
            if (finalizer in current) == present:
                return True
            wanted = current + [finalizer] if present else [f for f in current if f != finalizer]
            body = {"metadata": {"finalizers": wanted, "resourceVersion": meta["resourceVersion"]}}
            try:
                await self._request("PATCH", path, body=body, content_type="application/merge-patch+json")
                return True
            except NotFound:
                return False
            except KubeError as e:
                if e.status != 409 or attempt == attempts:
                    raise
        return False

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded.  Raises :class:`NotFound` naming it."""
        obj = await self._request("GET", self._path("v1", "Secret", namespace, name))
        data = obj.get("data") or {}
        out = {k: base64.b64decode(v).decode() for k, v in data.items()}
        out.update(obj.get("stringData") or {})
        return out

    # -- custom resources --------------------------------------------------------
    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", self._custom_path(plural, namespace, name))
        except NotFound:
            return None

    async def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        out = await self._request("GET", self._custom_path(plural, namespace))
        return list(out.get("items") or [])

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any],
                           *, resource_version: str | None = None) -> dict[str, Any] | None:
        """Merge-patch ``status`` through the status subresource.  With
        ``resource_version`` the write fails (409) if the object changed since
        it was read — callers that computed conditions from a read use it."""
        body: dict[str, Any] = {"status": _redacted(dict(status), self.redactor.secrets)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self._request("PATCH", self._custom_path(plural, namespace, name, "status"),
                                       body=body, content_type="application/merge-patch+json")
        except NotFound:
            return None
