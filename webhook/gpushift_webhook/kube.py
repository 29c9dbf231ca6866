"""The one place the webhook talks to the Kubernetes API.

The official client is synchronous; each call runs in a worker thread so the event
loop keeps answering admission reviews. Errors carry the API's Status.

Besides the certificates (Secret, webhook configuration), the migration guard's calls
live here: Notebooks across namespaces (list, get, JSON Patch guarded by a `test` of the
resourceVersion, read again and rebuilt when another writer got there first), pods (get,
delete with a uid precondition), Events on a Notebook, and its leader-election Lease
(get, create, update with the resourceVersion read).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gpushift_webhook.patches import PatchBuilder

log = logging.getLogger("gpushift.webhook.kube")

NOTEBOOK_API = ("kubeflow.org", "v1")
NOTEBOOKS = "notebooks"
JSON_PATCH = "application/json-patch+json"
RESOURCE_VERSION_PATH = "/metadata/resourceVersion"
EVENT_MESSAGE_MAX = 1024  # what events.k8s.io accepts; core/v1 stores more, kubectl cuts it
# Seconds (connect, read) for the guard's calls: a hung connection must not stall the
# guard's loop or its Lease renewal forever.
REQUEST_TIMEOUT = (5, 15)

BuildOps = Callable[[dict[str, Any]], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]


class KubeError(Exception):
    """An API call failed; `status`, `reason` and `message` come from the API's Status."""

    def __init__(self, status: int, reason: str, message: str,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @classmethod
    def from_api(cls, exc: ApiException) -> Self:
        try:
            body = json.loads(exc.body or "{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        details = body.get("details")
        return cls(int(exc.status or 0), str(body.get("reason") or exc.reason or ""),
                   str(body.get("message") or exc.body or exc.reason or ""),
                   details if isinstance(details, dict) else None)

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def stale(self) -> bool:
        """The write was based on an old read (409, or 422 without causes: a JSON Patch
        `test` of the resourceVersion failed): read again and retry."""
        return self.conflict or (self.status == 422 and not self.details.get("causes"))


@dataclass(frozen=True)
class PatchResult:
    notebook: dict[str, Any]
    """The Notebook after the patch, or as read when there was nothing to change."""
    operations: list[dict[str, Any]]
    """The patch applied (empty: nothing to change, nothing sent)."""
    attempts: int
    """Reads + patches it took."""

    @property
    def changed(self) -> bool:
        return bool(self.operations)


@dataclass(frozen=True)
class SecretData:
    data: dict[str, str]
    resource_version: str


class KubeApi:
    def __init__(self, api_client: Any, component: str = "gpushift-webhook",
                 instance: str = "") -> None:
        """`component` and `instance` sign the Events this client creates."""
        self.api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self.component = component
        self.instance = instance

    @classmethod
    def connect(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeApi:
        """In the cluster: the pod's ServiceAccount; outside: a kubeconfig file."""
        if kubeconfig:
            return cls(config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig), **kwargs)
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(), **kwargs)

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


    # -- migration guard: Notebooks --------------------------------------------------------

    async def list_notebooks(self) -> list[dict[str, Any]]:
        """Every Notebook in every namespace (as the API returns them)."""
        raw = await _call(self._custom.list_cluster_custom_object, *NOTEBOOK_API, NOTEBOOKS,
                          _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        items = json.loads(raw.data).get("items") or []
        return [dict(i) for i in items if isinstance(i, dict)]

    async def get_notebook(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _read_or_none(self._custom.get_namespaced_custom_object, *NOTEBOOK_API,
                                   namespace, NOTEBOOKS, name)

    async def patch_notebook(self, namespace: str, name: str, build_ops: BuildOps,
                             attempts: int = 5) -> PatchResult:
        """Read the Notebook, build the operations against that read, apply them as one
        JSON Patch whose first operation tests /metadata/resourceVersion (added when
        missing). When another writer got there first (409, or 422 without causes), read
        again and rebuild: `build_ops` sees every fresh read and may return [] (nothing
        to change any more: nothing is sent). KubeError when the Notebook is gone (404),
        when the API refuses otherwise, or after `attempts` stale tries."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        last: KubeError | None = None
        for attempt in range(1, attempts + 1):
            notebook = await self.get_notebook(namespace, name)
            if notebook is None:
                raise KubeError(404, "NotFound", f"Notebook {namespace}/{name} is gone")
            built = build_ops(notebook)
            ops = list(await built if inspect.isawaitable(built) else built)
            if not any(op.get("op") != "test" for op in ops):
                return PatchResult(notebook, [], attempt)
            if not any(op.get("op") == "test" and op.get("path") == RESOURCE_VERSION_PATH
                       for op in ops):
                rv = (notebook.get("metadata") or {}).get("resourceVersion")
                ops.insert(0, {"op": "test", "path": RESOURCE_VERSION_PATH, "value": rv})
            try:
                raw = await _call(self._custom.patch_namespaced_custom_object,
                                  *NOTEBOOK_API, namespace, NOTEBOOKS, name, ops,
                                  field_manager=self.component,
                                  _content_type=JSON_PATCH, _preload_content=False,
                                  _request_timeout=REQUEST_TIMEOUT)
                return PatchResult(dict(json.loads(raw.data)), ops, attempt)
            except KubeError as exc:
                if not exc.stale:
                    raise
                last = exc
                log.info("Notebook changed since it was read: reading it again",
                         extra={"namespace": namespace, "notebook": name,
                                "status": exc.status, "attempt": attempt})
            await asyncio.sleep(random.uniform(0.0, 0.05 * attempt))  # noqa: S311
        assert last is not None
        raise KubeError(last.status, last.reason,
                        f"gave up after {attempts} attempts: {last.message}", last.details)

    # -- migration guard: pods and Events ---------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _read_or_none(self._core.read_namespaced_pod, name, namespace)

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool:
        """Delete pod `name` only if it is still the one with `uid` (and, when given,
        still at `resource_version`): preconditions the API checks, so a pod recreated
        under the same name, or one that changed since it was read, is left alone.
        True when this call deleted it; False when it was gone, another pod or changed."""
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(
            uid=uid, resource_version=resource_version))
        try:
            await _call(self._core.delete_namespaced_pod, name, namespace, body=body,
                        _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise
        return True

    async def create_event(self, involved: Mapping[str, Any], reason: str, message: str,
                           type: str = "Normal") -> None:
        """A core/v1 Event about `involved` (a Notebook as read), in its namespace, so
        `kubectl describe notebook` lists it."""
        namespace = str((involved.get("metadata") or {}).get("namespace") or "")
        body = notebook_event(namespace, involved, reason, message, type,
                              component=self.component, instance=self.instance)
        await _call(self._core.create_namespaced_event, namespace, body,
                    _preload_content=False, _request_timeout=REQUEST_TIMEOUT)

    # -- migration guard: leader election ----------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _read_or_none(self._coordination.read_namespaced_lease, name, namespace)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Lease; 409 (KubeError.conflict) when another replica created it."""
        raw = await _call(self._coordination.create_namespaced_lease, namespace, dict(body),
                          _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        return dict(json.loads(raw.data))

    async def update_lease(self, namespace: str, name: str,
                           body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the Lease; `body` carries the resourceVersion read, so a replica that
        wrote in between makes this fail with 409."""
        raw = await _call(self._coordination.replace_namespaced_lease, name, namespace,
                          dict(body), _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        return dict(json.loads(raw.data))


def notebook_event(namespace: str, notebook: Mapping[str, Any], reason: str, message: str,
                   type: str, *, component: str, instance: str = "", host: str = "",
                   ) -> dict[str, Any]:
    """The core/v1 Event about a Notebook (as read from the API) that `kubectl describe
    notebook` lists; shared by the guard and the sidecar."""
    meta = notebook.get("metadata") or {}
    name = str(meta.get("name") or "")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": str(notebook.get("apiVersion") or "/".join(NOTEBOOK_API)),
        "kind": str(notebook.get("kind") or "Notebook"),
        "name": name,
        "namespace": namespace,
    }
    for key in ("uid", "resourceVersion"):
        if meta.get(key):
            involved[key] = str(meta[key])
    source = {"component": component}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_MAX],
        "type": type,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": (instance or host or component)[:128],
    }


async def _read_or_none(fn: Any, *args: Any) -> dict[str, Any] | None:
    """A read as plain JSON (the client's models are not what we patch), None on 404."""
    try:
        raw = await _call(fn, *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
    except KubeError as exc:
        if exc.not_found:
            return None
        raise
    return dict(json.loads(raw.data))


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as exc:
        raise KubeError.from_api(exc) from None
