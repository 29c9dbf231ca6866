"""The one Kubernetes client of the cluster side: Notebooks, pods, namespaces, Events,
ResourceQuotas, Leases; nodes, pod lists and ConfigMaps of the GPU capacity feature
(`capacity_calls`, mixed in).

Every call goes through `transport.call` (worker thread, timeouts, backoff while the API
cannot be reached; every failure a `KubeError` that carries the API's Status), and the
watch of the Notebooks through `transport.stream` (a thread of its own, the same errors). The
webhook's certificate objects (`gpushift_webhook.cert_objects`) use the same transport
through `KubeApi.call`.

Reaching the API: in a notebook pod the sidecar runs under the pod's ServiceAccount (the
webhook copies the token mount into the sidecar); the webhook Deployment under its own.
Under Istio the proxy may not be up when the sidecar starts: its calls retry until the
mesh is up (`Retry`). The guard and the Lease loop use a short deadline instead, so that
one slow apiserver cannot stall a pass or a renewal for long.

Notebook patches are JSON Patches guarded by a `test` of `metadata.resourceVersion`
(built by `gpushift_core.move_plan` / `gpushift_core.patches`). When another writer got
there first, the API answers 409, or 422 without causes (the test, or a path the patch
needed, failed); `patch_notebook` then reads the Notebook again, builds the operations
against that read, and tries again. A patch whose answer was lost (`MaybeSent`) is not
sent again blindly: the Notebook is read and the patch counted as landed when the read
shows it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from gpushift_core.kube.capacity_calls import CapacityCalls
from gpushift_core.kube.connection import Connection, cluster_access
from gpushift_core.kube.errors import KubeError, MaybeSent, PatchConflictError, Unreachable
from gpushift_core.kube.events import NOTEBOOK_API, notebook_event
from gpushift_core.kube.rest import (
    ADMISSION_V1,
    COORDINATION_V1,
    CORE_V1,
    CUSTOM_OBJECTS,
    JSON_PATCH,
    RestApi,
)
from gpushift_core.kube.transport import Retry, call, stream
from gpushift_core.labels import annotations_of
from gpushift_core.patches import PatchBuilder

__all__ = ["NOTEBOOK_API", "BuildOps", "KubeApi", "PatchResult", "copied_to_pod"]

log = logging.getLogger("gpushift.kube")

NOTEBOOKS = "notebooks"
RESOURCE_VERSION_PATH = "/metadata/resourceVersion"

BuildOps = Callable[[dict[str, Any]], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]


def copied_to_pod(annotation: str) -> bool:
    """Whether Kubeflow's notebook-controller copies this Notebook annotation into the pod
    template: every key that contains neither "notebook" nor "kubectl", when it generates
    the StatefulSet. Kubeflow's own controller copies the template's spec only on later
    reconciles, so a change then recreates no pod; but a StatefulSet generated again, or a
    controller that syncs the template's annotations, would put it on the pod and
    recreate pod <name>-0 (killing its kernel) -- so gpushift's own keys avoid it."""
    return "notebook" not in annotation and "kubectl" not in annotation


@dataclass(frozen=True)
class PatchResult:
    notebook: dict[str, Any]
    """The Notebook after the patch (as the API answered), or as read when nothing
    needed to change."""
    operations: list[dict[str, Any]]
    """The patch that was applied (empty: nothing to change, nothing sent)."""
    attempts: int
    """Reads + patches it took (1 when nobody else wrote in between)."""

    @property
    def changed(self) -> bool:
        return bool(self.operations)


class KubeApi(CapacityCalls):
    def __init__(self, connection: Connection, *, retry: Retry | None = None,
                 component: str = "gpushift", instance: str = "", host: str = "",
                 list_from_cache: bool = False, page_size: int = 500) -> None:
        """`component`, `instance` (the pod) and `host` (the node) sign the Events and
        name the field manager of writes. `list_from_cache`: `list_notebooks` reads the
        API server's watch cache (resourceVersion "0": possibly a moment old, no read
        from etcd) instead of a consistent read; for callers that list every few seconds
        and read an object again before writing it. `page_size`: Notebooks per page."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.list_from_cache = list_from_cache
        self.page_size = page_size
        self.connection = connection
        self.retry = retry or Retry()
        self.component = component
        self.instance = instance
        self.host = host
        self.core_v1 = RestApi(connection, CORE_V1)
        self.custom_objects = RestApi(connection, CUSTOM_OBJECTS)
        self.coordination_v1 = RestApi(connection, COORDINATION_V1)
        self.admission_v1 = RestApi(connection, ADMISSION_V1)
        """The API groups gpushift calls, under the official client's typed APIs'
        names: plain JSON over `connection` (see `rest`)."""

    @classmethod
    def connect(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeApi:
        """`kubeconfig` when given; in a pod, its ServiceAccount (the token re-read as
        the kubelet rotates it); else the default kubeconfig (`connection.cluster_access`)."""
        return cls(Connection(cluster_access(kubeconfig)), **kwargs)

    def close(self) -> None:
        self.connection.close()

    async def call(self, fn: Any, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        """One API call of this client's `retry` (see `transport.call`)."""
        return await call(self.retry, fn, *args, write=write, **kwargs)

    async def read_json(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A read as plain JSON, not the client's models (custom objects are plain JSON
        already): what we patch and compare is what the API holds."""
        raw = await self.call(fn, *args, _preload_content=False, **kwargs)
        try:
            return dict(json.loads(raw.data))
        except (ValueError, TypeError) as exc:
            # Not the API server's JSON (a proxy's error page, a cut body): as if
            # the API had not answered.
            raise Unreachable(f"the answer is not a JSON object: {exc}") from None

    async def write_json(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A write (`MaybeSent` when its answer was lost), its answer as plain JSON."""
        raw = await self.call(fn, *args, write=True, _preload_content=False, **kwargs)
        try:
            return dict(json.loads(raw.data))
        except (ValueError, TypeError) as exc:
            raise MaybeSent(f"the answer is not a JSON object: {exc}") from None

    # -- Notebooks --------------------------------------------------------------------------

    async def list_notebooks(self) -> list[dict[str, Any]]:
        """Every Notebook in every namespace (as the API returns them), in pages of
        `page_size` (see `list_from_cache`)."""
        return (await self.list_notebooks_with_version())[0]

    async def list_notebooks_with_version(self) -> tuple[list[dict[str, Any]], str]:
        """`list_notebooks` and the list's resourceVersion, where a watch takes up."""
        items: list[dict[str, Any]] = []
        token = ""
        restarts = 0
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size}
            if token:
                # A continue token carries its own resourceVersion: the API server
                # refuses one together with another resourceVersion.
                kwargs["_continue"] = token
            elif self.list_from_cache:
                # "0" with a limit: the watch cache answers (whole, or in pages where
                # the API server pages its cache), never etcd.
                kwargs["resource_version"] = "0"
                kwargs["resource_version_match"] = "NotOlderThan"
            try:
                listed = await self.call(self.custom_objects.list_cluster_custom_object,
                                         *NOTEBOOK_API, NOTEBOOKS, **kwargs)
            except KubeError as exc:
                # 410 Gone: the continue token expired (compacted away) between pages;
                # the list starts again, once.
                if exc.status != 410 or not token or restarts:
                    raise
                restarts += 1
                items, token = [], ""
                continue
            items.extend(dict(i) for i in listed.get("items") or [] if isinstance(i, dict))
            meta = listed.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch_notebooks(self, resource_version: str,
                        timeout_seconds: float = 60) -> AsyncGenerator[dict[str, Any], None]:
        """The Notebooks' watch events after `resource_version` ({"type", "object"}:
        ADDED, MODIFIED, DELETED, BOOKMARK, or ERROR with a Status -- 410 when that
        version is too old), until the API server ends the watch after
        `timeout_seconds` (see `transport.stream`)."""
        return stream(self.retry, self.custom_objects.list_cluster_custom_object,
                      *NOTEBOOK_API, NOTEBOOKS, resource_version=resource_version,
                      allow_watch_bookmarks=True, timeout_seconds=timeout_seconds)

    async def get_notebook(self, namespace: str, name: str) -> dict[str, Any]:
        """The Notebook; KubeError (404) when there is none."""
        return dict(await self.call(self.custom_objects.get_namespaced_custom_object,
                                    *NOTEBOOK_API, namespace, NOTEBOOKS, name))

    async def find_notebook(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Notebook, or None when there is none."""
        return await _none_if_missing(self.get_notebook(namespace, name))

    async def patch_notebook(self, namespace: str, name: str, build_ops: BuildOps,
                             attempts: int = 5) -> PatchResult:
        """Read the Notebook, `build_ops(notebook)` against that read, apply them as a
        JSON Patch; when the Notebook changed in between, read again and rebuild.

        The operations must begin with a `test` of /metadata/resourceVersion (one is put
        first when they do not). No operations: nothing to change, no patch sent.
        PatchConflictError after `attempts` stale tries; KubeError (404) when the
        Notebook is gone, KubeError for other refusals."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        last: KubeError | None = None
        for attempt in range(1, attempts + 1):
            notebook = await self.get_notebook(namespace, name)
            built = build_ops(notebook)
            ops = _guarded(list(await built if inspect.isawaitable(built) else built),
                           notebook)
            if not ops:
                return PatchResult(notebook, [], attempt)
            try:
                patched = dict(await self.call(
                    self.custom_objects.patch_namespaced_custom_object, *NOTEBOOK_API,
                    namespace, NOTEBOOKS, name, ops, field_manager=self.component,
                    _content_type=JSON_PATCH, write=True))
                if attempt > 1:
                    log.info("patched Notebook %s/%s after %d attempts", namespace, name,
                             attempt)
                return PatchResult(patched, ops, attempt)
            except MaybeSent as exc:
                fresh = await self.get_notebook(namespace, name)
                if _landed(notebook, ops, fresh):
                    log.info("Notebook %s/%s: the patch landed although its answer was "
                             "lost (%s)", namespace, name, exc.message)
                    return PatchResult(fresh, ops, attempt)
                last = KubeError(0, "Unknown", f"the patch may not have landed: {exc.message}")
            except KubeError as exc:
                if not exc.stale:
                    raise
                last = exc
                log.info("Notebook %s/%s changed since it was read (%s %s): reading it "
                         "again (attempt %d of %d)", namespace, name, exc.status, exc.reason,
                         attempt, attempts)
            # Let the other writer finish; spread competing writers apart.
            await asyncio.sleep(random.uniform(0.0, 0.05 * attempt))  # noqa: S311
        assert last is not None
        raise PatchConflictError(last, attempts)

    async def set_annotation(self, namespace: str, name: str, key: str, value: str | None,
                             attempts: int = 5, *, restart_pod: bool = False) -> PatchResult:
        """Set (or, with None, remove) one annotation of the Notebook, e.g. the
        migration mirror, with the same read-and-retry.

        A key that the notebook-controller copies into the pod template (`copied_to_pod`)
        would recreate the pod on every change: refused (ValueError) unless
        `restart_pod`. Keys with "notebook" in them stay on the Notebook."""
        if copied_to_pod(key) and not restart_pod:
            raise ValueError(
                f"annotation {key!r}: Kubeflow's notebook-controller copies it into the pod "
                "template, so setting it on the Notebook recreates the pod; use a key that "
                "contains 'notebook' (or pass restart_pod=True)")

        def build(notebook: dict[str, Any]) -> list[dict[str, Any]]:
            patch = PatchBuilder(notebook)
            annotations = annotations_of(notebook)
            if value is None:
                if key in annotations:
                    patch.remove(("metadata", "annotations", key))
            elif annotations.get(key) != value:
                patch.set_key(("metadata", "annotations"), key, value)
            return patch.operations

        return await self.patch_notebook(namespace, name, build, attempts)

    # -- pods ---------------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The pod; KubeError (404) when there is none."""
        return await self.read_json(self.core_v1.read_namespaced_pod, name, namespace)

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod, or None when there is none."""
        return await _none_if_missing(self.get_pod(namespace, name))

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool:
        """Delete pod `name` only if it is still the one with `uid` (and, when given,
        still at `resource_version`): preconditions the API checks, so a pod recreated
        under the same name, or one that changed since it was read, is left alone.
        True when this call deleted it; False when it was gone, another pod or changed."""
        preconditions = {"uid": uid}
        if resource_version is not None:
            preconditions["resourceVersion"] = resource_version
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        try:
            await self.call(self.core_v1.delete_namespaced_pod, name, namespace, body=body,
                            write=True, _preload_content=False)
        except MaybeSent:
            # The preconditions make a repeat harmless: gone now (404) means deleted.
            return await self.find_pod(namespace, name) is None
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise
        return True

    # -- namespaces -----------------------------------------------------------------------------

    async def list_namespaces(self, label_selector: str = "") -> dict[str, dict[str, str]]:
        """The labels of every namespace the selector matches, by name."""
        listed = await self.read_json(self.core_v1.list_namespace,
                                      label_selector=label_selector)
        out: dict[str, dict[str, str]] = {}
        for item in listed.get("items") or []:
            meta = item.get("metadata") or {}
            if meta.get("name"):
                out[str(meta["name"])] = {str(k): str(v)
                                          for k, v in (meta.get("labels") or {}).items()}
        return out

    # -- Events ---------------------------------------------------------------------------------

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal") -> dict[str, Any]:
        """A core/v1 Event about the Notebook (`kubectl describe notebook` lists it).
        An Event sent twice is harmless, so its call is retried like a read."""
        body = notebook_event(namespace, notebook, reason, message, type,
                              component=self.component, instance=self.instance,
                              host=self.host)
        return await self.read_json(self.core_v1.create_namespaced_event, namespace, body,
                                    field_manager=self.component)

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """The core/v1 Events of the namespace that match `field_selector` (e.g.
        "involvedObject.kind=StatefulSet,involvedObject.name=nb,reason=FailedCreate"),
        as plain JSON."""
        listed = await self.read_json(self.core_v1.list_namespaced_event, namespace,
                                      field_selector=field_selector)
        return [dict(i) for i in listed.get("items") or [] if isinstance(i, dict)]

    # -- ResourceQuotas -----------------------------------------------------------------------

    async def list_resource_quotas(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's ResourceQuotas (spec.hard, status.used), as plain JSON."""
        listed = await self.read_json(self.core_v1.list_namespaced_resource_quota, namespace)
        return [dict(i) for i in listed.get("items") or [] if isinstance(i, dict)]

    # -- Leases (leader election) ---------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease, or None when there is none."""
        return await _none_if_missing(self.read_json(
            self.coordination_v1.read_namespaced_lease, name, namespace))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Lease; 409 (KubeError.conflict) when another replica created it."""
        return await self.write_json(self.coordination_v1.create_namespaced_lease,
                                     namespace, dict(body))

    async def update_lease(self, namespace: str, name: str,
                           body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the Lease; `body` carries the resourceVersion read, so a replica that
        wrote in between makes this fail with 409."""
        return await self.write_json(self.coordination_v1.replace_namespaced_lease, name,
                                     namespace, dict(body))


async def _none_if_missing(read: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await read
    except KubeError as exc:
        if exc.not_found:
            return None
        raise


def _guarded(ops: list[dict[str, Any]], notebook: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The operations, a resourceVersion `test` first; [] when they change nothing."""
    if not any(op.get("op") != "test" for op in ops):
        return []
    if any(op.get("op") == "test" and op.get("path") == RESOURCE_VERSION_PATH for op in ops):
        return ops
    rv = (notebook.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": RESOURCE_VERSION_PATH, "value": rv}, *ops]


def _landed(before: Mapping[str, Any], ops: list[dict[str, Any]],
            fresh: Mapping[str, Any]) -> bool:
    """Whether `fresh` is `before` with `ops` applied (spec, labels and annotations)."""
    try:
        expected = jsonpatch.apply_patch(json.loads(json.dumps(before)),
                                         [op for op in ops if op.get("op") != "test"])
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
        return False
    meta, fresh_meta = expected.get("metadata") or {}, fresh.get("metadata") or {}
    return bool(expected.get("spec") == fresh.get("spec")
                and meta.get("annotations") == fresh_meta.get("annotations")
                and meta.get("labels") == fresh_meta.get("labels"))
