"""The certificates a local control plane needs, made with ``cryptography``.

Why real TLS and client certificates (not a token file, not an insecure
port): the operator under test must authenticate the way it will in a real
cluster, RBAC must be enforced, and the kube-controller-manager must mint
service-account tokens signed by a key the API server verifies.  ECDSA P-256
keys because they are generated in microseconds (RSA-2048 takes ~100 ms each).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


class CertificateAuthority:
    """A throw-away CA for one cluster: it signs the API server's serving
    certificate and every client certificate (admin, controller-manager,
    scheduler, kwok)."""

    def __init__(self, directory: Path, cn: str = "picchio-local-ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.pair = CertPair(self.dir / "ca.crt", self.dir / "ca.key")
        self.pair.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self._key, self.pair.key)

    def issue(self, name: str, cn: str, *, orgs: tuple[str, ...] = (), server: bool = False,
              dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> CertPair:
        """A leaf certificate: a client one (CN = user, O = groups) or, with
        ``server=True``, a serving one for the given names/IPs."""
        key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs)).issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if dns or ips:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self._key, hashes.SHA256())
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


def minio_certs_dir(directory: Path, ca: CertificateAuthority, server: CertPair) -> Path:
    """The ``--certs-dir`` MinIO serves https from: ``public.crt``/``private.key``
    (``server``) and ``CAs/ca.crt`` (the issuing CA, which the harness's
    readiness check trusts)."""
    import shutil

    (directory / "CAs").mkdir(parents=True, exist_ok=True)
    shutil.copy(server.cert, directory / "public.crt")
    shutil.copy(server.key, directory / "private.key")
    shutil.copy(ca.pair.cert, directory / "CAs" / "ca.crt")
    return directory


def service_account_keys(directory: Path) -> CertPair:
    """The key pair service-account tokens are signed with (controller-manager,
    API server) and verified by (API server).  ``cert`` holds the public key."""
    key = _key()
    pair = CertPair(directory / "sa.pub", directory / "sa.key")
    _write_key(key, pair.key)
    pair.cert.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    return pair


def write_kubeconfig(path: Path, server: str, ca: Path, client: CertPair, user: str = "picchio-admin",
                     cluster: str = "picchio") -> Path:
    """A kubeconfig that references the certificate files by absolute path
    (so it is readable, and usable by kubectl, kopf and the Python client)."""
    import yaml

    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert),
                                           "client-key": str(client.key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path
