"""The webhook's certificate objects in the API: its TLS Secret and the caBundle of its
MutatingWebhookConfiguration (self-managed certificates, see `self_managed`).

Calls go through the cluster side's one client (`gpushift_core.kube.KubeApi.call`): the
same timeouts, backoff and `KubeError`s as every other call.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from gpushift_core.kube import KubeApi, KubeError
from gpushift_core.patches import PatchBuilder

__all__ = ["CertificateObjects", "Owner", "SecretData"]


@dataclass(frozen=True)
class Owner:
    """The MutatingWebhookConfiguration the TLS Secret belongs to. The Secret names it in
    its ownerReferences, so deleting the configuration (`helm uninstall`) lets
    Kubernetes' garbage collector delete the Secret: no CA key is left behind."""

    name: str
    uid: str


@dataclass(frozen=True)
class SecretData:
    data: dict[str, str]
    """The Secret's data, base64 as the API holds it."""
    resource_version: str
    """The version read: a replace based on it fails when another replica wrote first."""
    owner_uids: tuple[str, ...] = ()
    """The uids in its ownerReferences."""


class CertificateObjects:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        """The Secret, or None when there is none."""
        try:
            secret = await self.api.read_json(self.api.core_v1.read_namespaced_secret, name,
                                              namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        meta = secret.get("metadata") or {}
        owners = tuple(str(ref.get("uid")) for ref in meta.get("ownerReferences") or [])
        return SecretData(dict(secret.get("data") or {}), str(meta.get("resourceVersion")),
                          owners)

    async def write_secret(self, namespace: str, name: str, data: dict[str, str],
                           resource_version: str | None, owner: Owner | None = None) -> None:
        """Create the Secret, or replace it if it still has `resource_version`
        (409 Conflict otherwise: another replica wrote first); owned by `owner` when
        given (no blockOwnerDeletion: it needs no permission on the owner)."""
        metadata: dict[str, Any] = {
            "name": name, "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "gpushift",
                       "app.kubernetes.io/component": "webhook"}}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if owner is not None:
            metadata["ownerReferences"] = [{
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration", "name": owner.name, "uid": owner.uid}]
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
                "data": dict(data)}
        if resource_version is None:
            await self.api.write_json(self.api.core_v1.create_namespaced_secret, namespace,
                                      body)
        else:
            await self.api.write_json(self.api.core_v1.replace_namespaced_secret, name,
                                      namespace, body)

    async def read_ca_bundles(self, webhook_configuration: str
                              ) -> tuple[Owner, list[bytes]]:
        """The MutatingWebhookConfiguration (as the Secret's owner) and the caBundle of
        each of its webhooks."""
        mwc = await self.api.read_json(
            self.api.admission_v1.read_mutating_webhook_configuration, webhook_configuration)
        owner = Owner(webhook_configuration, str((mwc.get("metadata") or {}).get("uid")))
        return owner, [base64.b64decode((w.get("clientConfig") or {}).get("caBundle") or "")
                       for w in mwc.get("webhooks") or []]

    async def write_ca_bundle(self, webhook_configuration: str, bundle_b64: str) -> int:
        """Set caBundle on every webhook of the configuration; returns how many."""
        mwc = await self.api.read_json(
            self.api.admission_v1.read_mutating_webhook_configuration, webhook_configuration)
        patch = PatchBuilder(mwc)
        # Guard the patch with the version we read: a concurrent edit makes it fail.
        patch.test(("metadata", "resourceVersion"), mwc["metadata"]["resourceVersion"])
        webhooks = len(mwc.get("webhooks") or [])
        for i in range(webhooks):
            patch.set_key(("webhooks", i, "clientConfig"), "caBundle", bundle_b64)
        await self.api.call(self.api.admission_v1.patch_mutating_webhook_configuration,
                            webhook_configuration, patch.operations, write=True)
        return webhooks
