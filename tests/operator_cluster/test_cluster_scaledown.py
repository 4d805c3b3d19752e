"""Decommission-aware scale-down on the real control plane (kube-apiserver,
controller-manager's StatefulSet controller, scheduler, kwok nodes), real etcd
and MinIO, and four real LogStore processes.

The pods of the StatefulSet are kwok's (no container runs), so the LogStores
are processes started by the test that register under the cluster's etcd
prefix with the node ids the pods would have (``<cluster>-server-<ordinal>``)
and loopback endpoints a writer can reach.  The operator does everything a
real scale-down needs through etcd and the LogStores — marks, the LogStores'
acknowledgements, the segment scan, compaction — and lowers the real
StatefulSet only when the leaving one holds nothing outside object storage.
A steady writer runs throughout: no append fails, every acknowledged entry
reads back after the leaving LogStore is killed with its disk wiped."""
from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from opcluster import (TcpProxy, Watch, condition, cr_path, dump, events, merge_patch, s3client, secret_body,
                       wait_condition, wait_for, wpc_body, writer_config)

pytestmark = pytest.mark.cluster
WPC = "woodpeckerclusters"


@pytest.fixture
def bucket(minio: Any) -> str:
    name = f"op-{uuid.uuid4().hex[:10]}"
    s3client(minio).create_bucket(Bucket=name)
    return name


def start_pod_logstores(workdir: Path, base: dict, cluster: str, n: int) -> list:
    """``n`` LogStore processes registered as the StatefulSet's pods would be."""
    from picchio_harness.logstores import LogStoreProc, logstore_config
    from picchio_harness.procs import free_port

    out = []
    for i in range(n):
        name = f"{cluster}-server-{i}"
        data = workdir / name
        data.mkdir(parents=True)
        port, http_port = free_port(), free_port()
        cfg = {**logstore_config(base, data, port, http_port), "woodpecker.logstore.nodeId": name}
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out.append(LogStoreProc(name, port, http_port, data, path, workdir / f"{name}.log").start())
    return out


class SteadyWriter:
    """A writer in a thread of its own (the operator has the test's loop):
    one append after another until stopped; failures are kept."""

    def __init__(self, cfg: dict, log: str) -> None:
        self.cfg, self.log = cfg, log
        self.acked: list[tuple[Any, bytes]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="steady-writer", daemon=True)
        self._thread.start()

    async def _main(self) -> None:
        import logstore

        async with logstore.Client(logstore.Config.from_dict(self.cfg)) as c:
            h = await c.create_log(self.log)
            async with await h.open_writer() as w:
                i = 0
                while not self._stop.is_set():
                    payload = b"e%06d" % i
                    try:
                        self.acked.append((await w.append(payload), payload))
                    except logstore.LogstoreError as e:
                        self.failures.append(repr(e))
                    i += 1
                    await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the writer did not close within 60 s"


def read_all(cfg: dict, log: str, n: int) -> list[tuple[Any, bytes]]:
    import logstore

    async def go() -> list:
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            r = await (await c.open_log(log)).open_reader(logstore.EARLIEST)
            out = []
            for _ in range(n):
                m = await r.read_next(timeout=10)
                out.append((m.id, m.payload))
            return out
    return asyncio.run(go())


def held(cfg: dict, endpoint: str) -> list:
    import logstore
    from logstore import decommission

    async def go() -> list:
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            return (await decommission.held(c.meta, [endpoint])).segments
    return asyncio.run(go())


def test_scale_down_4_to_3_decommissions_before_the_statefulset_is_lowered(
        api, ns, operator, kubectl, etcd, minio, bucket, tmp_path) -> None:
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    # plaintext: the LogStores here are loopback processes started before the operator issues spec.tls certificates
    body = wpc_body(ns, "sd", etcd.endpoint, minio.endpoint, bucket, mode="service", replicas=4,
                    tls={"enabled": False})
    base = writer_config(body, etcd.endpoint, minio)
    stores = start_pod_logstores(tmp_path / "logstores", base, "sd", 4)
    svc_cfg = {**base, "woodpecker.storage.type": "service",
               "woodpecker.client.segmentRollingPolicy.maxInterval": "2s"}
    writer = None
    try:
        api.call("POST", cr_path(WPC, ns), body)
        wait_condition(api, WPC, ns, "sd", "Ready", "True", timeout=120)
        writer = SteadyWriter(svc_cfg, "steady")
        wait_for("the writer to get going", lambda: len(writer.acked) >= 100, timeout=60)
        leaving = stores[3]
        rv = api.call("GET", cr_path(WPC, ns))["metadata"]["resourceVersion"]
        wpc_watch = Watch(api, cr_path(WPC, ns), resource_version=rv)
        sts_rv = api.call("GET", f"/apis/apps/v1/namespaces/{ns}/statefulsets")["metadata"]["resourceVersion"]
        sts_watch = Watch(api, f"/apis/apps/v1/namespaces/{ns}/statefulsets", resource_version=sts_rv)
        assert api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/sd-server")["spec"]["replicas"] == 4
        before, t0 = len(writer.acked), time.monotonic()
        # the kubelet's part, which this control plane has none of: the StatefulSet lowered, sd-server-3's
        # pod is terminated — SIGTERM, so its LogStore deregisters on the way out, as in a real pod.  Until
        # then it stays registered, and the operator keeps its mark (writers would choose it again)
        lowered_stop = threading.Event()

        def terminate_when_lowered() -> None:
            while not lowered_stop.is_set():
                try:
                    if api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/sd-server")["spec"]["replicas"] == 3:
                        leaving.stop()
                        return
                except Exception:  # noqa: BLE001 - the API server briefly unavailable: look again
                    pass
                lowered_stop.wait(0.05)

        terminator = threading.Thread(target=terminate_when_lowered, daemon=True)
        terminator.start()
        merge_patch(api, cr_path(WPC, ns, "sd"), {"spec": {"replicas": 3}})
        done = wait_condition(api, WPC, ns, "sd", "ScalingDown", "False", timeout=180, reason="ScaleDownComplete")
        lowered_stop.set()
        terminator.join(10)
        seconds, during = time.monotonic() - t0, len(writer.acked) - before
        wpc_watch.stop()
        sts_watch.stop()
        # the story the API server stored: waiting with counts, then removal, then done
        story: list[tuple[str, str]] = []
        flushed = 0
        for _t, obj in wpc_watch.types_and_objects():
            c = condition(obj, "ScalingDown")
            if c and (not story or story[-1] != (c["status"], c["reason"])):
                story.append((c["status"], c["reason"]))
            flushed = max(flushed, ((obj.get("status") or {}).get("scaleDown") or {}).get("segmentsToFlush") or 0)
        assert ("True", "Decommissioning") in story and story[-1] == ("False", "ScaleDownComplete"), story
        assert story.index(("True", "Decommissioning")) < story.index(("True", "RemovingLogStores")), story
        # the StatefulSet (4 when the spec changed) was lowered to 3 once, after every status that said
        # the leaving LogStore still held something (resourceVersions: one etcd behind both, so ordered)
        lowered = [int(o["metadata"]["resourceVersion"]) for _t, o in sts_watch.types_and_objects()
                   if o["metadata"]["name"] == "sd-server" and o["spec"]["replicas"] == 3]
        assert lowered and all(o["spec"]["replicas"] in (3, 4) for _t, o in sts_watch.types_and_objects())
        waiting = [int(o["metadata"]["resourceVersion"]) for _t, o in wpc_watch.types_and_objects()
                   if condition(o, "ScalingDown").get("reason") == "Decommissioning"]
        assert waiting and max(waiting) < min(lowered), (waiting, lowered)
        assert not done["status"].get("scaleDown")  # status.scaleDown removed once done
        assert held(base, leaving.endpoint) == []
        assert not leaving.proc.alive()  # terminated with its pod, before the mark could go
        # the pod is gone: so is its LogStore's disk; the writer does not notice
        leaving.kill()
        shutil.rmtree(leaving.data_dir, ignore_errors=True)
        n = len(writer.acked)
        wait_for("appends after the removal", lambda: len(writer.acked) >= n + 100, timeout=60)
        writer.stop()
        assert writer.failures == []
        assert read_all(svc_cfg, "steady", len(writer.acked)) == writer.acked
        reasons = [r for _t, r, _m in events(api, ns, "sd")]
        assert "Decommissioning" in reasons and "ScaleDownComplete" in reasons, reasons
        get = kubectl("get", "wpc", "sd", "-n", ns).stdout
        describe = kubectl("describe", "wpc", "sd", "-n", ns).stdout
        assert "ScaleDownComplete" in describe and "sd-server-3 decommissioned and removed; no PVCs" in describe, \
            describe
        print("SCALEDOWN_FIGURES " + json.dumps({"scaleDown": "4->3", "seconds": round(seconds, 1),
                                                 "ackedDuring": during, "lost": 0, "failedAppends": 0,
                                                 "maxSegmentsToFlush": flushed, "ackedTotal": len(writer.acked)}))
        print(get)
        print(describe[describe.find("Conditions:"):describe.find("Events:")])
        print("\n".join(f"{s} {r}" for s, r in story))
    except BaseException:
        print(dump(api.get(cr_path(WPC, ns, "sd"))))
        raise
    finally:
        if writer is not None and writer._thread.is_alive():
            writer._stop.set()
        for s in stores:
            s.stop()


def test_scale_up_during_a_scale_down_cancels_it(api, ns, operator, kubectl, etcd, minio, bucket, tmp_path) -> None:
    """The LogStores cannot reach object storage (a relay in front of MinIO
    refuses), so the segment the idle writer seals off the leaving LogStore
    cannot be compacted and the scale-down waits (the condition says so);
    raising spec.replicas back removes the mark (it takes appends again) and
    the StatefulSet never went down."""
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    # plaintext: the LogStores here are loopback processes started before the operator issues spec.tls certificates
    body = wpc_body(ns, "cx", etcd.endpoint, minio.endpoint, bucket, mode="service", replicas=4,
                    tls={"enabled": False})
    base = writer_config(body, etcd.endpoint, minio)
    s3_relay = TcpProxy(minio.host, minio.port)
    stores = start_pod_logstores(tmp_path / "logstores", {**base, "minio.port": s3_relay.port}, "cx", 4)
    svc_cfg = {**base, "woodpecker.storage.type": "service"}
    idle = None
    try:
        api.call("POST", cr_path(WPC, ns), body)
        wait_condition(api, WPC, ns, "cx", "Ready", "True", timeout=120)
        idle = _IdleWriter(svc_cfg, stores[3].endpoint)  # an Active segment on the LogStore that will leave
        s3_relay.set_mode("refuse")
        merge_patch(api, cr_path(WPC, ns, "cx"), {"spec": {"replicas": 3}})
        o = wait_condition(api, WPC, ns, "cx", "ScalingDown", "True", timeout=60, reason="Decommissioning")
        sd = o["status"]["scaleDown"]
        assert sd["segmentsToFlush"] >= 1 and sd["logStoresWaiting"] == 1, sd
        wait_for("the idle writer to seal its segment off the leaving LogStore (compaction cannot follow)",
                 lambda: (api.get(cr_path(WPC, ns, "cx"))["status"].get("scaleDown") or {}).get("activeSegments") == 0,
                 timeout=30)
        msg = condition(api.get(cr_path(WPC, ns, "cx")), "ScalingDown")["message"]
        assert "completed, being compacted" in msg and "cx-server-3" in msg, msg
        row = kubectl("get", "wpc", "cx", "-n", ns).stdout
        assert row.splitlines()[1].split()[5:7] == ["Draining", "1"], row  # SCALEDOWN, TOFLUSH
        print(row + msg)
        wait_for("the leaving LogStore to refuse appends",
                 lambda: ((api.get(cr_path(WPC, ns, "cx"))["status"].get("scaleDown") or {}).get("leaving")
                          or [{}])[0].get("state") == "refusing", timeout=30)
        assert api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/cx-server")["spec"]["replicas"] == 4
        merge_patch(api, cr_path(WPC, ns, "cx"), {"spec": {"replicas": 4}})
        o = wait_condition(api, WPC, ns, "cx", "ScalingDown", "False", timeout=60, reason="ScaleDownCancelled")
        assert not o["status"].get("scaleDown")
        assert "cx-server-3" in condition(o, "ScalingDown")["message"]
        wait_for("the LogStore to take appends again", lambda: _registration(base, "cx-server-3").get(
            "decommissioning") is False, timeout=30)
    except BaseException:
        print(dump(api.get(cr_path(WPC, ns, "cx"))))
        raise
    finally:
        s3_relay.set_mode("forward")
        if idle is not None:
            idle.close()
        for s in stores:
            s.stop()
        s3_relay.close()


class _IdleWriter:
    """Writers that append one entry each and then nothing, opened until one
    of them has its (Active) segment on ``endpoint``."""

    def __init__(self, cfg: dict, endpoint: str) -> None:
        import logstore

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def open_() -> tuple:
            c = logstore.Client(logstore.Config.from_dict(cfg))
            await c.start()
            writers = []
            for i in range(30):
                w = await (await c.create_log(f"idle-{i}")).open_writer()
                await w.append(b"one")
                writers.append(w)
                seg = (await c.meta.segments(f"idle-{i}"))[-1].value
                if endpoint in seg.quorum.nodes:
                    return c, writers
            raise AssertionError(f"no ensemble on {endpoint} in 30 tries")
        self.c, self.writers = self._run(open_())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def close(self) -> None:
        async def close_() -> None:
            for w in self.writers:
                await w.close()
            await self.c.close()
        self._run(close_())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _registration(cfg: dict, node_id: str) -> dict:
    import logstore
    from logstore.server.membership import live_logstores

    async def go() -> dict:
        async with logstore.Client(logstore.Config.from_dict(cfg)) as c:
            return next((r for r in await live_logstores(c.meta) if r["nodeId"] == node_id), {})
    return asyncio.run(go())
