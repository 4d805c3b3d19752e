"""A service-mode WoodpeckerCluster with real LogStore pods, end to end:
Ready, in-cluster clients write and read, retention/GC, a LogStore pod killed
during writes, scale, a rolling config change that keeps the ack quorum, and
deletion policies.  The tests run in file order and share one cluster."""
from __future__ import annotations

import re
import time
import uuid

import pytest
import yaml
from kube import (PROJECT_IMAGE, PULL_POLICY, ROOT, TEST_NS, KubectlWatch, apply, condition, crash_container, get,
                  kubectl, pod_ready, wait_for)

NAME = "wal"
SELECTOR = f"app.kubernetes.io/instance={NAME}"
STS = f"{NAME}-server"
ACK_QUORUM = 2
CLIENT_TLS = f"{NAME}-client-tls"    # the operator's writer certificate for applications
READER_TLS = f"{NAME}-reader-tls"    # ... and the read-only one


def wpc_manifest() -> dict:
    """manifests/samples/cluster-service.yaml, in the test namespace, with the
    project image and requests that fit a 2-core machine."""
    o = yaml.safe_load((ROOT / "manifests/samples/cluster-service.yaml").read_text())
    o["metadata"]["namespace"] = TEST_NS
    o["spec"].update({
        "image": PROJECT_IMAGE,
        "imagePullPolicy": PULL_POLICY,
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "storageSize": "1Gi",
    })
    # local-path volumes live on the node's (here: the host's) file system, whose
    # fill level is not ours: give the LogStores a staging budget of their own.
    o["spec"]["config"].setdefault("woodpecker", {})["logstore"] = {"disk": {"maxBytes": "512M"}}
    return o


@pytest.fixture(scope="module")
def cluster(installed):
    apply(wpc_manifest())
    yield NAME


# ---------------------------------------------------------------- client Jobs

_job_seq = iter(range(1, 10_000))
_run = uuid.uuid4().hex[:5]


def start_job(script_args: list[str], name: str | None = None, env: dict[str, str] | None = None,
              command: list[str] | None = None, tls_secret: str = CLIENT_TLS, config_map: str = "e2e-client") -> str:
    """A Job running the project image with e2e_client.py and the cluster's
    client configuration (ConfigMap e2e-client, a copy of <name>-client), the
    S3 credentials from the Secret and the client certificate Secret the
    operator issued (``<name>-client-tls``: role writer) at the path the
    ConfigMap names, labelled as a client of the cluster — as an application
    would be."""
    name = name or f"client-{_run}-{next(_job_seq)}"
    envs = [{"name": "PICCHIO_CONFIG", "value": "/etc/picchio/woodpecker.yaml"},
            {"name": "PICCHIO_MINIO_ACCESSKEYID", "valueFrom": {"secretKeyRef": {"name": "picchio-s3", "key": "accessKeyID"}}},
            {"name": "PICCHIO_MINIO_SECRETACCESSKEY",
             "valueFrom": {"secretKeyRef": {"name": "picchio-s3", "key": "secretAccessKey"}}}]
    envs += [{"name": k, "value": v} for k, v in (env or {}).items()]
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": TEST_NS},
        "spec": {
            "backoffLimit": 0, "activeDeadlineSeconds": 300, "ttlSecondsAfterFinished": 600,
            "template": {"metadata": {"labels": {"app": "e2e-client", "picchio.dev/client": NAME}}, "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "client", "image": PROJECT_IMAGE, "imagePullPolicy": PULL_POLICY,
                    "command": command or ["python", "/scripts/e2e_client.py", *script_args],
                    "env": envs,
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/picchio"},
                                     {"name": "scripts", "mountPath": "/scripts"},
                                     {"name": "tls", "mountPath": "/etc/picchio-tls/client", "readOnly": True}],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }],
                "volumes": [{"name": "config", "configMap": {"name": config_map}},
                            {"name": "scripts", "configMap": {"name": "e2e-scripts"}},
                            # optional: the last test lists what is left after the cluster (and its Secrets) went
                            {"name": "tls", "secret": {"secretName": tls_secret, "optional": True}}],
            }},
        },
    }
    apply(job)
    return name


def job_logs(name: str) -> str:
    return kubectl("logs", f"job/{name}", "-n", TEST_NS, "--tail=-1", check=False).stdout


def wait_job(name: str, timeout: float = 240, ok: bool = True) -> str:
    """Wait until the Job finished; return its output.  ``ok``: it must have succeeded."""
    def done():
        j = get("job", name)
        st = (j or {}).get("status") or {}
        return "ok" if st.get("succeeded") else "failed" if st.get("failed") else None
    res = wait_for(f"job {name} to finish", done, timeout=timeout, interval=2)
    out = job_logs(name)
    if ok:
        assert res == "ok", f"job {name} failed:\n{out}"
    return out


def run_job(script_args: list[str], timeout: float = 240, **kw) -> str:
    return wait_job(start_job(script_args, **kw), timeout=timeout)


def acked(out: str) -> dict[str, str]:
    """payload -> id of every acknowledged append in a writer's output."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^ACK \d+ (\S+) (\S+)$", out, re.MULTILINE)}


def read_back(out: str) -> list[tuple[str, str]]:
    return re.findall(r"^READ (\S+) (\S+)$", out, re.MULTILINE)


def wpc() -> dict:
    return get("wpc", NAME)


def ready_pods() -> list[str]:
    pods = (get("pods", selector=SELECTOR) or {"items": []})["items"]
    return sorted(p["metadata"]["name"] for p in pods if pod_ready(p))


def wait_cluster_ready(replicas: int, timeout: float = 240) -> dict:
    def check():
        o = wpc()
        st = (o or {}).get("status") or {}
        if condition(o, "Ready").get("status") == "True" and st.get("readyReplicas") == replicas \
                and len(ready_pods()) == replicas:
            return o
        return None
    return wait_for(f"wpc/{NAME} Ready with {replicas} ready LogStores", check, timeout=timeout, interval=2)


# ---------------------------------------------------------------- tests


def test_service_cluster_becomes_ready_with_real_pods(cluster) -> None:
    o = wait_cluster_ready(3, timeout=300)
    out = kubectl("get", "wpc", NAME, "-n", TEST_NS).stdout
    row = out.splitlines()[1].split()
    assert row[:5] == [NAME, "service", "3", "3", "Ready"], out
    pods = get("pods", selector=SELECTOR)["items"]
    assert len(pods) == 3 and all(p["spec"]["containers"][0]["image"] == PROJECT_IMAGE for p in pods)
    assert len({p["spec"]["nodeName"] for p in pods}) >= 1
    # the client Service exists with its port, and has the 3 LogStores behind it
    svc = get("service", f"{NAME}-server-client")
    assert svc["spec"]["ports"][0]["port"] == 18080
    eps = get("endpoints", f"{NAME}-server-client")
    addrs = [a for s in eps.get("subsets") or [] for a in s.get("addresses") or []]
    assert len(addrs) == 3, eps
    assert o["status"].get("clientConfigMap", f"{NAME}-client") == f"{NAME}-client"
    # the applications' configuration: copied for the client Jobs (it outlives the cluster in the last test)
    cm = get("configmap", f"{NAME}-client")
    text = cm["data"]["woodpecker.yaml"]
    assert yaml.safe_load(text)["woodpecker"]["storage"]["type"] == "service"
    # TLS is on by default in service mode: the operator's PKI, the LogStores demanding client certificates
    assert condition(o, "TLSReady").get("status") == "True", o["status"].get("conditions")
    for secret in (f"{NAME}-cluster-ca", f"{NAME}-logstore-tls", CLIENT_TLS, READER_TLS):
        assert get("secret", secret), secret
    tls = yaml.safe_load(text)["woodpecker"]["logstore"]["tls"]
    assert tls["enabled"] is True and tls["clientCertFile"].startswith("/etc/picchio-tls/client/"), tls
    server_tls = yaml.safe_load(get("configmap", f"{NAME}-config")["data"]["woodpecker.yaml"])["woodpecker"][
        "logstore"]["tls"]
    assert server_tls["enabled"] is True and server_tls["requireClientCert"] is True, server_tls
    apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e2e-client", "namespace": TEST_NS},
           "data": {"woodpecker.yaml": text}})


def test_client_job_writes_and_reads_through_logstores(cluster) -> None:
    w = run_job(["write", "basic", "50", "--prefix", "basic"])
    ids = acked(w)
    assert len(ids) == 50, w
    r = run_job(["read", "basic"])
    got = read_back(r)
    assert [p for _, p in got] == [f"basic-{i:06d}" for i in range(50)], r
    assert [i for i, _ in got] == [ids[p] for _, p in got]
    # the same through the command line applications use
    cli = "picchio --config /etc/picchio/woodpecker.yaml"
    script = (f"{cli} log create cli\n"
              f"seq 1 20 | sed 's/^/cli-/' | {cli} log append cli\n"
              f"echo READS; {cli} log read cli --timeout 5\n"
              f"{cli} --json log stat cli")
    out = run_job([], command=["sh", "-ec", script])
    reads = out.split("READS", 1)[1]
    assert [ln.split("\t")[1] for ln in reads.splitlines() if "\t" in ln] == [f"cli-{i}" for i in range(1, 21)], out
    assert '"lastId"' in out, out


def test_without_a_writer_certificate_the_logstores_refuse(cluster) -> None:
    """The reader's certificate reads but may not append (authorization by the
    certificate's role); a pod with the CA but no client certificate of its
    own is refused at the TLS handshake.  Both fail with a typed error, not a
    hang: the writer Job's append deadline is short."""
    r = run_job(["read", "basic"], tls_secret=READER_TLS)
    assert len(read_back(r)) == 50, r
    w = wait_job(start_job(["write", "basic", "1", "--prefix", "denied", "--deadline", "20", "--append-timeout", "15"],
                           tls_secret=READER_TLS), ok=False)
    assert re.search(r"^ERR 0 PermissionDeniedError: .*reader", w, re.MULTILINE), w
    assert "ACK " not in w, w
    # no certificate: a copy of the client configuration without clientCertFile/clientKeyFile
    cfg = yaml.safe_load(get("configmap", f"{NAME}-client")["data"]["woodpecker.yaml"])
    for key in ("clientCertFile", "clientKeyFile"):
        cfg["woodpecker"]["logstore"]["tls"].pop(key)
    apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e2e-client-nocert", "namespace": TEST_NS},
           "data": {"woodpecker.yaml": yaml.safe_dump(cfg)}})
    w = wait_job(start_job(["write", "basic", "1", "--prefix", "nocert", "--deadline", "20", "--append-timeout", "15"],
                           config_map="e2e-client-nocert"), ok=False)
    m = re.search(r"^ERR 0 (\w+): ", w, re.MULTILINE)
    assert m and m.group(1) != "TimeoutError" and "ACK " not in w, w  # refused, not left hanging
    assert len(read_back(run_job(["read", "basic"]))) == 50  # nothing was added by either


def served_serials() -> dict[str, str]:
    """The serial number each LogStore pod serves on its gRPC port now."""
    targets = [f"{STS}-{i}.{NAME}-server-headless.{TEST_NS}.svc:18080" for i in range(3)]
    out = run_job(["served-cert", *targets])
    return dict(re.findall(r"^CERT (\S+) (\S+) ", out, re.MULTILINE))


def test_certificate_rotation_under_a_steady_writer_loses_nothing(cluster) -> None:
    """``picchio.dev/renew-certificates`` renews every leaf certificate while a
    writer appends: the LogStores load the new one in place (no restart, so
    the ack quorum is never at risk), the writer sees no error, and
    everything it acknowledged reads back."""
    before = served_serials()
    assert len(before) == 3, before
    old_secret = get("secret", f"{NAME}-logstore-tls")["data"]["tls.crt"]
    pods = {p["metadata"]["name"]: (p["metadata"]["uid"], p["status"]["containerStatuses"][0].get("restartCount", 0))
            for p in get("pods", selector=SELECTOR)["items"]}
    n = 3000
    job = start_job(["write", "rotation", str(n), "--prefix", "rot", "--interval", "0.05", "--deadline", "280"])
    wait_for("the writer has acknowledged entries", lambda: len(acked(job_logs(job))) >= 50, timeout=120, interval=1)
    kubectl("annotate", "wpc", NAME, "-n", TEST_NS, "picchio.dev/renew-certificates=true")
    wait_for("the LogStore certificate renewed in its Secret",
             lambda: get("secret", f"{NAME}-logstore-tls")["data"]["tls.crt"] != old_secret, timeout=120)
    t0 = time.monotonic()
    after = wait_for("every LogStore serving the renewed certificate (kubelet refresh, then reload in place)",
                     lambda: (lambda s: s if len(s) == 3 and not set(s.values()) & set(before.values()) else None)(
                         served_serials()), timeout=240, interval=5)
    print(f"rotation: every LogStore served the new certificate {time.monotonic() - t0:.0f}s after the Secret changed")
    assert len(acked(job_logs(job))) < n, "the writer finished before the rotation reached the LogStores: slow it"
    assert "picchio.dev/renew-certificates" not in (wpc()["metadata"].get("annotations") or {})
    now = {p["metadata"]["name"]: (p["metadata"]["uid"], p["status"]["containerStatuses"][0].get("restartCount", 0))
           for p in get("pods", selector=SELECTOR)["items"]}
    assert now == pods, f"LogStores restarted or replaced for a certificate renewal: {pods} -> {now}"
    w = wait_job(job, timeout=320, ok=False)
    m = re.search(r"^DONE acked=(\d+) errors=(\d+)$", w, re.MULTILINE)
    assert m and (int(m.group(1)), int(m.group(2))) == (n, 0), w[-3000:]
    ids = acked(w)
    reads = read_back(run_job(["read", "rotation"]))
    assert [p for _, p in reads] == [f"rot-{i:06d}" for i in range(n)]
    assert all(dict((p, i) for i, p in reads)[p] == i for p, i in ids.items())
    assert condition(wpc(), "TLSReady").get("status") == "True"
    assert after != before


def test_retention_truncates_and_gc_reclaims_from_minio(cluster) -> None:
    # small segments: the writer rolls a segment every 2 blocks (client-side policy)
    env = {"PICCHIO_WOODPECKER_CLIENT_SEGMENTROLLINGPOLICY_MAXBLOCKS": "2"}
    w = run_job(["write", "retained", "40", "--prefix", "ret"], env=env)
    ids = acked(w)
    assert len(ids) == 40, w
    log = {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog",
           "metadata": {"name": "retained", "namespace": TEST_NS},
           "spec": {"clusterRef": NAME, "logName": "retained", "gc": {"intervalSeconds": 5},
                    "deletionPolicy": "Delete"}}
    apply(log)
    def listed():
        o = get("wplog", "retained")
        return o if condition(o, "Ready").get("status") == "True" and (o["status"].get("segments") or 0) >= 3 else None
    first = wait_for("wplog/retained Ready with its segments", listed, timeout=120)
    segs_before = first["status"]["segments"]
    log_id = first["status"]["logId"]
    objs_before = run_job(["objects", ""])
    wm = ids["ret-000029"]
    kubectl("patch", "wplog", "retained", "-n", TEST_NS, "--type=merge", "-p", f'{{"spec":{{"truncateTo":"{wm}"}}}}')

    def collected():
        o = get("wplog", "retained")
        st = o.get("status") or {}
        if st.get("truncatedId") == wm and (st.get("reclaimedBytes") or 0) > 0 and st.get("segmentsAwaitingGc") == 0:
            return o
        return None
    o = wait_for("truncated segments garbage-collected", collected, timeout=120, interval=2)
    assert o["status"]["segments"] < segs_before, o["status"]
    out = kubectl("get", "wplog", "retained", "-n", TEST_NS).stdout
    row = out.splitlines()[1].split()
    assert row[:3] == ["retained", NAME, "retained"] and row[3] == str(o["status"]["segments"]) and row[5] == wm, out
    # the objects of the collected segments are gone from MinIO, the rest is there
    objs_after = run_job(["objects", ""])
    n_before = int(re.search(r"DONE objects=(\d+)", objs_before).group(1))
    n_after = int(re.search(r"DONE objects=(\d+)", objs_after).group(1))
    assert n_after < n_before, (objs_before, objs_after)
    first_seg = int(wm.split(":")[0])
    left = {int(m) for m in re.findall(rf"^OBJ \S*/{log_id}/(\d+)/", objs_after, re.MULTILINE)}
    assert left and min(left) > first_seg, (wm, objs_after)   # segments <= the watermark's: deleted
    assert o["status"]["reclaimedSegments"] >= first_seg + 1, o["status"]
    # entries after the watermark still read back
    r = run_job(["read", "retained"])
    got = [p for _, p in read_back(r)]
    assert got and got[-1] == "ret-000039" and "ret-000000" not in got, r


def test_crashing_a_logstore_during_writes_loses_nothing_acked_and_errs_nothing(cluster) -> None:
    """A LogStore's process is SIGKILLed (from its node: no SIGTERM, no drain)
    while a writer appends.  The README's promise for one dead LogStore is
    "no error": every append is acknowledged by the other two, the writer
    never sees a failure, and everything acknowledged reads back in order."""
    n = 400
    job = start_job(["write", "chaos", str(n), "--prefix", "chaos", "--interval", "0.02", "--deadline", "240"])
    wait_for("the writer has acknowledged entries", lambda: len(acked(job_logs(job))) >= 50, timeout=120, interval=1)
    victim = f"{STS}-1"
    before = get("pod", victim)
    restarts = before["status"]["containerStatuses"][0].get("restartCount", 0)
    crash_container(before, "logstore")
    at_kill = len(acked(job_logs(job)))
    assert at_kill < n, "the writer finished before the crash: make it slower"

    # it was a crash of the process, not a deletion: same pod, the container restarted after SIGKILL
    def restarted() -> dict | None:
        p = get("pod", victim)
        cs = (p or {}).get("status", {}).get("containerStatuses") or [{}]
        return p if cs[0].get("restartCount", 0) > restarts else None
    p = wait_for("the kubelet to restart the killed container", restarted, timeout=120)
    assert p["metadata"]["uid"] == before["metadata"]["uid"]
    term = p["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert term["exitCode"] == 137, term  # 128 + SIGKILL

    w = wait_job(job, timeout=300, ok=False)
    ids = acked(w)
    assert len(ids) > at_kill, f"no appends acknowledged after the crash:\n{w}"
    done = re.search(r"^DONE acked=(\d+) errors=(\d+)$", w, re.MULTILINE)
    assert done, w[-2000:]
    assert (int(done.group(1)), int(done.group(2))) == (n, 0), \
        f"one dead LogStore must cost no error: {done.group(0)}\n" + "\n".join(re.findall(r"^ERR .*$", w, re.MULTILINE)[:20])
    r = run_job(["read", "chaos"])
    reads = read_back(r)
    got = {p: i for i, p in reads}
    lost = sorted(set(ids) - set(got))
    assert not lost, f"acknowledged but not read back: {lost[:20]} ({len(lost)})\n{w[-3000:]}"
    assert all(got[p] == i for p, i in ids.items()), "an acknowledged entry came back under another id"
    payloads = [p for _, p in reads]
    assert payloads == [f"chaos-{i:06d}" for i in range(n)], "missing, duplicated or reordered entries"
    wait_for("the crashed LogStore Ready again", lambda: pod_ready(get("pod", victim) or {}), timeout=180)
    wait_cluster_ready(3, timeout=180)


def test_scale_and_rolling_config_change_keep_the_ack_quorum(cluster) -> None:
    kubectl("scale", f"wpc/{NAME}", "-n", TEST_NS, "--replicas=4")
    wait_for("StatefulSet scaled to 4", lambda: get("statefulset", STS)["spec"]["replicas"] == 4, timeout=60)
    wait_for("PDB follows: maxUnavailable = replicas - ackQuorum",
             lambda: get("pdb", STS)["spec"]["maxUnavailable"] == 4 - ACK_QUORUM, timeout=60)
    wait_cluster_ready(4, timeout=240)
    row = kubectl("get", "wpc", NAME, "-n", TEST_NS).stdout.splitlines()[1].split()
    assert row[2:4] == ["4", "4"], row

    sts = get("statefulset", STS)
    before_hash = sts["spec"]["template"]["metadata"]["annotations"]["picchio.dev/config-hash"]
    before_rev = sts["status"].get("currentRevision")
    # Every pod and PDB state the API server stores during the roll, through watches (no sampling
    # interval that a short dip could fall between; an error in the stream fails the test).
    pods_now: dict[str, bool] = {}
    samples: list[tuple[float, int, int]] = []  # (t, ready, not ready) after every pod event
    pdb_healthy: list[int] = []  # the PDB's status.currentHealthy, every change

    def on_pod(type_: str, pod: dict) -> None:
        name = pod["metadata"]["name"]
        if type_ == "DELETED":
            pods_now.pop(name, None)
        else:
            pods_now[name] = pod_ready(pod)
        ready = sum(pods_now.values())
        samples.append((time.monotonic(), ready, 4 - ready))

    def on_pdb(type_: str, pdb: dict) -> None:
        st = pdb.get("status") or {}
        if type_ != "DELETED" and "currentHealthy" in st:
            pdb_healthy.append(st["currentHealthy"])

    pod_watch = KubectlWatch("pods", on_pod, selector=SELECTOR)
    pdb_watch = KubectlWatch("pdb", on_pdb, name=STS)
    try:
        wait_for("the watches' initial state: 4 Ready pods", lambda: samples and samples[-1][1] == 4 and pdb_healthy,
                 timeout=60)
        # the initial listing arrives pod by pod (1, 2, 3, 4 ready): the roll starts from here
        start = len(samples) - 1
        pdb_start = len(pdb_healthy) - 1
        kubectl("patch", "wpc", NAME, "-n", TEST_NS, "--type=merge", "-p",
                '{"spec":{"config":{"woodpecker":{"client":{"segmentRollingPolicy":{"maxSize":"64M"}}}}}}')

        def rolled():
            s = get("statefulset", STS)
            h = s["spec"]["template"]["metadata"]["annotations"]["picchio.dev/config-hash"]
            st = s["status"]
            return (h != before_hash and st.get("updateRevision") != before_rev
                    and st.get("currentRevision") == st.get("updateRevision")
                    and st.get("updatedReplicas") == 4 and st.get("readyReplicas") == 4)
        wait_for("the StatefulSet rolled to the new configuration", rolled, timeout=420, interval=2)
    finally:
        pod_watch.stop()
        pdb_watch.stop()
    assert "maxSize: 64M" in get("configmap", f"{NAME}-config")["data"]["woodpecker.yaml"]
    pods = get("pods", selector=SELECTOR)["items"]
    new_hash = get("statefulset", STS)["spec"]["template"]["metadata"]["annotations"]["picchio.dev/config-hash"]
    assert all(p["metadata"]["annotations"]["picchio.dev/config-hash"] == new_hash for p in pods)
    samples = samples[start:]
    pdb_healthy = pdb_healthy[pdb_start:]
    min_ready = min(r for _, r, _ in samples)
    max_down = max(d for _, _, d in samples)
    dips = sum(1 for (_, a, _), (_, b, _) in zip(samples, samples[1:]) if b < a)
    assert dips >= 4, f"the watch saw {dips} pods leave Ready during a roll of 4: it did not observe the roll"
    print(f"roll: {len(samples)} samples over {samples[-1][0] - samples[0][0]:.0f}s, "
          f"min ready {min_ready}/4, max not ready {max_down}, PDB currentHealthy min {min(pdb_healthy or [-1])}")
    assert pdb_healthy and min(pdb_healthy) >= ACK_QUORUM, f"PDB currentHealthy fell to {min(pdb_healthy or [-1])}"
    assert min_ready >= ACK_QUORUM, f"ready LogStores dropped to {min_ready} during the roll"
    assert max_down <= 1, f"{max_down} LogStores were down at once (one at a time expected)"
    assert get("pdb", STS)["spec"]["maxUnavailable"] == 2
    wait_cluster_ready(4, timeout=120)
    # the cluster still serves: write and read after the roll
    w = run_job(["write", "after-roll", "20", "--prefix", "roll"])
    assert len(acked(w)) == 20, w
    assert len(read_back(run_job(["read", "after-roll"]))) == 20


def test_scale_down_decommissions_under_a_writer_job(cluster) -> None:
    """4 → 3 while a writer Job appends: the StatefulSet stays at 4 until the
    leaving LogStore (wal-server-3) holds nothing outside object storage, the
    writer sees no error, everything acknowledged reads back, and the PVC of
    ordinal 3 goes (spec.storage.pvcRetention defaults to Delete)."""
    n = 600
    job = start_job(["write", "shrink", str(n), "--prefix", "shrink", "--interval", "0.02", "--deadline", "280"])
    wait_for("the writer has acknowledged entries", lambda: len(acked(job_logs(job))) >= 50, timeout=120, interval=1)
    waiting: list[int] = []  # resourceVersions of statuses saying the LogStore still holds something
    lowered: list[int] = []  # ... of the StatefulSet at 3 replicas

    def on_wpc(_type: str, o: dict) -> None:
        if condition(o, "ScalingDown").get("reason") == "Decommissioning":
            waiting.append(int(o["metadata"]["resourceVersion"]))

    def on_sts(_type: str, o: dict) -> None:
        if o["spec"]["replicas"] == 3:
            lowered.append(int(o["metadata"]["resourceVersion"]))
    wpc_watch, sts_watch = KubectlWatch("wpc", on_wpc, name=NAME), KubectlWatch("statefulset", on_sts, name=STS)
    try:
        wait_for("the watches' initial state", lambda: wpc_watch.count and sts_watch.count, timeout=60)
        assert not lowered
        t0 = time.monotonic()
        kubectl("scale", f"wpc/{NAME}", "-n", TEST_NS, "--replicas=3")
        done = wait_for("ScaleDownComplete", lambda: (lambda w: w if condition(w, "ScalingDown").get("reason") ==
                                                      "ScaleDownComplete" else None)(wpc()), timeout=240, interval=1)
        seconds = time.monotonic() - t0
    finally:
        wpc_watch.stop()
        sts_watch.stop()
    # one etcd behind both objects: resourceVersions order the writes
    assert waiting and lowered and max(waiting) < min(lowered), (waiting, lowered)
    print(kubectl("describe", "wpc", NAME, "-n", TEST_NS).stdout)
    assert get("statefulset", STS)["spec"]["replicas"] == 3 and not done["status"].get("scaleDown")
    wait_for("the PVC of wal-server-3 deleted", lambda: get("pvc", f"data-{STS}-3") is None, timeout=120)
    w = wait_job(job, timeout=300, ok=False)
    ids = acked(w)
    m = re.search(r"^DONE acked=(\d+) errors=(\d+)$", w, re.MULTILINE)
    assert m and (int(m.group(1)), int(m.group(2))) == (n, 0), w[-3000:]
    reads = read_back(run_job(["read", "shrink"]))
    assert [p for _, p in reads] == [f"shrink-{i:06d}" for i in range(n)]
    assert all(dict((p, i) for i, p in reads)[p] == i for p, i in ids.items())
    print(f"scale-down 4 -> 3 under a writer Job: {seconds:.0f}s, 0 errors, {n} acked, 0 lost")
    wait_cluster_ready(3, timeout=120)


def test_deleting_everything_follows_the_deletion_policies(cluster) -> None:
    # a Retain log of an existing log, and the Delete log from the retention test
    apply({"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog",
           "metadata": {"name": "basic", "namespace": TEST_NS},
           "spec": {"clusterRef": NAME, "deletionPolicy": "Retain"}})
    wait_for("wplog/basic Ready", lambda: condition(get("wplog", "basic"), "Ready").get("status") == "True", timeout=90)
    kubectl("delete", "wplog", "basic", "retained", "-n", TEST_NS, "--timeout=120s", timeout=130)
    logs = run_job(["list"])
    names = set(re.findall(r"^LOG (\S+)$", logs, re.MULTILINE))
    assert "basic" in names, logs            # Retain: the log stays in the cluster
    assert "retained" not in names, logs     # Delete: removed from the cluster
    assert {"chaos", "after-roll"} <= names, logs

    # the cluster (sample: deletionPolicy Retain), switched to Delete before deleting
    uid = wpc()["metadata"]["uid"]
    kubectl("patch", "wpc", NAME, "-n", TEST_NS, "--type=merge", "-p", '{"spec":{"deletionPolicy":"Delete"}}')
    # the StatefulSet follows: its PVCs are to go with it
    wait_for("StatefulSet PVC retention whenDeleted: Delete", lambda: get("statefulset", STS)["spec"][
        "persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete", timeout=60)
    pvcs = [p["metadata"]["name"] for p in (get("pvc", selector=SELECTOR) or {"items": []})["items"]]
    assert len(pvcs) >= 3, pvcs  # one staging volume per LogStore
    before = run_job(["objects", ""])
    assert int(re.search(r"DONE objects=(\d+)", before).group(1)) > 0
    kubectl("delete", "wpc", NAME, "-n", TEST_NS, "--timeout=180s", timeout=190)
    assert wpc() is None
    children = [("statefulset", STS), ("service", f"{NAME}-server-client"), ("service", f"{NAME}-server-headless"),
                ("service", f"{NAME}-server-metrics"), ("configmap", f"{NAME}-config"),
                ("configmap", f"{NAME}-client"), ("pdb", STS)]
    for kind, name in children:
        wait_for(f"{kind}/{name} garbage-collected", lambda kind=kind, name=name: get(kind, name) is None, timeout=120)
    wait_for("LogStore pods gone", lambda: not (get("pods", selector=SELECTOR) or {"items": []})["items"], timeout=120)
    # deletionPolicy Delete reached the volumes: the StatefulSet controller's PVC retention removed them
    wait_for("the LogStores' PVCs deleted with the StatefulSet", lambda: not [
        p for p in (get("pvc", selector=SELECTOR) or {"items": []})["items"] if p["metadata"]["name"] in pvcs],
        timeout=120)
    # nothing the cluster (this uid) owned is left in the namespace
    for kind in ("statefulset", "service", "configmap", "pdb", "pods", "pvc", "secret"):
        owned = [o["metadata"]["name"] for o in (get(kind) or {"items": []})["items"]
                 if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]
        assert not owned, f"{kind} still owned by the deleted cluster {uid}: {owned}"
    # Delete purged the bucket prefix and the etcd prefix
    after = run_job(["objects", "wal/"])
    assert "DONE objects=0 " in after, after
    logs = run_job(["list"])
    assert "DONE logs=0" in logs, logs
    # the S3 Secret is released (no picchio.dev/in-use finalizer left)
    sec = get("secret", "picchio-s3")
    assert "picchio.dev/in-use" not in (sec["metadata"].get("finalizers") or []), sec["metadata"]
