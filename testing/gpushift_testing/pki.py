"""Certificates, tokens and kubeconfigs of the local control plane (all throwaway)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gpushift_testing.common import LOCALHOST


@dataclass
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca: Path
    front_proxy_client_cert: Path
    front_proxy_client_key: Path


def make_pki(d: Path) -> Pki:
    """Cluster CA + apiserver serving cert, front-proxy CA + client, service-account key."""

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=3650)

    def write_key(k: ec.EllipticCurvePrivateKey, name: str) -> Path:
        path = d / name
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def write_cert(c: x509.Certificate, name: str) -> Path:
        path = d / name
        path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return path

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca = make_ca("gpushift-test-ca")
    srv_key, srv_cert = _issue(
        ca, now, until,
        "kube-apiserver",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address(LOCALHOST)),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ],
    )
    fp_ca = make_ca("gpushift-test-front-proxy-ca")
    fp_key, fp_cert = _issue(fp_ca, now, until, "front-proxy-client",
                             ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    sa_pub = d / "sa.pub"
    sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(
        ca_cert=write_cert(ca[1], "ca.crt"),
        ca_key=write_key(ca[0], "ca.key"),
        serving_cert=write_cert(srv_cert, "apiserver.crt"),
        serving_key=write_key(srv_key, "apiserver.key"),
        sa_key=write_key(sa_key, "sa.key"),
        sa_pub=sa_pub,
        front_proxy_ca=write_cert(fp_ca[1], "front-proxy-ca.crt"),
        front_proxy_client_cert=write_cert(fp_cert, "front-proxy-client.crt"),
        front_proxy_client_key=write_key(fp_key, "front-proxy-client.key"),
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    now: dt.datetime,
    until: dt.datetime,
    cn: str,
    eku: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate for `cn` (a key of its own), signed by `ca`."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    return key, builder.sign(ca_key, hashes.SHA256())


def client_certificate(ca_cert: Path, ca_key: Path, user: str) -> tuple[bytes, bytes]:
    """(certificate, key) as PEM: a client certificate for `user`, valid for an hour,
    signed by the CA the API server trusts for clients (`Pki.ca_cert`/`ca_key`)."""
    key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca_key}: not the EC key make_pki writes")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ca = (key, x509.load_pem_x509_certificate(ca_cert.read_bytes()))
    leaf_key, leaf = _issue(ca, now, now + dt.timedelta(hours=1), user,
                            ExtendedKeyUsageOID.CLIENT_AUTH)
    return (leaf.public_bytes(serialization.Encoding.PEM),
            leaf_key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


# identity -> (user name, group); one static token and one kubeconfig each
IDENTITIES = {
    "admin": ("admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
}


def write_auth(
    workdir: Path, server: str, ca_file: Path, admin_kubeconfig: Path
) -> tuple[str, dict[str, Path]]:
    """Static token file <workdir>/pki/tokens.csv and one kubeconfig per identity.

    Returns the admin's token and {identity: kubeconfig path}; the admin's kubeconfig is
    `admin_kubeconfig`, the others <workdir>/<identity>.kubeconfig.
    """
    tokens = {name: secrets.token_hex(24) for name in IDENTITIES}
    rows = []
    for name, (user, groups) in IDENTITIES.items():
        row = f"{tokens[name]},{user},{user}"
        rows.append(f'{row},"{groups}"' if groups else row)
    token_file = workdir / "pki" / "tokens.csv"
    token_file.write_text("\n".join(rows) + "\n")
    token_file.chmod(0o600)

    out = {}
    for name in IDENTITIES:
        path = admin_kubeconfig if name == "admin" else workdir / f"{name}.kubeconfig"
        out[name] = write_kubeconfig(path, server, ca_file, tokens[name], name)
    return tokens["admin"], out


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str,
                     user: str = "sa") -> Path:
    """A kubeconfig (mode 0600) that talks to `server` with `token`."""
    return write_kubeconfig_of(path, {"server": server, "certificate-authority": str(ca_file)},
                               {"token": token}, user)


def write_kubeconfig_of(path: Path, cluster: Mapping[str, Any],
                        credentials: Mapping[str, Any] | None, user: str = "sa",
                        current_context: str | None = None) -> Path:
    """A kubeconfig (mode 0600) of one cluster (its fields as given: `server`,
    `certificate-authority`...), one user with `credentials` (None: no user entry) and
    their context, named `user`; `current-context` is `current_context` or that one."""
    users = [] if credentials is None else [{"name": user, "user": dict(credentials)}]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current_context or user,
        "clusters": [{"name": "plane", "cluster": dict(cluster)}],
        "users": users,
        "contexts": [{"name": user, "context": {"cluster": "plane", "user": user}}],
    }))
    path.chmod(0o600)
    return path
