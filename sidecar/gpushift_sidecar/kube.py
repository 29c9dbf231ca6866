"""The one place the sidecar talks to the Kubernetes API.

The official client is synchronous; each call runs in a worker thread (asyncio.to_thread)
so the sidecar's loopback API keeps answering. Errors carry the API's Status
(`KubeError`: status, reason, message, details).

Reaching the API: in a notebook pod the sidecar runs under the pod's ServiceAccount (the
webhook copies the token mount into the sidecar), so `KubeApi.connect()` uses the in-cluster
config, which re-reads the rotated token; tests pass a kubeconfig file. Under Istio the
proxy may not be up when the sidecar starts and the API is then unreachable: every call
retries with exponential backoff (`Retry`) while the connection fails, and on 429/503.
A request that may have reached the server (the connection broke after sending it) is
repeated only when repeating is harmless: reads and Events. A Notebook patch is not
repeated blindly: `patch_notebook` reads the Notebook again and checks whether the patch
landed.

Notebook patches are JSON Patches guarded by a `test` of `metadata.resourceVersion`
(built by `gpushift_sidecar.notebook_patch` / `gpushift_webhook.patches`). When another
writer got there first, the API answers 409, or 422 "the server rejected our request"
without causes (the test, or a path the patch needed, failed); `patch_notebook` then
reads the Notebook again, builds the operations against that read, and tries again.
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gpushift_webhook.kube import KubeError as _WebhookKubeError
from gpushift_webhook.kube import notebook_event
from gpushift_webhook.patches import PatchBuilder

__all__ = [
    "NOTEBOOK_API",
    "KubeApi",
    "KubeError",
    "PatchConflictError",
    "PatchResult",
    "Retry",
    "Unreachable",
    "copied_to_pod",
]

log = logging.getLogger("gpushift.sidecar.kube")

NOTEBOOK_API = ("kubeflow.org", "v1")
NOTEBOOKS = "notebooks"
JSON_PATCH = "application/json-patch+json"
RESOURCE_VERSION_PATH = "/metadata/resourceVersion"
EVENT_TYPES = ("Normal", "Warning")

BuildOps = Callable[[dict[str, Any]], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]


def copied_to_pod(annotation: str) -> bool:
    """Whether Kubeflow's notebook-controller copies this Notebook annotation into the pod
    template: it copies every key that contains neither "notebook" nor "kubectl", so
    changing such an annotation on the Notebook changes the StatefulSet's template and
    recreates pod <name>-0 (and kills its kernel)."""
    return "notebook" not in annotation and "kubectl" not in annotation


class KubeError(_WebhookKubeError):
    """An API call failed; `status`, `reason`, `message` (and `details`) come from the
    API's Status. Status 0: no answer from the API (see `Unreachable`)."""

    @property
    def patch_not_applicable(self) -> bool:
        """422 without causes: the JSON Patch itself did not apply (a `test` failed, or a
        path it removes or replaces is gone): the object changed since it was read. A
        422 that the object's schema or validation raised names its causes."""
        return self.status == 422 and not self.details.get("causes")

    @property
    def stale(self) -> bool:
        """The write was based on an old read: read again and retry."""
        return self.conflict or self.patch_not_applicable


class Unreachable(KubeError):
    """No answer from the API server within the retry deadline (network, Istio proxy not
    up, TLS handshake)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unreachable", message)


class PatchConflictError(KubeError):
    """The Notebook kept changing under the patch: `attempts` reads and patches failed."""

    def __init__(self, last: KubeError, attempts: int) -> None:
        super().__init__(last.status, last.reason,
                         f"gave up after {attempts} attempts: {last.message}", last.details)
        self.attempts = attempts


class _MaybeSent(Exception):
    """A write's connection broke after the request may have reached the server."""


@dataclass(frozen=True)
class Retry:
    """Backoff while the API server cannot be reached (or answers 429/503)."""

    deadline_seconds: float = 60.0
    """Give up (Unreachable) when the next try would start later than this."""
    initial_seconds: float = 0.2
    max_seconds: float = 5.0
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class PatchResult:
    notebook: dict[str, Any]
    """The Notebook after the patch (as the API answered), or as read when nothing
    needed to change."""
    operations: list[dict[str, Any]]
    """The patch that was applied (empty: nothing to change)."""
    attempts: int
    """Reads + patches it took (1 when nobody else wrote in between)."""

    @property
    def changed(self) -> bool:
        return bool(self.operations)


# Retried for any call: the request never reached the API, or the API refused to take it.
_RETRY_STATUSES = frozenset({0, 429, 503})
# Also retried for reads and Events; for a patch the outcome is unknown.
_UNSURE_STATUSES = frozenset({500, 502, 504})


class KubeApi:
    def __init__(self, api_client: Any, *, retry: Retry | None = None,
                 component: str = "gpushift-sidecar", instance: str = "",
                 host: str = "") -> None:
        """`component`, `instance` (the pod) and `host` (the node) sign the Events."""
        self.api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self.retry = retry or Retry()
        self.component = component
        self.instance = instance
        self.host = host

    @classmethod
    def connect(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeApi:
        """In the pod: its ServiceAccount (in-cluster config); else a kubeconfig file."""
        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=cfg, persist_config=False)
        else:
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    client_configuration=cfg, persist_config=False)
        # The backoff here replaces urllib3's immediate retries.
        cfg.retries = False
        return cls(client.ApiClient(cfg), **kwargs)

    def close(self) -> None:
        self.api_client.close()

    # -- Notebook -------------------------------------------------------------------------

    async def get_notebook(self, namespace: str, name: str) -> dict[str, Any]:
        nb = await self._call(self._custom.get_namespaced_custom_object, *NOTEBOOK_API,
                              namespace, NOTEBOOKS, name)
        return dict(nb)

    async def patch_notebook(self, namespace: str, name: str, build_ops: BuildOps,
                             attempts: int = 5) -> PatchResult:
        """Read the Notebook, `build_ops(notebook)` against that read, apply them as a
        JSON Patch; when the Notebook changed in between, read again and rebuild.

        The operations must begin with a `test` of /metadata/resourceVersion (one is put
        first when they do not). No operations: nothing to change, no patch sent.
        PatchConflictError after `attempts` stale tries; KubeError for other refusals."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        last: KubeError | None = None
        for attempt in range(1, attempts + 1):
            notebook = await self.get_notebook(namespace, name)
            built = build_ops(notebook)
            ops = list(await built if inspect.isawaitable(built) else built)
            ops = _guarded(ops, notebook)
            if not ops:
                return PatchResult(notebook, [], attempt)
            try:
                patched = await self._call(
                    self._custom.patch_namespaced_custom_object, *NOTEBOOK_API, namespace,
                    NOTEBOOKS, name, ops, field_manager=self.component,
                    _content_type=JSON_PATCH, write=True)
                if attempt > 1:
                    log.info("patched Notebook %s/%s after %d attempts", namespace, name,
                             attempt)
                return PatchResult(dict(patched), ops, attempt)
            except KubeError as exc:
                if not exc.stale:
                    raise
                last = exc
                log.info("Notebook %s/%s changed since it was read (%s %s): reading it "
                         "again (attempt %d of %d)", namespace, name, exc.status, exc.reason,
                         attempt, attempts)
            except _MaybeSent as exc:
                fresh = await self.get_notebook(namespace, name)
                if _landed(notebook, ops, fresh):
                    log.info("Notebook %s/%s: the patch landed although its answer was "
                             "lost (%s)", namespace, name, exc)
                    return PatchResult(fresh, ops, attempt)
                last = KubeError(0, "Unknown", f"the patch may not have landed: {exc}")
            # Let the other writer finish; spread competing sidecars apart.
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
            annotations = (notebook.get("metadata") or {}).get("annotations") or {}
            if value is None:
                if key in annotations:
                    patch.remove(("metadata", "annotations", key))
            elif annotations.get(key) != value:
                patch.set_key(("metadata", "annotations"), key, value)
            return patch.operations

        return await self.patch_notebook(namespace, name, build, attempts)

    # -- pod, Events ------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        raw = await self._call(self._core.read_namespaced_pod, name, namespace,
                               _preload_content=False)
        return dict(json.loads(raw.data))

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal",
                           ) -> dict[str, Any]:
        """A core/v1 Event about the Notebook (`kubectl describe notebook` lists it)."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, not {type!r}")
        body = notebook_event(namespace, notebook, reason, message, type,
                              component=self.component, instance=self.instance,
                              host=self.host)
        raw = await self._call(self._core.create_namespaced_event, namespace, body,
                               field_manager=self.component, _preload_content=False)
        return dict(json.loads(raw.data))

    # -- internals --------------------------------------------------------------------------

    async def _call(self, fn: Any, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        """Run one API call in a thread, retrying while the API cannot be reached.

        `write=True`: a request that may have reached the server is not repeated
        (_MaybeSent instead), nor is one the server may have carried out (500/502/504)."""
        loop = asyncio.get_running_loop()
        r = self.retry
        deadline = loop.time() + r.deadline_seconds
        delay = r.initial_seconds
        kwargs.setdefault("_request_timeout",
                          (r.connect_timeout_seconds, r.read_timeout_seconds))
        while True:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except ApiException as exc:
                error = KubeError.from_api(exc)
                if error.status in _UNSURE_STATUSES and write:
                    raise _MaybeSent(f"{error.status} {error.reason}") from None
                if error.status not in _RETRY_STATUSES | _UNSURE_STATUSES:
                    raise error from None
                failure: KubeError = error if error.status else Unreachable(error.reason)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                cause = _cause(exc)
                if write and not _not_sent(cause):
                    raise _MaybeSent(f"{type(cause).__name__}: {cause}") from exc
                failure = Unreachable(f"{type(cause).__name__}: {cause}")
            if loop.time() + delay > deadline:
                raise failure
            log.warning("Kubernetes API: %s; retrying in %.1fs", failure, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
            delay = min(delay * 2, r.max_seconds)


def _cause(exc: BaseException) -> BaseException:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return exc.reason
    return exc


def _not_sent(exc: BaseException) -> bool:
    """Whether the request surely did not reach the server (no connection was made)."""
    return isinstance(exc, (urllib3.exceptions.NewConnectionError,
                            urllib3.exceptions.ConnectTimeoutError,
                            urllib3.exceptions.SSLError,
                            ConnectionRefusedError))


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
