"""Issue a CA and serving certificates with `cryptography` (ECDSA P-256)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificates start a little in the past, so a node whose clock runs behind ours
# still accepts them.
BACKDATE = dt.timedelta(minutes=5)

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("gpushift keys are ECDSA keys")
        return key


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def new_ca(common_name: str, valid_for: dt.timedelta, now: dt.datetime | None = None) -> KeyPair:
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _base(name, name, key.public_key(), now, valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    return KeyPair(_pem(builder.sign(key, hashes.SHA256())), _key_pem(key))


def new_serving_cert(
    ca: KeyPair,
    dns_names: Sequence[str],
    ips: Sequence[str] = (),
    valid_for: dt.timedelta = dt.timedelta(days=365),
    now: dt.datetime | None = None,
) -> KeyPair:
    """A server certificate for `dns_names` and `ips`, signed by `ca`."""
    if not dns_names and not ips:
        raise ValueError("a serving certificate needs at least one DNS name or IP")
    ips = list(ips)
    now = now or utcnow()
    ca_cert = ca.cert
    # Never outlive the CA: a client would reject the chain after the CA expires anyway.
    valid_for = min(valid_for, ca_cert.not_valid_after_utc - now)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject_cn = dns_names[0] if dns_names else ips[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (
        _base(subject, ca_cert.subject, key.public_key(), now, valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                          crl_sign=False, content_commitment=False, data_encipherment=False,
                          key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key().public_key()),
            critical=False,
        )
    )
    return KeyPair(_pem(builder.sign(ca.private_key(), hashes.SHA256())), _key_pem(key))


def write_cert_dir(directory: str | Path, ca_bundle_pem: bytes, serving: KeyPair) -> None:
    """Write ca.crt, tls.crt and tls.key; each file is replaced atomically.

    The key is written before the certificate, so a reader that sees a new tls.crt
    also finds its key (the reloader still checks that they match).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / KEY_FILE, serving.key_pem, mode=0o600)
    atomic_write(directory / CERT_FILE, serving.cert_pem, mode=0o644)
    atomic_write(directory / CA_FILE, ca_bundle_pem, mode=0o644)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _base(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
          now: dt.datetime, valid_for: dt.timedelta) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_for)
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
