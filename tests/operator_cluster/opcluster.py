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


# -- reading objects ------------------------------------------------------------------
def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_condition(api: Api, plural: str, ns: str, name: str, type_: str, status: str, timeout: float = 90,
                   reason: str | None = None) -> dict:
    """Poll until condition ``type_`` has ``status`` (and ``reason``); the
    object then.  On timeout the assertion shows the whole object."""

    def check() -> dict | None:
        o = api.get(cr_path(plural, ns, name))
        c = condition(o, type_)
        return o if c.get("status") == status and (reason is None or c.get("reason") == reason) else None
    try:
        return wait_for(f"{plural}/{name} {type_}={status} {reason or ''}", check, timeout)
    except AssertionError:
        raise AssertionError(f"{type_} never became {status}/{reason}: {dump(api.get(cr_path(plural, ns, name)))}") \
            from None


def events(api: Api, ns: str, name: str | None = None) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the real Event objects about ``name``, oldest first."""
    items = api.call("GET", f"/api/v1/namespaces/{ns}/events")["items"]
    items.sort(key=lambda e: (e.get("firstTimestamp") or e.get("eventTime") or "", e["metadata"]["name"]))
    return [(e["type"], e["reason"], e.get("message") or "") for e in items
            if name is None or e["involvedObject"]["name"] == name]


def kopf_progress(obj: dict | None) -> dict[str, dict]:
    """kopf's per-handler progress records (annotations ``picchio.dev/<handler>``:
    started, retries, delayed, message …).  kopf removes them once every
    handler of a cause succeeded; a handler that raised a TemporaryError keeps
    its record with ``retries`` and ``delayed``."""
    out: dict[str, dict] = {}
    for key, value in (((obj or {}).get("metadata") or {}).get("annotations") or {}).items():
        if not key.startswith("picchio.dev/") or key.endswith("last-handled-configuration"):
            continue
        try:
            rec = json.loads(value)
        except ValueError:
            continue
        if isinstance(rec, dict) and ("started" in rec or "retries" in rec):
            out[key.split("/", 1)[1]] = rec
    return out


def settled(api, ns: str, name: str, plural: str = "woodpeckerclusters") -> dict:
    """The object once kopf has finished with its last change: no handler
    progress left and the diff base recorded (kopf writes both after the
    handlers succeed; a later pass must find nothing to do)."""
    def check() -> dict | None:
        o = api.get(cr_path(plural, ns, name))
        ann = (o or {}).get("metadata", {}).get("annotations") or {}
        return o if o and not kopf_progress(o) and "picchio.dev/last-handled-configuration" in ann else None
    return wait_for(f"kopf done with {plural}/{name}", check, timeout=60)


def secret_body(ns: str, name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "stringData": data}


def s3client(minio: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=minio.endpoint, aws_access_key_id=minio.access_key,
                        aws_secret_access_key=minio.secret_key, region_name="us-east-1")


def bucket_keys(minio: Any, bucket: str, prefix: str) -> list[str]:
    """Every object key under ``prefix`` (MinIO, listed directly)."""
    pages = s3client(minio).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def etcd_keys(endpoint: str, prefix: str, username: str | None = None, password: str | None = None) -> dict[str, bytes]:
    """Every key under ``prefix`` in etcd, with its value."""
    import asyncio

    import aetcd

    async def go() -> dict[str, bytes]:
        host, port = endpoint.rsplit(":", 1)
        async with aetcd.Client(host=host, port=int(port), username=username, password=password, timeout=5) as c:
            return {bytes(kv.key).decode(): bytes(kv.value) for kv in await c.get_prefix(prefix.encode())}
    return asyncio.run(go())


class EventLog:
    """Where a handler called directly (outside kopf, for a deterministic
    second pass) posts its events: the operator's own Events posts through
    kopf's queue, which exists only inside a running operator."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def info(self, body: Any, reason: str, message: str) -> None:
        self.events.append(("Normal", reason, message))

    def warn(self, body: Any, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))


# -- a watch ----------------------------------------------------------------------------
class Watch:
    """Every event of a real watch on a list path (``?watch=1``), collected in
    a thread: unlike polling, no state the API server went through is missed.
    ``types_and_objects()`` returns what arrived; an error in the stream is
    raised there, never swallowed."""

    def __init__(self, api: Api, path: str, resource_version: str | None = None,
                 field_selector: str | None = None, timeout_seconds: int = 900) -> None:
        import threading

        self._kube = api._kube
        self.events: list[tuple[str, dict]] = []
        self.error: BaseException | None = None
        self._resp: Any = None
        self._stopped = threading.Event()
        q: list[tuple[str, Any]] = [("watch", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            q.append(("resourceVersion", resource_version))
        if field_selector:
            q.append(("fieldSelector", field_selector))
        m, url, hdrs, _b, _p = self._kube.api.param_serialize(
            method="GET", resource_path=path, query_params=q, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self._kube.api.call_api(m, url, header_params=hdrs, _request_timeout=(5.0, timeout_seconds + 30.0))
        if resp.status != 200:
            raise AssertionError(f"watch {path}: HTTP {resp.status} {resp.response.data[:300]!r}")
        self._resp = resp.response
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        try:
            for chunk in self._resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":
                            raise AssertionError(f"watch error: {ev['object']}")
                        self.events.append((ev["type"], ev["object"]))
        except BaseException as e:  # noqa: BLE001 - reported by types_and_objects()
            if not self._stopped.is_set():
                self.error = e

    def types_and_objects(self) -> list[tuple[str, dict]]:
        if self.error is not None:
            raise AssertionError(f"the watch failed: {self.error!r}") from self.error
        return list(self.events)

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._resp.shutdown()
        except Exception:  # noqa: BLE001 - already closed
            pass
        self._resp.release_conn()


# -- a switchable TCP relay ------------------------------------------------------------------
class TcpProxy:
    """A loopback TCP relay in front of a real server, whose mode a test
    switches: ``forward`` relays bytes both ways; ``hold`` accepts and never
    answers (a hung server: the client's read timeout fires); ``refuse``
    accepts and closes at once (a dead server).  Switching the mode cuts every
    open connection, so pooled keep-alive connections cannot bypass it.
    ``accepted[mode]`` counts connections per mode."""

    def __init__(self, host: str, port: int) -> None:
        import socket
        import threading

        self.target = (host, port)
        self.mode = "forward"
        self.accepted = {"forward": 0, "hold": 0, "refuse": 0}
        self._open: list[Any] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in self.accepted, mode
        with self._lock:
            self.mode = mode
            conns, self._open = self._open, []
        for c in conns:
            self._kill(c)

    @staticmethod
    def _kill(s: Any) -> None:
        import socket

        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closed:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                self.accepted[mode] += 1
                if mode == "refuse":
                    self._kill(c)
                    continue
                self._open.append(c)
            if mode == "forward":
                try:
                    up = socket.create_connection(self.target, timeout=5)
                    up.settimeout(None)
                except OSError:
                    self._kill(c)
                    continue
                with self._lock:
                    self._open.append(up)
                for a, b in ((c, up), (up, c)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._kill(src)
            self._kill(dst)

    def close(self) -> None:
        self._closed = True
        self._kill(self._sock)
        self.set_mode("refuse")


# -- objects of the tests ----------------------------------------------------------------
def wpc_body(ns: str, name: str, etcd_endpoint: str, s3_endpoint: str, bucket: str, *, mode: str = "embedded",
             secret: str | None = "s3", policy: str = "Delete", root: str | None = None, **spec: Any) -> dict:
    """A WoodpeckerCluster whose etcd root and bucket prefix belong to this test."""
    storage = {"endpoint": s3_endpoint, "bucket": bucket, "rootPath": root or name, "createBucket": True}
    if secret:
        storage["credentialsSecret"] = secret
    body = {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"mode": mode, "etcd": {"endpoints": [etcd_endpoint], "rootPath": f"{ns}-{name}"},
                     "storage": storage, "deletionPolicy": policy}}
    for key, value in spec.items():
        body["spec"][key] = value
    return body


def wplog_body(ns: str, name: str, cluster: str, **spec: Any) -> dict:
    return {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterRef": cluster, **spec}}


def writer_config(body: dict, etcd_endpoint: str, minio: Any, **overrides: Any) -> dict:
    """A logstore client's configuration for the cluster ``body`` describes,
    talking to MinIO directly (not through any proxy the operator is given)."""
    spec = body["spec"]
    cfg = {"etcd.endpoints": [etcd_endpoint], "etcd.rootPath": spec["etcd"]["rootPath"],
           "woodpecker.storage.type": "minio", "minio.address": minio.host, "minio.port": minio.port,
           "minio.accessKeyID": minio.access_key, "minio.secretAccessKey": minio.secret_key,
           "minio.bucketName": spec["storage"]["bucket"], "minio.rootPath": spec["storage"]["rootPath"]}
    cfg.update(overrides)
    return cfg


def write_entries(cfg: dict, log: str, n: int, prefix: bytes = b"e") -> list:
    """Append ``n`` entries to ``log`` (created if missing); their MessageIds."""
    import asyncio

    import logstore

    async def go() -> list:
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            h = await (c.open_log(log) if await c.log_exists(log) else c.create_log(log))
            async with await h.open_writer() as w:
                return [await w.append(prefix + b"-%03d" % i) for i in range(n)]
    return asyncio.run(go())


def read_entries(cfg: dict, log: str, start: Any = None, timeout: float = 3.0) -> list[bytes]:
    """Every payload of ``log`` from ``start`` (default: the earliest) until
    nothing arrives for ``timeout`` seconds."""
    import asyncio

    import logstore

    async def go() -> list[bytes]:
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            h = await c.open_log(log)
            r = await h.open_reader(start if start is not None else logstore.EARLIEST)
            out = []
            try:
                while True:
                    out.append((await r.read_next(timeout=timeout)).payload)
            except TimeoutError:
                pass
            await r.close()
            return out
    return asyncio.run(go())


def log_names(cfg: dict) -> list[str]:
    import asyncio

    import logstore

    async def go() -> list[str]:
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            return sorted(await c.list_logs(""))
    return asyncio.run(go())


def merge_patch(api: Api, path: str, patch: dict) -> Any:
    return api.call("PATCH", path, patch, "application/merge-patch+json")


def set_finalizers(api: Api, path: str, edit: Any) -> None:
    """Replace metadata.finalizers with ``edit(current)``, guarded by the
    resourceVersion read (a concurrent writer makes it a 409 and we re-read)."""
    from picchio_operator.adapters.kube import KubeError

    for _ in range(10):
        o = api.call("GET", path)
        try:
            merge_patch(api, path, {"metadata": {"finalizers": edit(list(o["metadata"].get("finalizers") or [])),
                                                 "resourceVersion": o["metadata"]["resourceVersion"]}})
            return
        except KubeError as e:
            if e.status != 409:
                raise
    raise AssertionError(f"could not edit the finalizers of {path}: 10 conflicts")
