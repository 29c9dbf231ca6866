"""Plan the self-managed certificates of the webhook in the cluster (pure: no I/O).

The state lives in one Secret. Each reconcile reads it, calls `plan()`, writes back
what changed, and publishes `trusted_bundle()` as the webhook configuration's caBundle.

Rotation without a failed call:
  * the serving certificate is renewed at two thirds of its life, by the active CA;
  * the CA is renewed at two thirds of *its* life in two steps: first a next CA is made
    and added to the trusted bundle; only once the published caBundle holds it (and a
    short delay has passed, for API servers to pick it up) does it become the active
    CA and sign a new serving certificate. The old CA stays trusted until it expires.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from gpushift_certs.issue import BACKDATE, KeyPair, new_ca, new_serving_cert

SECRET_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt")
NEXT_CA_KEYS = ("next-ca.crt", "next-ca.key")


@dataclass(frozen=True)
class RotationPolicy:
    dns_names: Sequence[str]
    """DNS names of the webhook Service (see `issue.service_dns_names`)."""
    ips: Sequence[str] = ()
    """IP SANs, for a webhook reached by address (local tests)."""
    ca_validity: dt.timedelta = dt.timedelta(days=5 * 365)
    """Lifetime of a new CA."""
    serving_validity: dt.timedelta = dt.timedelta(days=365)
    """Lifetime of a new serving certificate."""
    renew_fraction: float = 2 / 3
    """Renew a certificate once this fraction of its life has passed."""
    propagation_delay: dt.timedelta = dt.timedelta(minutes=1)
    """How long a next CA is trusted in the published bundle before it signs."""


@dataclass(frozen=True)
class CertState:
    ca: KeyPair
    serving: KeyPair
    trusted: tuple[bytes, ...]
    """PEMs of every CA clients must trust now: active, next, and old until they expire."""
    next_ca: KeyPair | None = None

    def trusted_bundle(self) -> bytes:
        return b"".join(self.trusted)

    def to_secret_data(self) -> dict[str, str]:
        data = {"ca.crt": self.ca.cert_pem, "ca.key": self.ca.key_pem,
                "tls.crt": self.serving.cert_pem, "tls.key": self.serving.key_pem,
                "ca-bundle.crt": self.trusted_bundle()}
        if self.next_ca is not None:
            data |= {"next-ca.crt": self.next_ca.cert_pem, "next-ca.key": self.next_ca.key_pem}
        return {k: base64.b64encode(v).decode() for k, v in data.items()}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> CertState | None:
        """The state in a Secret's data, or None if it holds none (or a damaged one)."""
        if not data or any(k not in data for k in SECRET_KEYS):
            return None
        try:
            raw = {k: base64.b64decode(v, validate=True) for k, v in data.items()}
            state = cls(
                ca=KeyPair(raw["ca.crt"], raw["ca.key"]),
                serving=KeyPair(raw["tls.crt"], raw["tls.key"]),
                trusted=tuple(split_pem(raw["ca-bundle.crt"])),
                next_ca=(KeyPair(raw["next-ca.crt"], raw["next-ca.key"])
                         if all(k in raw for k in NEXT_CA_KEYS) else None),
            )
            state.ca.private_key()
            state.serving.cert.verify_directly_issued_by(state.ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            return None
        return state


@dataclass
class Plan:
    state: CertState
    changes: list[str] = field(default_factory=list)


def plan(state: CertState | None, policy: RotationPolicy, now: dt.datetime,
         published_bundle: bytes = b"") -> Plan:
    """What the state should be at `now`; `changes` is empty when nothing is due."""
    if state is None:
        ca = new_ca("gpushift-webhook-ca", policy.ca_validity, now)
        serving = new_serving_cert(ca, policy.dns_names, policy.ips,
                                   policy.serving_validity, now)
        return Plan(CertState(ca, serving, (ca.cert_pem,)), ["issued a new CA and serving "
                                                             "certificate"])
    result = Plan(state)
    _drop_expired_cas(result, now)
    _rotate_ca(result, policy, now, published_bundle)
    _renew_serving(result, policy, now)
    return result


def _drop_expired_cas(result: Plan, now: dt.datetime) -> None:
    state = result.state
    keep = tuple(pem for pem in state.trusted
                 if pem == state.ca.cert_pem or _cert(pem).not_valid_after_utc > now)
    if keep != state.trusted:
        result.state = replace(state, trusted=keep)
        result.changes.append(f"dropped {len(state.trusted) - len(keep)} expired CA(s)")


def _rotate_ca(result: Plan, policy: RotationPolicy, now: dt.datetime,
               published_bundle: bytes) -> None:
    state = result.state
    if state.next_ca is None:
        if _due(state.ca.cert, policy.renew_fraction, now):
            next_ca = new_ca("gpushift-webhook-ca", policy.ca_validity, now)
            result.state = replace(state, next_ca=next_ca,
                                   trusted=(*state.trusted, next_ca.cert_pem))
            result.changes.append("made the next CA and added it to the trusted bundle")
        return
    created = state.next_ca.cert.not_valid_before_utc + BACKDATE
    if state.next_ca.cert_pem in split_pem(published_bundle) and (
            now - created >= policy.propagation_delay):
        ca = state.next_ca
        serving = new_serving_cert(ca, policy.dns_names, policy.ips, policy.serving_validity,
                                   now)
        result.state = replace(state, ca=ca, next_ca=None, serving=serving)
        result.changes.append("promoted the next CA and issued a serving certificate with it")


def _renew_serving(result: Plan, policy: RotationPolicy, now: dt.datetime) -> None:
    state = result.state
    cert = state.serving.cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    if names != set(policy.dns_names) or ips != set(policy.ips):
        why = "names changed"
    elif _due(cert, policy.renew_fraction, now):
        why = "two thirds of its life passed"
    else:
        return
    serving = new_serving_cert(state.ca, policy.dns_names, policy.ips, policy.serving_validity,
                               now)
    result.state = replace(state, serving=serving)
    result.changes.append(f"renewed the serving certificate ({why})")


def _due(cert: x509.Certificate, fraction: float, now: dt.datetime) -> bool:
    start, end = cert.not_valid_before_utc + BACKDATE, cert.not_valid_after_utc
    return now >= start + (end - start) * fraction


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def split_pem(bundle: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as its own PEM."""
    if not bundle.strip():
        return []
    return [c.public_bytes(Encoding.PEM) for c in x509.load_pem_x509_certificates(bundle)]

