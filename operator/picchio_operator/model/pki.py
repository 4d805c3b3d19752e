"""The operator's PKI for the LogStores' gRPC port (``spec.tls``): a cluster
CA, the LogStores' server certificate and client certificates whose Subject
CN is ``<role>:<who>`` — the convention the LogStore's authorization reads:
roles ``admin`` (the operator), ``writer`` and ``reader`` (applications); the
server is ``logstore:<cluster>``.

Pure: no I/O and an injected clock (``now``), so every rule is unit-tested
with fake times.  Keys are ECDSA P-256: fast to make, small, taken by gRPC.

Rules:

* a leaf is reissued when missing, unreadable, not matching its key, not
  signed by the signing CA, lacking a name it must carry, or with less than a
  third of its validity left (90 days: renewed every 60, a month of margin);
* the CA rotates when it has less than a third left, in three phases, so
  that no party is ever shown a certificate its peer does not trust yet:

  1. *Incoming*: a new CA joins every trust bundle (``ca.crt``) while the
     old one still signs;
  2. after ``overlap`` (the kubelet has refreshed the mounted Secrets, the
     LogStores and applications have reloaded them) the new CA signs and
     every leaf is reissued from it; the old CA is *Retiring*, still trusted;
  3. once every leaf is from the new CA and ``overlap`` has passed since the
     last of them was issued, the old CA leaves the bundle.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import constants as k
from .cluster import common_labels, owner_reference
from .conditions import FALSE, TRUE, Cond, format_time, parse_time
from .spec import ClusterSpec

ROLE_ADMIN, ROLE_WRITER, ROLE_READER, ROLE_LOGSTORE = "admin", "writer", "reader", "logstore"
OPERATOR_CN = f"{ROLE_ADMIN}:operator"
TLS_READY = "TLSReady"
BACKDATE = timedelta(minutes=5)  # notBefore this far back: the pods' clocks may lag the operator's a little
RENEW_FRACTION = 3  # renew with less than 1/RENEW_FRACTION of the validity left
# keys of <name>-cluster-ca besides ca.crt/ca.key, and when its phase began
NEXT_CA, NEXT_KEY, OLD_CA = "next-ca.crt", "next-ca.key", "old-ca.crt"
PHASE_SINCE_ANNOTATION = "picchio.dev/ca-phase-since"
Obj = dict[str, Any]


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, PEM."""

    cert_pem: str
    key_pem: str

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @cached_property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem.encode(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC key")
        return key

    @property
    def not_before(self) -> datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    @property
    def issued_at(self) -> datetime:
        return self.not_before + BACKDATE

    @property
    def common_name(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def dns_names(self) -> tuple[str, ...]:
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return ()
        return tuple(san.get_values_for_type(x509.DNSName))

    def key_matches(self) -> bool:
        return self.key.public_key().public_numbers() == self.cert.public_key().public_numbers()

    def issued_by(self, ca: Pair | None) -> bool:
        if ca is None:
            return False
        try:
            self.cert.verify_directly_issued_by(ca.cert)
            return True
        except (ValueError, TypeError, InvalidSignature):
            return False


def parse_pair(cert_pem: str | None, key_pem: str | None) -> Pair | None:
    """A usable pair, else None (missing or garbled: to be reissued)."""
    if not cert_pem or not key_pem:
        return None
    p = Pair(cert_pem, key_pem)
    try:
        return p if p.key_matches() else None
    except (ValueError, TypeError, IndexError):
        return None


# -- issuing -----------------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "picchio"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode())


def _usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not sign_certs, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=sign_certs, crl_sign=sign_certs,
                         encipher_only=False, decipher_only=False)


def new_ca(c: ClusterSpec, now: datetime, days: int) -> Pair:
    """A self-signed CA for cluster ``c``; the time in its CN tells an old CA
    from its successor in a bundle (their key identifiers do too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"picchio-ca:{c.namespace}/{c.name}:{now:%Y%m%dT%H%M%SZ}")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign_certs=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _pem(cert, key)


@dataclass(frozen=True)
class LeafSpec:
    """What a leaf must say: its Secret (empty for the operator's in-memory
    certificate), Subject CN, and for the server its DNS names."""

    secret: str
    cn: str
    server: bool = False
    dns: tuple[str, ...] = ()


def issue(ca: Pair, want: LeafSpec, now: datetime, days: int) -> Pair:
    """A leaf signed by ``ca``, never outliving it."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(_name(want.cn)).issuer_name(ca.cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - BACKDATE).not_valid_after(min(now + timedelta(days=days), ca.not_after))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_usage(sign_certs=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if want.server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if want.dns:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in want.dns]), critical=False)
    return _pem(b.sign(ca.key, hashes.SHA256()), key)


def server_dns_names(c: ClusterSpec) -> tuple[str, ...]:
    """Every name a client dials: each pod as it advertises itself
    (``<pod>.<headless>.<ns>.svc``, see model.cluster), a wildcard for pods a
    scale-up adds, the headless and client Services (the seeds), each also
    under ``.cluster.local`` and by the short names used inside the namespace."""
    hl, cl, ns = k.headless_service_name(c.name), k.client_service_name(c.name), c.namespace
    names: list[str] = []
    for dom in (f"{ns}.svc", f"{ns}.svc.cluster.local"):
        names += [f"{k.statefulset_name(c.name)}-{i}.{hl}.{dom}" for i in range(c.replicas)]
        names += [f"*.{hl}.{dom}", f"{hl}.{dom}", f"{cl}.{dom}"]
    return (*names, f"{hl}.{ns}", f"{cl}.{ns}", hl, cl)


def leaf_specs(c: ClusterSpec) -> tuple[LeafSpec, ...]:
    """The three published leaves; an application's ``who`` is the Secret it
    mounts, so an audit line names where the key lives."""
    writer, reader = k.client_tls_secret_name(c.name), k.reader_tls_secret_name(c.name)
    return (LeafSpec(k.logstore_tls_secret_name(c.name), f"{ROLE_LOGSTORE}:{c.name}", True, server_dns_names(c)),
            LeafSpec(writer, f"{ROLE_WRITER}:{writer}"),
            LeafSpec(reader, f"{ROLE_READER}:{reader}"))


OPERATOR_LEAF = LeafSpec("", OPERATOR_CN)


# -- decisions ---------------------------------------------------------------------------
def due(p: Pair, now: datetime) -> bool:
    """Less than a third of its validity left (expired included)."""
    return p.not_after - now < (p.not_after - p.not_before) / RENEW_FRACTION


def leaf_reason(have: Pair | None, want: LeafSpec, signer: Pair, now: datetime, force: bool = False) -> str | None:
    """Why ``have`` must be reissued, or None to keep it."""
    if have is None:
        return "missing"
    if not have.issued_by(signer):
        return "not issued by the signing CA"
    if have.common_name != want.cn:
        return "subject changed"
    if not set(want.dns) <= set(have.dns_names):
        return "server names changed"
    if due(have, now):
        return "less than a third of its validity left"
    return "renewal requested" if force else None


@dataclass(frozen=True)
class CaState:
    """The cluster CA Secret: ``signer`` signs leaves; ``incoming`` (phase 1)
    and ``retiring`` (phase 3, a certificate only) are trusted besides it;
    ``since`` is when the current phase began."""

    signer: Pair | None = None
    incoming: Pair | None = None
    retiring: str | None = None
    since: datetime | None = None

    @property
    def phase(self) -> str:
        return "Incoming" if self.incoming else "Retiring" if self.retiring else "Steady"

    def trusted(self) -> list[str]:
        return [p for p in (self.signer and self.signer.cert_pem, self.incoming and self.incoming.cert_pem,
                            self.retiring) if p]

    def bundle(self) -> str:
        """The trust bundle every leaf Secret carries as ``ca.crt``."""
        return "".join(p if p.endswith("\n") else p + "\n" for p in self.trusted())


def ca_step(st: CaState, c: ClusterSpec, now: datetime, overlap: timedelta, *,
            leaves: Sequence[Pair | None], force: bool = False) -> tuple[CaState, str | None]:
    """The CA state after this pass, and a sentence for the event when it
    moved.  ``leaves`` are the published leaves as they are now."""
    days, s = c.tls.ca_validity_days, st.signer
    if s is None:
        return CaState(new_ca(c, now, days)), "created the cluster CA"
    if s.not_after <= now:  # nothing it signed verifies any more: no reason to wait
        return CaState(new_ca(c, now, days)), "replaced the expired cluster CA"
    if st.since is None and (st.incoming or st.retiring):
        return replace(st, since=now), None  # phase start lost (annotation edited): count from now
    if st.incoming is not None:
        if now < st.since + overlap:  # type: ignore[operator]
            return st, None
        return (CaState(st.incoming, retiring=s.cert_pem, since=now),
                "the new CA now signs: every leaf is reissued from it, the old CA stays trusted")
    if st.retiring is not None:
        from_signer = all(p is not None and p.issued_by(s) for p in leaves)
        last = max([st.since, *(p.issued_at for p in leaves if p is not None)])  # type: ignore[type-var]
        if from_signer and now >= last + overlap:
            return CaState(s), "removed the old CA from the trust bundles"
        return st, None
    if force or due(s, now):
        why = "rotation requested" if force else "less than a third of its validity left"
        return (replace(st, incoming=new_ca(c, now, days), since=now),
                f"added a new CA to the trust bundles ({why}); it signs after the overlap")
    return st, None


@dataclass(frozen=True)
class PkiPlan:
    ca: CaState
    leaves: dict[str, Pair]   # Secret name → the pair it publishes
    reissued: dict[str, str]  # Secret name → why it was reissued this pass
    ca_note: str | None       # what the CA step did (None: nothing)


def plan(c: ClusterSpec, ca: CaState, have: Mapping[str, Pair | None], now: datetime, overlap: timedelta, *,
         renew: bool = False, rotate_ca: bool = False) -> PkiPlan:
    """One pass: the CA step, then each leaf kept or reissued from the signer."""
    specs = leaf_specs(c)
    st, note = ca_step(ca, c, now, overlap, leaves=[have.get(s.secret) for s in specs], force=rotate_ca)
    assert st.signer is not None
    leaves: dict[str, Pair] = {}
    reissued: dict[str, str] = {}
    for s in specs:
        old = have.get(s.secret)
        why = leaf_reason(old, s, st.signer, now, renew)
        if why or old is None:
            reissued[s.secret] = why or "missing"
            leaves[s.secret] = issue(st.signer, s, now, c.tls.validity_days)
        else:
            leaves[s.secret] = old
    return PkiPlan(st, leaves, reissued, note)


def operator_cert(c: ClusterSpec, ca: CaState, have: Pair | None, now: datetime) -> Pair:
    """The operator's ``admin:operator`` certificate (kept in memory)."""
    assert ca.signer is not None
    return issue(ca.signer, OPERATOR_LEAF, now, c.tls.validity_days) \
        if leaf_reason(have, OPERATOR_LEAF, ca.signer, now) else have  # type: ignore[return-value]


# -- Secrets -----------------------------------------------------------------------------
def _data(secret: Mapping[str, Any] | None) -> dict[str, str]:
    raw = (secret or {}).get("data") or {}
    try:
        return {key: base64.b64decode(v).decode() for key, v in raw.items()}
    except (ValueError, UnicodeDecodeError):
        return {}


def ca_state_from(secret: Mapping[str, Any] | None) -> CaState:
    d = _data(secret)
    ann = ((secret or {}).get("metadata") or {}).get("annotations") or {}
    old = d.get(OLD_CA)
    try:
        if old:
            x509.load_pem_x509_certificate(old.encode())
    except ValueError:
        old = None
    try:
        since = parse_time(ann.get(PHASE_SINCE_ANNOTATION))
    except ValueError:
        since = None
    return CaState(parse_pair(d.get(k.TLS_CA), d.get(k.CA_KEY)), parse_pair(d.get(NEXT_CA), d.get(NEXT_KEY)),
                   old or None, since)


def leaf_from(secret: Mapping[str, Any] | None) -> Pair | None:
    d = _data(secret)
    return parse_pair(d.get(k.TLS_CERT), d.get(k.TLS_KEY))


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _secret(c: ClusterSpec, name: str, type_: str, data: Mapping[str, str], annotations: Mapping[str, str]) -> Obj:
    meta: Obj = {"name": name, "namespace": c.namespace, "labels": common_labels(c, k.COMPONENT_TLS),
                 "ownerReferences": [owner_reference(c)]}
    if annotations:
        meta["annotations"] = dict(annotations)
    # data, not stringData: the latter is write-only, so an apply would never compare equal
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type_,
            "data": {key: _b64(v) for key, v in data.items()}}


def ca_secret(c: ClusterSpec, st: CaState) -> Obj:
    assert st.signer is not None
    data = {k.TLS_CA: st.signer.cert_pem, k.CA_KEY: st.signer.key_pem}
    if st.incoming:
        data.update({NEXT_CA: st.incoming.cert_pem, NEXT_KEY: st.incoming.key_pem})
    if st.retiring:
        data[OLD_CA] = st.retiring
    ann = {PHASE_SINCE_ANNOTATION: format_time(st.since)} if st.since and st.phase != "Steady" else {}
    return _secret(c, k.cluster_ca_secret_name(c.name), "Opaque", data, ann)


def leaf_secret(c: ClusterSpec, name: str, pair: Pair, bundle: str) -> Obj:
    """A ``kubernetes.io/tls`` Secret plus ``ca.crt``, the trust bundle."""
    return _secret(c, name, "kubernetes.io/tls",
                   {k.TLS_CERT: pair.cert_pem, k.TLS_KEY: pair.key_pem, k.TLS_CA: bundle}, {})


def pki_secrets(c: ClusterSpec, p: PkiPlan) -> list[Obj]:
    """CA Secret first: leaves must never be published from a CA not yet stored."""
    bundle = p.ca.bundle()
    return [ca_secret(c, p.ca), *(leaf_secret(c, name, pair, bundle) for name, pair in p.leaves.items())]


# -- status ------------------------------------------------------------------------------
def tls_status(c: ClusterSpec, p: PkiPlan) -> dict[str, Any]:
    """Expiry and phase, never certificate content."""
    assert p.ca.signer is not None
    return {"caNotAfter": format_time(p.ca.signer.not_after),
            "leafNotAfter": format_time(min(x.not_after for x in p.leaves.values())),
            "caRotation": p.ca.phase, "trustedCAs": len(p.ca.trusted()),
            "clientSecret": k.client_tls_secret_name(c.name), "readerSecret": k.reader_tls_secret_name(c.name)}


def insecure_condition() -> Cond:
    return Cond(TLS_READY, FALSE, "Insecure",
                "spec.tls.enabled is false: the LogStores serve plaintext gRPC and authenticate no client; "
                "anyone who reaches port 18080 can read and write every log")


def issuer_ref_condition(c: ClusterSpec) -> Cond:
    return Cond(TLS_READY, FALSE, "IssuerRefNotSupported",
                "spec.tls.issuerRef: cert-manager issuers are not supported yet; remove spec.tls.issuerRef to "
                "let the operator issue the certificates (the LogStores wait for Secret "
                f"{k.logstore_tls_secret_name(c.name)} until then)")


def ready_condition(c: ClusterSpec, p: PkiPlan) -> Cond:
    """TLSReady True; the message changes only when a certificate does."""
    st = tls_status(c, p)
    msg = (f"CA valid until {st['caNotAfter']}; leaf certificates until {st['leafNotAfter']} (renewed with a third "
           f"of their validity left); applications mount Secret {st['clientSecret']} (writer) or "
           f"{st['readerSecret']} (reader) at {k.CLIENT_TLS_DIR}")
    if p.ca.phase == "Incoming":
        return Cond(TLS_READY, TRUE, "CaRotating", "a new CA is in the trust bundles and signs after the overlap; "
                    + msg)
    if p.ca.phase == "Retiring":
        return Cond(TLS_READY, TRUE, "CaRotating", "the new CA signs; the old one stays trusted until every "
                    "holder has the new leaves; " + msg)
    return Cond(TLS_READY, TRUE, "CertificatesValid", msg)
