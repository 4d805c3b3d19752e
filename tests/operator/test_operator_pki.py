"""spec.tls: the operator's PKI (model/pki.py) with a fake clock — names and
roles in the certificates, renewal at a third of the validity, the three
phases of a CA rotation — and its wiring into the ConfigMaps, the
StatefulSet and the CRD."""
from __future__ import annotations

import copy
import dataclasses
from datetime import timedelta

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from opsupport import NOW, REPO, sample
from picchio_operator.model import cluster as b
from picchio_operator.model import constants as k
from picchio_operator.model import pki
from picchio_operator.model.config import InvalidConfig, render_client_config, render_config
from picchio_operator.model.spec import parse_cluster

OVERLAP = timedelta(minutes=10)
DAY = timedelta(days=1)


def svc(**tls) -> object:
    body = copy.deepcopy(sample("cluster-service.yaml"))
    if tls:
        body["spec"]["tls"] = tls
    return parse_cluster(body)


def roundtrip(c, p: pki.PkiPlan) -> tuple[pki.CaState, dict]:
    """The plan as the Secrets the operator writes, read back as the next pass does."""
    objs = {o["metadata"]["name"]: o for o in pki.pki_secrets(c, p)}
    ca = pki.ca_state_from(objs.pop(k.cluster_ca_secret_name(c.name)))
    return ca, {name: pki.leaf_from(o) for name, o in objs.items()}


def step(c, ca, have, now, **kw) -> tuple[pki.PkiPlan, pki.CaState, dict]:
    p = pki.plan(c, ca, have, now, OVERLAP, **kw)
    return (p, *roundtrip(c, p))


def eku(p: pki.Pair) -> list:
    return list(p.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_server_certificate_names_every_address_clients_dial() -> None:
    c = svc()
    p = pki.plan(c, pki.CaState(), {}, NOW, OVERLAP)
    server = p.leaves["wal-logstore-tls"]
    names = set(server.dns_names)
    for dom in ("team-a.svc", "team-a.svc.cluster.local"):
        assert {f"wal-server-{i}.wal-server-headless.{dom}" for i in range(3)} <= names  # as the pods advertise
        assert {f"*.wal-server-headless.{dom}", f"wal-server-headless.{dom}", f"wal-server-client.{dom}"} <= names
    assert c.seeds[0].rsplit(":", 1)[0] in names
    assert server.common_name == "logstore:wal" and eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.issued_by(p.ca.signer) and server.key_matches()
    assert server.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_client_certificates_carry_their_role_in_the_cn() -> None:
    c = svc()
    p = pki.plan(c, pki.CaState(), {}, NOW, OVERLAP)
    assert p.leaves["wal-client-tls"].common_name == "writer:wal-client-tls"
    assert p.leaves["wal-reader-tls"].common_name == "reader:wal-reader-tls"
    mine = pki.operator_cert(c, p.ca, None, NOW)
    assert mine.common_name == "admin:operator" and mine.issued_by(p.ca.signer)
    for leaf in (p.leaves["wal-client-tls"], p.leaves["wal-reader-tls"], mine):
        assert eku(leaf) == [ExtendedKeyUsageOID.CLIENT_AUTH] and leaf.dns_names == ()
    assert {pki.ROLE_ADMIN, pki.ROLE_WRITER, pki.ROLE_READER} == {"admin", "writer", "reader"}
    ca = p.ca.signer.cert
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.not_valid_after_utc == NOW + timedelta(days=365)
    assert p.leaves["wal-client-tls"].not_after == NOW + timedelta(days=90)


def test_leaves_are_renewed_with_a_third_of_their_validity_left() -> None:
    c = svc()
    _, ca, have = step(c, pki.CaState(), {}, NOW)
    p, _, _ = step(c, ca, have, NOW + 59 * DAY)  # 31 of 90 days left
    assert p.reissued == {} and p.ca_note is None and p.leaves == have
    p, ca2, renewed = step(c, ca, have, NOW + 61 * DAY)  # 29 left
    assert set(p.reissued) == {"wal-logstore-tls", "wal-client-tls", "wal-reader-tls"}
    assert set(p.reissued.values()) == {"less than a third of its validity left"}
    assert ca2 == ca and all(renewed[n].not_after == NOW + 151 * DAY for n in renewed)
    # the operator's in-memory certificate follows the same rule
    mine = pki.operator_cert(c, ca, None, NOW)
    assert pki.operator_cert(c, ca, mine, NOW + 59 * DAY) is mine
    assert pki.operator_cert(c, ca, mine, NOW + 61 * DAY) != mine


def test_renewal_request_scale_up_and_a_broken_leaf_reissue_only_what_they_must() -> None:
    c = svc()
    _, ca, have = step(c, pki.CaState(), {}, NOW)
    p, ca2, renewed = step(c, ca, have, NOW + DAY, renew=True)
    assert set(p.reissued.values()) == {"renewal requested"} and ca2 == ca
    assert all(renewed[n].cert.serial_number != have[n].cert.serial_number for n in have)
    bigger = parse_cluster({**sample("cluster-service.yaml"), "spec": {**sample("cluster-service.yaml")["spec"],
                                                                       "replicas": 5}})
    assert pki.plan(bigger, ca, have, NOW + DAY, OVERLAP).reissued == {"wal-logstore-tls": "server names changed"}
    smaller = parse_cluster({**sample("cluster-service.yaml"), "spec": {**sample("cluster-service.yaml")["spec"],
                                                                        "replicas": 2}})
    assert pki.plan(smaller, ca, have, NOW + DAY, OVERLAP).reissued == {}  # a superset of the names is fine
    garbled = {**have, "wal-client-tls": pki.parse_pair(have["wal-client-tls"].cert_pem, have["wal-reader-tls"].key_pem)}
    assert pki.plan(c, ca, garbled, NOW + DAY, OVERLAP).reissued == {"wal-client-tls": "missing"}


def test_ca_rotation_trusts_both_cas_across_two_overlaps() -> None:
    c = svc()
    _, ca0, have = step(c, pki.CaState(), {}, NOW)
    old = ca0.signer
    t = NOW + 240 * DAY  # 125 of 365 days left: keep (leaves renewed meanwhile)
    p, ca, have = step(c, ca0, have, t)
    assert p.ca.phase == "Steady" and ca.signer == old
    t = NOW + 250 * DAY  # 115 left: a new CA joins the bundles, the old one still signs
    p, ca, have = step(c, ca, have, t)
    assert p.ca.phase == "Incoming" and "added a new CA" in p.ca_note
    new = ca.incoming
    assert ca.signer == old and ca.trusted() == [old.cert_pem, new.cert_pem] and ca.since == t
    assert all(leaf.issued_by(old) for leaf in have.values())  # nobody is shown the new CA's leaves yet
    p, ca, have = step(c, ca, have, t + OVERLAP - timedelta(seconds=1))
    assert p.ca.phase == "Incoming" and p.reissued == {}
    t2 = t + OVERLAP  # phase 2: the new CA signs, every leaf reissued from it, the old one still trusted
    p, ca, have = step(c, ca, have, t2)
    assert p.ca.phase == "Retiring" and ca.signer == new and ca.retiring == old.cert_pem
    assert set(p.reissued.values()) == {"not issued by the signing CA"}
    assert all(leaf.issued_by(new) for leaf in have.values()) and len(ca.trusted()) == 2
    p, ca, have = step(c, ca, have, t2 + OVERLAP - timedelta(seconds=1))
    assert p.ca.phase == "Retiring"
    p, ca, have = step(c, ca, have, t2 + OVERLAP)  # phase 3: only the new CA
    assert p.ca.phase == "Steady" and ca.trusted() == [new.cert_pem] and p.ca_note.startswith("removed")
    bundle = pki.pki_secrets(c, p)[1]["data"]["ca.crt"]
    assert pki.ca_state_from(pki.pki_secrets(c, p)[0]).since is None and bundle


def test_the_old_ca_stays_while_any_leaf_is_not_from_the_new_one() -> None:
    c = svc()
    old, new = pki.new_ca(c, NOW, 365), pki.new_ca(c, NOW, 365)
    leaf_new = pki.issue(new, pki.leaf_specs(c)[1], NOW, 90)
    leaf_old = pki.issue(old, pki.leaf_specs(c)[2], NOW, 90)
    st = pki.CaState(new, retiring=old.cert_pem, since=NOW)
    later = NOW + 3 * OVERLAP
    assert pki.ca_step(st, c, later, OVERLAP, leaves=[leaf_new, leaf_old])[0] == st
    assert pki.ca_step(st, c, later, OVERLAP, leaves=[leaf_new, None])[0] == st
    fresh = pki.issue(new, pki.leaf_specs(c)[2], later, 90)  # reissued just now: wait one more overlap
    assert pki.ca_step(st, c, later, OVERLAP, leaves=[leaf_new, fresh])[0] == st
    assert pki.ca_step(st, c, later + OVERLAP, OVERLAP, leaves=[leaf_new, fresh])[0] == pki.CaState(new)


def test_rotation_on_request_a_lost_phase_time_and_an_expired_ca() -> None:
    c = svc()
    _, ca, have = step(c, pki.CaState(), {}, NOW)
    p = pki.plan(c, ca, have, NOW + DAY, OVERLAP, rotate_ca=True)
    assert p.ca.phase == "Incoming" and "rotation requested" in p.ca_note and p.reissued == {}
    lost = pki.CaState(ca.signer, incoming=p.ca.incoming)  # annotation edited away
    assert pki.ca_step(lost, c, NOW + 2 * DAY, OVERLAP, leaves=[]) == (dataclasses.replace(lost, since=NOW + 2 * DAY), None)
    p = pki.plan(c, ca, have, NOW + 366 * DAY, OVERLAP)
    assert p.ca_note == "replaced the expired cluster CA" and p.ca.phase == "Steady"
    assert set(p.reissued) == set(have)


def test_a_leaf_never_outlives_its_ca() -> None:
    c = svc(validityDays=30, caValidityDays=10)
    p = pki.plan(c, pki.CaState(), {}, NOW, OVERLAP)
    assert all(leaf.not_after == p.ca.signer.not_after for leaf in p.leaves.values())


def test_secrets_are_owned_labelled_and_hold_only_their_keys() -> None:
    c = svc()
    p = pki.plan(c, pki.CaState(), {}, NOW, OVERLAP)
    objs = pki.pki_secrets(c, p)
    assert [o["metadata"]["name"] for o in objs] == ["wal-cluster-ca", "wal-logstore-tls", "wal-client-tls",
                                                     "wal-reader-tls"]
    for o in objs:
        (ref,) = o["metadata"]["ownerReferences"]
        assert ref["kind"] == "WoodpeckerCluster" and ref["uid"] == "0000-uid" and ref["controller"]
        assert o["metadata"]["labels"][k.LABEL_COMPONENT] == "tls"
        assert o["metadata"]["labels"][k.LABEL_MANAGED_BY] == "picchio-operator"
    assert (objs[0]["type"], sorted(objs[0]["data"])) == ("Opaque", ["ca.crt", "ca.key"])
    for o in objs[1:]:
        assert (o["type"], sorted(o["data"])) == ("kubernetes.io/tls", ["ca.crt", "tls.crt", "tls.key"])


def test_status_and_condition_name_dates_never_content() -> None:
    c = svc()
    p = pki.plan(c, pki.CaState(), {}, NOW, OVERLAP)
    st, cnd = pki.tls_status(c, p), pki.ready_condition(c, p)
    assert st == {"caNotAfter": "2026-01-02T03:04:05Z", "leafNotAfter": "2025-04-02T03:04:05Z",
                  "caRotation": "Steady", "trustedCAs": 1, "clientSecret": "wal-client-tls",
                  "readerSecret": "wal-reader-tls"}
    assert (cnd.status, cnd.reason) == ("True", "CertificatesValid") and "BEGIN" not in cnd.message
    assert "wal-client-tls" in cnd.message and k.CLIENT_TLS_DIR in cnd.message
    assert pki.issuer_ref_condition(c).reason == "IssuerRefNotSupported"
    assert "spec.tls.issuerRef" in pki.issuer_ref_condition(c).message


# -- wiring ------------------------------------------------------------------------------------
def test_configmaps_name_the_mounted_files_and_the_secret_to_mount() -> None:
    c = svc()
    server = render_config(c).values
    t = "woodpecker.logstore.tls."
    assert {key: v for key, v in server.items() if key.startswith(t)} == {
        t + "enabled": True, t + "certFile": "/etc/picchio-tls/logstore/tls.crt",
        t + "keyFile": "/etc/picchio-tls/logstore/tls.key", t + "caFile": "/etc/picchio-tls/logstore/ca.crt",
        t + "requireClientCert": True}
    client = render_client_config(c)
    assert {key: v for key, v in client.values.items() if key.startswith(t)} == {
        t + "enabled": True, t + "caFile": "/etc/picchio-tls/client/ca.crt",
        t + "clientCertFile": "/etc/picchio-tls/client/tls.crt", t + "clientKeyFile": "/etc/picchio-tls/client/tls.key"}
    cm = b.client_configmap(c, client)
    assert cm["metadata"]["annotations"][k.CLIENT_TLS_SECRET_ANNOTATION] == "wal-client-tls"
    assert "Mount Secret wal-client-tls" in cm["data"]["woodpecker.yaml"]
    with pytest.raises(InvalidConfig, match="set spec.tls instead"):
        render_config(parse_cluster({**sample("cluster-service.yaml"), "spec": {
            **sample("cluster-service.yaml")["spec"], "config": {"woodpecker.logstore.tls.enabled": False}}}))


def test_statefulset_mounts_the_whole_secret_and_no_certificate_rolls_it() -> None:
    c = svc()
    sts = b.statefulset(c, render_config(c))
    pod = sts["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "logstore-tls"]
    assert vol["secret"]["secretName"] == "wal-logstore-tls"
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "logstore-tls"]
    assert mount == {"name": "logstore-tls", "mountPath": "/etc/picchio-tls/logstore", "readOnly": True}  # no subPath
    # the pod template depends on the spec alone: a renewed certificate cannot change it
    assert set(sts["spec"]["template"]["metadata"]["annotations"]) == {k.CONFIG_HASH_ANNOTATION}


def test_plaintext_and_embedded_clusters_have_no_tls_objects() -> None:
    for c in (svc(enabled=False), parse_cluster(sample("cluster-embedded.yaml"))):
        assert not c.tls_on
        cfg = render_config(c)
        assert not any(key.startswith("woodpecker.logstore.tls.") for key in cfg.values)
        for obj in b.desired_children(c, cfg):
            assert "tls" not in yaml.safe_dump(obj).replace("tlsSecret", "")
    assert svc(issuerRef={"name": "corp-ca"}).tls_on  # not supported yet, yet never silently plaintext


def test_crd_declares_spec_tls_with_defaults_and_a_rule_naming_its_fields() -> None:
    crd = yaml.safe_load((REPO / "crds" / "woodpeckerclusters.picchio.dev.yaml").read_text())
    tls = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tls"]
    props = tls["properties"]
    assert (props["enabled"]["default"], props["validityDays"]["default"], props["caValidityDays"]["default"]) == (
        True, 90, 365)
    assert props["validityDays"]["minimum"] == 1 and props["caValidityDays"]["minimum"] == 1
    assert props["issuerRef"]["required"] == ["name"]
    (rule,) = tls["x-kubernetes-validations"]
    assert "spec.tls.validityDays" in rule["message"] and "spec.tls.caValidityDays" in rule["message"]
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["tls"]
    assert set(status["properties"]) == set(pki.tls_status(svc(), pki.plan(svc(), pki.CaState(), {}, NOW,
                                                                            OVERLAP)))


def test_cn_convention_is_the_one_the_logstore_authorizes_by() -> None:
    from logstore import authz

    c = svc()
    p = pki.plan(c, pki.CaState(), {}, NOW, OVERLAP)
    roles = {n: authz.role_of(leaf.common_name) for n, leaf in p.leaves.items()}
    assert roles == {"wal-logstore-tls": None, "wal-client-tls": "writer", "wal-reader-tls": "reader"}
    assert authz.role_of(pki.operator_cert(c, p.ca, None, NOW).common_name) == "admin"
    assert set(authz.ROLES) == {pki.ROLE_ADMIN, pki.ROLE_WRITER, pki.ROLE_READER}
    assert authz.allowed("admin", "CompactSegment")  # the operator's scale-down compaction
