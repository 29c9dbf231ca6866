"""Serve TLS from a certificate directory and pick up new files without a restart.

The server is given one `ssl.SSLContext` for its whole life. Its `sni_callback` runs
for every new handshake (with or without SNI) and hands the connection the context
built from the newest valid files, so new connections get the new certificate while
connections already open — and the requests in flight on them — keep theirs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gpushift_certs.issue import CERT_FILE, KEY_FILE, utcnow

log = logging.getLogger(__name__)


class CertificateError(ValueError):
    """The files in the certificate directory cannot be served."""


@dataclass(frozen=True)
class CertificateInfo:
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str

    def valid_at(self, now: dt.datetime) -> bool:
        return self.not_before <= now < self.not_after


class ReloadingCertificate:
    """The serving certificate of a directory holding tls.crt and tls.key."""

    def __init__(self, cert_dir: str | Path,
                 on_change: Callable[[CertificateInfo], None] | None = None) -> None:
        self.cert_dir = Path(cert_dir)
        self._on_change = on_change
        self._current: ssl.SSLContext | None = None
        self._info: CertificateInfo | None = None
        self.last_error: str | None = None
        self._server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server_ctx.sni_callback = self._pick_context

    @property
    def info(self) -> CertificateInfo | None:
        return self._info

    def server_context(self) -> ssl.SSLContext:
        """The context to give the server. Call `reload()` first: it must hold a cert."""
        return self._server_ctx

    def ready(self, now: dt.datetime | None = None) -> bool:
        """True while a certificate is loaded and inside its validity window."""
        return self._info is not None and self._info.valid_at(now or utcnow())

    def reload(self) -> bool:
        """Load the files if they changed. True if a new certificate is now served.

        Files that are missing, half-written, mismatched or expired are refused and the
        previous certificate stays in use (`last_error` says why).
        """
        try:
            cert_pem = (self.cert_dir / CERT_FILE).read_bytes()
            key_pem = (self.cert_dir / KEY_FILE).read_bytes()
        except OSError as exc:
            return self._refuse(f"cannot read {exc.filename}: {exc.strerror}")
        fingerprint = hashlib.sha256(cert_pem + key_pem).hexdigest()
        if self._info is not None and fingerprint == self._info.fingerprint:
            return False
        try:
            info = _check(cert_pem, key_pem, fingerprint)
            context = _context(cert_pem, key_pem)
        except (CertificateError, ssl.SSLError, ValueError) as exc:
            return self._refuse(str(exc))
        if self._current is None:
            # The first certificate also goes into the server's own context, for
            # clients whose handshake would not reach the callback.
            _load_into(self._server_ctx, cert_pem, key_pem)
        self._current, self._info, self.last_error = context, info, None
        log.info("serving certificate loaded", extra={"serial": f"{info.serial:x}",
                                                      "not_after": info.not_after.isoformat()})
        if self._on_change is not None:
            self._on_change(info)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the directory until cancelled. Polling, not inotify: Kubernetes updates a
        mounted Secret by swapping a symlink, which inotify watches on the files miss."""
        while True:
            await asyncio.sleep(interval)
            self.reload()

    def _refuse(self, why: str) -> bool:
        if why != self.last_error:
            log.warning("certificate not loaded: %s", why)
        self.last_error = why
        return False

    def _pick_context(self, sslobj: ssl.SSLObject, server_name: str | None,
                      ctx: ssl.SSLContext) -> None:
        if self._current is not None:
            sslobj.context = self._current


def _check(cert_pem: bytes, key_pem: bytes, fingerprint: str) -> CertificateInfo:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise CertificateError(f"unreadable certificate or key: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, public) != key.public_key().public_bytes(enc, public):
        raise CertificateError("tls.key does not belong to tls.crt (a rotation in progress?)")
    info = CertificateInfo(cert.serial_number, cert.not_valid_before_utc,
                           cert.not_valid_after_utc, fingerprint)
    if not info.valid_at(utcnow()):
        raise CertificateError(f"certificate is not valid now (valid {info.not_before} to "
                               f"{info.not_after})")
    return info


def _context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_into(ctx, cert_pem, key_pem)
    return ctx


def _load_into(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # SSLContext loads only from files. Load the exact bytes we checked, from a private
    # directory, so a writer replacing the files meanwhile cannot mix two versions.
    with tempfile.TemporaryDirectory(prefix="gpushift-tls-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        ctx.load_cert_chain(cert_path, key_path)
