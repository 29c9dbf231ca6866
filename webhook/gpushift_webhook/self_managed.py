"""Self-managed certificates in the cluster: keep the CA and serving certificate in a
Secret, rotate them (see `gpushift_certs.rotation`), write the serving files for this
process, and publish the trusted CAs as the webhook configuration's caBundle.

Every replica runs the loop. The Secret is written with optimistic concurrency, so
when two replicas rotate at once one write wins and the other adopts it on its next
pass; both then serve the same certificate.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpushift_certs.issue import utcnow, write_cert_dir
from gpushift_certs.rotation import CertState, RotationPolicy, plan
from gpushift_core.kube import KubeError
from gpushift_webhook.cert_objects import CertificateObjects, Owner

log = logging.getLogger("gpushift.certs")


@dataclass(frozen=True)
class SelfManagedSettings:
    namespace: str
    """Namespace of the Secret (the webhook's own)."""
    secret_name: str
    """Secret holding the CA, the serving certificate and the trusted bundle."""
    webhook_configuration: str
    """MutatingWebhookConfiguration whose caBundle is kept up to date."""
    cert_dir: Path
    """Where this process's server reads tls.crt and tls.key."""
    policy: RotationPolicy
    """Names, lifetimes and renewal points."""
    interval_seconds: float = 60.0
    """Time between reconciles."""
    load_files: Callable[[], object] | None = None
    """Makes this process serve the files just written (the server's reload), so a new
    CA is published only once the certificate it signed is being served."""


@dataclass
class OwnerSeen:
    """The webhook configuration a replica last read, kept across passes. A replica that
    is still running when the configuration is deleted (`helm uninstall`: the
    pre-delete hook deletes the configuration and the Secret, then helm deletes the
    Deployment) may write the Secret again in a pass before it stops. It then names the
    configuration it last saw as owner, which no longer exists, so Kubernetes' garbage
    collector deletes that Secret too, instead of a CA key staying behind unowned."""

    owner: Owner | None = None


async def reconcile_once(api: CertificateObjects, settings: SelfManagedSettings,
                         seen: OwnerSeen | None = None) -> list[str]:
    """One pass; returns what changed (empty when all was current). `seen`: the owner
    read by earlier passes (see `OwnerSeen`)."""
    secret = await api.read_secret(settings.namespace, settings.secret_name)
    state = CertState.from_secret_data(secret.data if secret else None)
    if secret is not None and state is None:
        log.warning("certificate Secret is damaged; issuing a new CA",
                    extra={"secret": settings.secret_name})
    owner: Owner | None
    try:
        owner, published = await api.read_ca_bundles(settings.webhook_configuration)
    except KubeError as exc:
        if not exc.not_found:
            raise
        owner, published = (seen.owner if seen else None), []
    else:
        if seen is not None:
            seen.owner = owner
    # A next CA is promoted only when every webhook of the configuration trusts it.
    common = min(published, key=len) if published else b""
    result = plan(state, settings.policy, utcnow(), common)
    changes = list(result.changes)
    # A Secret written before it had an owner (an upgrade) gets one, data unchanged.
    unowned = secret is not None and owner is not None and owner.uid not in secret.owner_uids
    if changes or unowned:
        await api.write_secret(settings.namespace, settings.secret_name,
                               result.state.to_secret_data(),
                               secret.resource_version if secret else None, owner)
        if not changes:
            changes.append(f"Secret owned by {settings.webhook_configuration}")
    # Serve first, publish second: the API server must never trust a CA whose
    # certificate this process does not serve yet.
    if _write_files(settings.cert_dir, result.state) and settings.load_files is not None:
        settings.load_files()
    bundle = result.state.trusted_bundle()
    if published and any(b != bundle for b in published):
        count = await api.write_ca_bundle(settings.webhook_configuration,
                                          base64.b64encode(bundle).decode())
        changes.append(f"published caBundle to {count} webhook(s)")
    return changes


def _write_files(cert_dir: Path, state: CertState) -> bool:
    """Write the serving files if they differ; True when they were written."""
    current = cert_dir / "tls.crt"
    if current.exists() and current.read_bytes() == state.serving.cert_pem:
        return False
    write_cert_dir(cert_dir, state.trusted_bundle(), state.serving)
    return True


async def run(api: CertificateObjects, settings: SelfManagedSettings,
              on_pass: Callable[[], None] | None = None) -> None:
    """Reconcile until cancelled; API failures are logged and retried sooner, anything
    else escapes to the loop's supervisor (`gpushift_webhook.supervisor`). `on_pass` is
    called after each reconcile that completed."""
    seen = OwnerSeen()
    while True:
        delay = settings.interval_seconds
        try:
            changes = await reconcile_once(api, settings, seen)
            for change in changes:
                log.info("certificates: %s", change, extra={"secret": settings.secret_name})
            if on_pass is not None:
                on_pass()
        except KubeError as exc:
            level = logging.INFO if exc.conflict else logging.WARNING
            log.log(level, "certificate reconcile failed: %s", exc,
                    extra={"status": exc.status, "reason": exc.reason})
            delay = min(delay, 1.0 if exc.conflict else 5.0)
        await asyncio.sleep(delay)
