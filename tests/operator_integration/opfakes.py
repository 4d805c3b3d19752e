"""An in-memory stand-in for the operator's Kubernetes adapter, so handler
passes can run against real etcd and S3 without an API server.

It implements only the methods of ``picchio_operator.adapters.kube.Kube`` the
handlers call, with the API server's semantics that matter to them: uid and
generation on objects, merge-patch of status, 404 as None.  The cluster tier
(tests/operator_cluster) covers the real API server."""
from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Mapping
from typing import Any

from picchio_operator.adapters.kube import NotFound


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.status_writes = 0

    # helpers for tests
    def put(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("resourceVersion", "1")
        self.objects[(key, meta["namespace"], meta["name"])] = obj
        return obj

    def obj(self, key: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((key, namespace, name)))

    def secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.put("Secret", {"metadata": {"namespace": namespace, "name": name}, "stringData": data})

    # the adapter's interface
    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.applied.append(copy.deepcopy(dict(obj)))
        key = obj["kind"]
        meta = obj["metadata"]
        old = self.objects.get((key, meta["namespace"], meta["name"]))
        new = copy.deepcopy(dict(obj))
        new["metadata"]["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
        new["metadata"]["generation"] = (old["metadata"]["generation"] + (old.get("spec") != new.get("spec"))) if old else 1
        if old and "status" in old:
            new["status"] = old["status"]
        self.objects[(key, meta["namespace"], meta["name"])] = new
        return copy.deepcopy(new)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj(kind, namespace, name)

    async def set_finalizer(self, api_version: str, kind: str, namespace: str, name: str, finalizer: str,
                            present: bool, *, attempts: int = 4) -> bool:
        o = self.objects.get((kind, namespace, name))
        if o is None:
            return False
        fins = o["metadata"].setdefault("finalizers", [])
        if present and finalizer not in fins:
            fins.append(finalizer)
        if not present and finalizer in fins:
            fins.remove(finalizer)
        return True

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        s = self.objects.get(("Secret", namespace, name))
        if s is None:
            raise NotFound(f"GET secrets/{name}: 404", 404)
        out = {key: base64.b64decode(v).decode() for key, v in (s.get("data") or {}).items()}
        out.update(s.get("stringData") or {})
        return out

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj(plural, namespace, name)

    async def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (p, ns, _), o in self.objects.items() if p == plural and ns == namespace]

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any],
                           *, resource_version: str | None = None) -> dict[str, Any] | None:
        o = self.objects.get((plural, namespace, name))
        if o is None:
            return None
        o["status"] = merge_patch(o.get("status") or {}, dict(status))
        self.status_writes += 1
        return copy.deepcopy(o)


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def info(self, body: Any, reason: str, message: str) -> None:
        self.events.append(("Normal", reason, message))

    def warn(self, body: Any, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]
