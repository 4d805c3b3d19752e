"""spec.tls on the real control plane: a service-mode cluster gets its CA,
LogStore and client certificates as owned Secrets that form a valid chain
(checked by ``cryptography`` and by a real OpenSSL handshake with mutual
authentication), the ConfigMaps name them, the renewal annotation replaces
the leaves and a CA rotation keeps both CAs trusted across the overlap —
without rolling the StatefulSet; ``enabled: false`` is reported Insecure.

The operator runs in-process with a 3 s resync and a 6 s rotation overlap
(``--tls-overlap-seconds``), so a whole rotation fits in a test."""
from __future__ import annotations

import base64
import socket
import ssl
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from opcluster import condition, cr_path, dump, events, secret_body, wait_condition, wait_for, wpc_body

pytestmark = pytest.mark.cluster
OVERLAP = 6
NAMES = ("wal-cluster-ca", "wal-logstore-tls", "wal-client-tls", "wal-reader-tls")


@pytest.fixture(scope="module")
def pki_operator(k8s_cluster: Any, crds: list[str]) -> Any:
    from picchio_operator.main import InProcessOperator

    with InProcessOperator(k8s_cluster.api, ["--standalone", "--metrics-port", "0", "--liveness", "",
                                             "--resync-seconds", "3", "--tick-seconds", "2",
                                             "--tls-overlap-seconds", str(OVERLAP)]) as op:
        yield op
    assert op.error is None, op.error


def make_cluster(api: Any, ns: str, etcd: Any, minio: Any, **spec: Any) -> dict:
    api.call("POST", f"/api/v1/namespaces/{ns}/secrets",
             secret_body(ns, "s3", {"accessKeyID": minio.access_key, "secretAccessKey": minio.secret_key}))
    body = wpc_body(ns, "wal", etcd.endpoint, minio.endpoint, f"pki-{uuid.uuid4().hex[:8]}", mode="service",
                    replicas=3, **spec)
    return api.call("POST", cr_path("woodpeckerclusters", ns), body)


def secret(api: Any, ns: str, name: str) -> tuple[dict, dict[str, str]] | None:
    obj = api.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
    if obj is None:
        return None
    return obj, {key: base64.b64decode(v).decode() for key, v in (obj.get("data") or {}).items()}


def certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not by this CA"
        return False


def snapshot(api: Any, ns: str) -> dict[str, dict[str, str]] | None:
    """The four Secrets' data, or None while any is missing."""
    out = {}
    for n in NAMES:
        got = secret(api, ns, n)
        if got is None:
            return None
        out[n] = got[1]
    return out


def handshake(server: dict[str, str], client: dict[str, str], host: str) -> str:
    """A TLS handshake between the LogStore's files and a client's, as gRPC
    does it (server verifies the client certificate, client verifies the host
    name); returns the CN the server saw."""
    d = Path(tempfile.mkdtemp(prefix="picchio-pki-"))
    for who, data in (("s", server), ("c", client)):
        for key, v in data.items():
            (d / f"{who}-{key}").write_text(v)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(d / "s-tls.crt", d / "s-tls.key")
    sctx.load_verify_locations(d / "s-ca.crt")
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_cert_chain(d / "c-tls.crt", d / "c-tls.key")
    cctx.load_verify_locations(d / "c-ca.crt")
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    seen: dict[str, Any] = {}

    def serve() -> None:
        try:
            with sctx.wrap_socket(a, server_side=True) as s:
                seen["cert"] = s.getpeercert()
                s.sendall(b"ok")
        except Exception as e:  # noqa: BLE001 - reported below
            seen["error"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with cctx.wrap_socket(b, server_hostname=host) as c:
            assert c.recv(2) == b"ok"
    finally:
        b.close()
        t.join(10)
        a.close()
    assert "error" not in seen, seen
    return dict(x[0] for x in seen["cert"]["subject"])["commonName"]


def test_service_cluster_gets_a_valid_pki_and_the_configmaps_name_it(api, ns, pki_operator, etcd, minio) -> None:
    uid = make_cluster(api, ns, etcd, minio)["metadata"]["uid"]
    obj = wait_condition(api, "woodpeckerclusters", ns, "wal", "TLSReady", "True", timeout=90)
    now = datetime.now(UTC)
    data = snapshot(api, ns)
    assert data is not None
    for n in NAMES:
        meta = secret(api, ns, n)[0]["metadata"]
        (ref,) = meta["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("WoodpeckerCluster", uid, True), n
        assert meta["labels"]["app.kubernetes.io/instance"] == "wal" and meta["labels"]["app.kubernetes.io/component"] == "tls"
    assert set(data["wal-cluster-ca"]) == {"ca.crt", "ca.key"}
    (ca,) = certs(data["wal-cluster-ca"]["ca.crt"])
    ca_key = serialization.load_pem_private_key(data["wal-cluster-ca"]["ca.key"].encode(), None)
    assert ca_key.public_key().public_numbers() == ca.public_key().public_numbers()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert abs(ca.not_valid_after_utc - (now + timedelta(days=365))) < timedelta(minutes=10)
    roles = {"wal-logstore-tls": "logstore:wal", "wal-client-tls": "writer:wal-client-tls",
             "wal-reader-tls": "reader:wal-reader-tls"}
    for n, want_cn in roles.items():
        assert secret(api, ns, n)[0]["type"] == "kubernetes.io/tls"
        (leaf,) = certs(data[n]["tls.crt"])
        assert signed_by(leaf, ca) and cn(leaf) == want_cn, n
        assert [c.fingerprint(c.signature_hash_algorithm) for c in certs(data[n]["ca.crt"])] == \
            [ca.fingerprint(ca.signature_hash_algorithm)]
        assert abs(leaf.not_valid_after_utc - (now + timedelta(days=90))) < timedelta(minutes=10), n
    server = certs(data["wal-logstore-tls"]["tls.crt"])[0]
    sans = set(server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))
    for i in range(3):
        assert f"wal-server-{i}.wal-server-headless.{ns}.svc" in sans
        assert f"wal-server-{i}.wal-server-headless.{ns}.svc.cluster.local" in sans
    assert {f"wal-server-client.{ns}.svc", f"wal-server-headless.{ns}.svc"} <= sans
    # a real handshake, both ways authenticated, against the name a LogStore advertises
    assert handshake(data["wal-logstore-tls"], data["wal-client-tls"],
                     f"wal-server-2.wal-server-headless.{ns}.svc") == "writer:wal-client-tls"
    assert handshake(data["wal-logstore-tls"], data["wal-reader-tls"], f"wal-server-client.{ns}.svc") == \
        "reader:wal-reader-tls"
    with pytest.raises(ssl.SSLError):
        handshake(data["wal-logstore-tls"], data["wal-client-tls"], "elsewhere.example")
    # status: dates, never content
    tls = obj["status"]["tls"]
    assert tls["caNotAfter"] == ca.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (tls["caRotation"], tls["trustedCAs"], tls["clientSecret"]) == ("Steady", 1, "wal-client-tls")
    # wiring: the pods mount the whole Secret, the ConfigMaps name its files and the Secret to mount
    sts = api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server")
    pod = sts["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "logstore-tls"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "logstore-tls"]
    assert vol["secret"]["secretName"] == "wal-logstore-tls" and "subPath" not in mount
    assert mount["mountPath"] == "/etc/picchio-tls/logstore"
    server_cm = api.get(f"/api/v1/namespaces/{ns}/configmaps/wal-config")["data"]["woodpecker.yaml"]
    for line in ("certFile: /etc/picchio-tls/logstore/tls.crt", "keyFile: /etc/picchio-tls/logstore/tls.key",
                 "caFile: /etc/picchio-tls/logstore/ca.crt", "requireClientCert: true"):
        assert line in server_cm, line
    client_cm = api.get(f"/api/v1/namespaces/{ns}/configmaps/wal-client")
    assert client_cm["metadata"]["annotations"]["picchio.dev/client-tls-secret"] == "wal-client-tls"
    for line in ("clientCertFile: /etc/picchio-tls/client/tls.crt", "caFile: /etc/picchio-tls/client/ca.crt",
                 "clientKeyFile: /etc/picchio-tls/client/tls.key", "Mount Secret wal-client-tls"):
        assert line in client_cm["data"]["woodpecker.yaml"], line
    # no private key anywhere the operator writes text
    texts = [dump(api.get(cr_path("woodpeckerclusters", ns, "wal"))), server_cm, dump(client_cm), dump(sts),
             "\n".join(m for _, _, m in events(api, ns))]
    keys = [data[n][k] for n in NAMES for k in ("tls.key", "ca.key") if k in data[n]]
    for key in keys:
        body = "".join(ln for ln in key.splitlines() if "-----" not in ln)
        assert all(body[:40] not in t for t in texts)
    assert all("BEGIN" not in t for t in texts)


def test_renewal_annotation_and_ca_rotation_keep_trust_and_never_roll(api, ns, pki_operator, etcd, minio) -> None:
    make_cluster(api, ns, etcd, minio)
    wait_condition(api, "woodpeckerclusters", ns, "wal", "TLSReady", "True", timeout=90)
    sts_path = f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server"
    gen0 = api.get(sts_path)["metadata"]["generation"]
    before = snapshot(api, ns)
    (ca0,) = certs(before["wal-cluster-ca"]["ca.crt"])
    serial = lambda d, n: certs(d[n]["tls.crt"])[0].serial_number  # noqa: E731

    def annotate(value: str) -> None:
        api.call("PATCH", cr_path("woodpeckerclusters", ns, "wal"),
                 {"metadata": {"annotations": {"picchio.dev/renew-certificates": value}}}, "application/merge-patch+json")

    def annotation_gone() -> bool:
        ann = api.get(cr_path("woodpeckerclusters", ns, "wal"))["metadata"].get("annotations") or {}
        return "picchio.dev/renew-certificates" not in ann

    # 1. leaves now, same CA
    annotate("true")
    renewed = wait_for("new leaves", lambda: (d := snapshot(api, ns)) and all(
        serial(d, n) != serial(before, n) for n in NAMES[1:]) and d, timeout=60)
    assert renewed["wal-cluster-ca"] == before["wal-cluster-ca"]
    assert all(signed_by(certs(renewed[n]["tls.crt"])[0], ca0) for n in NAMES[1:])
    wait_for("renewal annotation removed", annotation_gone, timeout=30)
    wait_for("a CertificatesRenewed event", lambda: any(r == "CertificatesRenewed" for _, r, _ in events(api, ns)),
             timeout=30)

    # 2. CA rotation, phase 1: both CAs trusted, the old one still signs
    annotate("ca")
    incoming = wait_for("a second CA in the bundles", lambda: (d := snapshot(api, ns)) and "next-ca.crt" in d[
        "wal-cluster-ca"] and all(len(certs(d[n]["ca.crt"])) == 2 for n in NAMES[1:]) and d, timeout=60)
    (ca1,) = certs(incoming["wal-cluster-ca"]["next-ca.crt"])
    assert certs(incoming["wal-cluster-ca"]["ca.crt"]) == [ca0] and ca1 != ca0
    for n in NAMES[1:]:
        assert certs(incoming[n]["ca.crt"]) == [ca0, ca1], n
        assert signed_by(certs(incoming[n]["tls.crt"])[0], ca0), f"{n}: issued from the new CA before the overlap"
    wait_for("rotation annotation removed", annotation_gone, timeout=30)

    # phase 2: the new CA signs every leaf, the old one stays in the bundles
    retiring = wait_for("leaves from the new CA", lambda: (d := snapshot(api, ns)) and "old-ca.crt" in d[
        "wal-cluster-ca"] and all(signed_by(certs(d[n]["tls.crt"])[0], ca1) for n in NAMES[1:]) and d,
        timeout=OVERLAP + 60)
    assert certs(retiring["wal-cluster-ca"]["ca.crt"]) == [ca1]
    assert certs(retiring["wal-cluster-ca"]["old-ca.crt"]) == [ca0]
    for n in NAMES[1:]:
        assert certs(retiring[n]["ca.crt"]) == [ca1, ca0], n  # an old-CA leaf not yet reloaded still verifies
    # a peer still holding the phase-1 files and one with the new ones understand each other both ways
    assert handshake(retiring["wal-logstore-tls"], incoming["wal-client-tls"], f"wal-server-client.{ns}.svc")
    assert handshake(incoming["wal-logstore-tls"], retiring["wal-client-tls"], f"wal-server-client.{ns}.svc")

    # phase 3: only the new CA
    done = wait_for("old CA dropped", lambda: (d := snapshot(api, ns)) and all(
        certs(d[n]["ca.crt"]) == [ca1] for n in NAMES[1:]) and "old-ca.crt" not in d["wal-cluster-ca"] and d,
        timeout=OVERLAP + 60)
    assert all(serial(done, n) == serial(retiring, n) for n in NAMES[1:])  # no reissue needed for the drop
    st = wait_condition(api, "woodpeckerclusters", ns, "wal", "TLSReady", "True", reason="CertificatesValid",
                        timeout=30)["status"]["tls"]
    assert (st["caRotation"], st["trustedCAs"]) == ("Steady", 1)
    assert st["caNotAfter"] == ca1.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    wait_for("three CaRotation events", lambda: sum(r == "CaRotation" for _, r, _ in events(api, ns)) >= 3,
             timeout=30)
    # certificates changed four times; the pods were never rolled for it (they reload the files)
    assert api.get(sts_path)["metadata"]["generation"] == gen0


def test_plaintext_is_reported_insecure_and_bad_validity_is_refused(api, ns, kubectl, pki_operator, etcd,
                                                                    minio) -> None:
    make_cluster(api, ns, etcd, minio)
    wait_condition(api, "woodpeckerclusters", ns, "wal", "TLSReady", "True", timeout=90)
    api.call("PATCH", cr_path("woodpeckerclusters", ns, "wal"), {"spec": {"tls": {"enabled": False}}},
             "application/merge-patch+json")
    obj = wait_condition(api, "woodpeckerclusters", ns, "wal", "TLSReady", "False", reason="Insecure", timeout=60)
    assert "spec.tls.enabled" in condition(obj, "TLSReady")["message"]
    assert condition(obj, "Ready").get("reason") != "Insecure"  # the user's choice, not a failure
    wait_for("status.tls removed", lambda: "tls" not in api.get(cr_path("woodpeckerclusters", ns, "wal"))["status"],
             timeout=30)
    wait_for("an Insecure warning", lambda: ("Warning", "Insecure") in {(t, r) for t, r, _ in events(api, ns)},
             timeout=30)
    out = kubectl("describe", "wpc", "wal", "-n", ns).stdout
    assert "TLSReady" in out and "Insecure" in out, out
    sts = wait_for("no TLS mount", lambda: (s := api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wal-server"))
                   and not any(v["name"] == "logstore-tls" for v in s["spec"]["template"]["spec"]["volumes"]) and s,
                   timeout=30)
    assert sts
    cm = api.get(f"/api/v1/namespaces/{ns}/configmaps/wal-config")["data"]["woodpecker.yaml"]
    assert "certFile" not in cm
    # CEL and schema refuse what cannot be issued, naming the field
    bad = wpc_body(ns, "bad", etcd.endpoint, minio.endpoint, "b", mode="service",
                   tls={"validityDays": 400, "caValidityDays": 365})
    code, msg = api.status_code("POST", cr_path("woodpeckerclusters", ns), bad)
    assert code == 422 and "spec.tls.validityDays" in msg, msg
    bad["spec"]["tls"] = {"validityDays": 0}
    code, msg = api.status_code("POST", cr_path("woodpeckerclusters", ns), bad)
    assert code == 422 and "validityDays" in msg, msg
    # embedded mode: no TLS objects, no TLS condition
    api.call("POST", cr_path("woodpeckerclusters", ns), wpc_body(ns, "emb", etcd.endpoint, minio.endpoint,
                                                                 f"pki-{uuid.uuid4().hex[:8]}"))
    emb = wait_condition(api, "woodpeckerclusters", ns, "emb", "EtcdReady", "True", timeout=60)
    assert condition(emb, "TLSReady") == {} and "tls" not in emb["status"]
    assert all(api.get(f"/api/v1/namespaces/{ns}/secrets/emb-{s}") is None
               for s in ("cluster-ca", "logstore-tls", "client-tls", "reader-tls"))
