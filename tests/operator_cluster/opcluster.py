"""Helpers of the operator's cluster tier (a plain module, so it never
collides with the other conftest.py files)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from picchio_harness.procs import wait_for  # noqa: F401 - re-exported for the test modules

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "e2e", ROOT / "operator", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

CRD_NAMES = ["woodpeckerclusters.picchio.dev", "woodpeckerlogs.picchio.dev",
             "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]



class Api:
    """Raw JSON access to the API server (the client's typed models validate
    strictly and drop fields; tests want exactly what the server said)."""

    def __init__(self, api: Any) -> None:
        from picchio_operator.adapters.kube import Kube

        self._kube = Kube(api, timeout=(5.0, 20.0))

    def call(self, method: str, path: str, body: Any = None, content_type: str | None = None,
             query: list | None = None) -> Any:
        ct = content_type or ("application/json" if body is not None else None)
        return self._kube._request_sync(method, path, body=body, content_type=ct, query=query)

    def status_code(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> tuple[int, str]:
        from picchio_operator.adapters.kube import KubeError

        try:
            self.call(method, path, body, content_type)
            return 200, ""
        except KubeError as e:
            return e.status or 0, str(e)

    def get(self, path: str) -> Any:
        from picchio_operator.adapters.kube import NotFound

        try:
            return self.call("GET", path)
        except NotFound:
            return None

    def apply(self, path: str, obj: dict, manager: str = "test") -> Any:
        return self.call("PATCH", path, obj, "application/apply-patch+yaml",
                         query=[("fieldManager", manager), ("force", "true")])


def cr_path(plural: str, ns: str, name: str | None = None, sub: str | None = None) -> str:
    p = f"/apis/picchio.dev/v1alpha1/namespaces/{ns}/{plural}"
    return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")



def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
