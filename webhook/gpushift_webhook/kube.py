"""The one place the webhook talks to the Kubernetes API.

The official client is synchronous; each call runs in a worker thread so the event
loop keeps answering admission reviews. Errors carry the API's Status.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gpushift_webhook.patches import PatchBuilder


class KubeError(Exception):
    """An API call failed; `status`, `reason` and `message` come from the API's Status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_api(cls, exc: ApiException) -> KubeError:
        try:
            body = json.loads(exc.body or "{}")
        except ValueError:
            body = {}
        return cls(int(exc.status or 0), str(body.get("reason") or exc.reason or ""),
                   str(body.get("message") or exc.body or ""))

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class SecretData:
    data: dict[str, str]
    resource_version: str


class KubeApi:
    def __init__(self, api_client: Any) -> None:
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> KubeApi:
        """In the cluster: the pod's ServiceAccount; outside: a kubeconfig file."""
        if kubeconfig:
            return cls(config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig))
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient())

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        try:
            secret = await _call(self._core.read_namespaced_secret, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return SecretData(dict(secret.data or {}), secret.metadata.resource_version)

    async def write_secret(self, namespace: str, name: str, data: dict[str, str],
                           resource_version: str | None) -> None:
        """Create the Secret, or replace it if it still has `resource_version`
        (409 Conflict otherwise: another replica wrote first)."""
        values: dict[str, bytes | str] = dict(data)
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace,
                                         resource_version=resource_version,
                                         labels={"app.kubernetes.io/name": "gpushift",
                                                 "app.kubernetes.io/component": "webhook"}),
            type="Opaque", data=values,
        )
        if resource_version is None:
            await _call(self._core.create_namespaced_secret, namespace, body)
        else:
            await _call(self._core.replace_namespaced_secret, name, namespace, body)

    async def read_ca_bundles(self, webhook_configuration: str) -> list[bytes]:
        """The caBundle of each webhook in the MutatingWebhookConfiguration."""
        mwc = await _call(self._admission.read_mutating_webhook_configuration,
                          webhook_configuration)
        return [base64.b64decode(w.client_config.ca_bundle or "") for w in mwc.webhooks or []]

    async def write_ca_bundle(self, webhook_configuration: str, bundle_b64: str) -> int:
        """Set caBundle on every webhook of the configuration; returns how many."""
        raw = await _call(self._admission.read_mutating_webhook_configuration,
                          webhook_configuration, _preload_content=False)
        mwc = json.loads(raw.data)
        patch = PatchBuilder(mwc)
        # Guard the patch with the version we read: a concurrent edit makes it fail.
        patch.test(("metadata", "resourceVersion"), mwc["metadata"]["resourceVersion"])
        webhooks = len(mwc.get("webhooks") or [])
        for i in range(webhooks):
            patch.set_key(("webhooks", i, "clientConfig"), "caBundle", bundle_b64)
        await _call(self._admission.patch_mutating_webhook_configuration,
                    webhook_configuration, patch.operations)
        return webhooks


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as exc:
        raise KubeError.from_api(exc) from None
