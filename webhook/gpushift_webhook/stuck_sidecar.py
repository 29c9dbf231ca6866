"""A gpushift sidecar that cannot start must never keep the notebook from starting.

The sidecar is injected as a native sidecar (an init container with `restartPolicy:
Always` and a startup probe), so the kubelet starts the notebook container only once the
sidecar has started. When the sidecar image cannot be pulled (no pull secret for it in
the user's namespace, a registry down, a typo in the chart) or the sidecar crashes in a
loop, the notebook container waits in `PodInitializing` for ever: gpushift would have
taken the user's notebook away. The guard undoes that:

1. A Notebook in an enabled namespace that is not stopped, has no ready replica, no move
   in a guarded phase (the guard's rollback owns those) and no marker yet: its pod
   `<name>-0` is read. When the sidecar's init container status waits with one of
   `STUCK_WAITING_REASONS` and the pod is older than `guard.sidecar_start_grace_seconds`
   (`stuck_reason`, pure), then
2. the Notebook's notebook container gets the env var `GPUSHIFT_OPTIMIZER_OFF=<reason>`
   (one JSON patch guarded by the resourceVersion, `mark_operations`): the
   notebook-controller copies container specs into the StatefulSet's pod template (it
   never copies a later annotation into an existing one), the webhook does not inject a
   pod whose notebook container carries it, and the server extension shows the optimizer
   off with that reason;
3. a Warning Event `SidecarNotStarted` on the Notebook says why; and
4. the stuck pod is deleted (preconditions on its uid and resourceVersion): a StatefulSet
   does not replace a pod that never became Ready when its template changes, so the new
   template (without sidecar) is used only for a new pod.

While the Notebook is stopped (Kubeflow's Stop or the culler: no pod, 0 replicas) the
marker is removed (`unmark_operations`) and a Normal Event `SidecarRetryOnStart` says so,
so that the next Start tries the sidecar again — after the admin fixed the pull secret,
say. Removing it at any other time would change the pod template and restart the user's
running notebook.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from gpushift_core.kube import BuildOps, KubeError, PatchResult
from gpushift_core.labels import OPTIMIZER_OFF_ENV
from gpushift_core.move_plan import PlanError, container_spec
from gpushift_core.notebook_stop import stopped
from gpushift_core.patches import PatchBuilder
from gpushift_core.spec_editor import SPEC
from gpushift_core.timestamps import parse_utc
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.guard_decision import (
    GUARDED_PHASES,
    MigrationAnnotationError,
    pod_deleting,
    pod_ready,
    read_migration,
)

log = logging.getLogger("gpushift.guard")

# Waiting reasons of a container that will not start by itself soon: the kubelet's image
# pull failures and back-offs, and a crash loop (a startup probe that keeps failing ends
# there too, as the kubelet restarts the container).
STUCK_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError",
})
_MESSAGE_LIMIT = 300
_CONTAINERS = (*SPEC, "containers")


# ------------------------------------------------------------------------ pure decisions


def marker(notebook: Mapping[str, Any], container: str | None = None) -> str | None:
    """The reason the Notebook's notebook container carries in `OPTIMIZER_OFF_ENV`
    (None: no marker)."""
    try:
        _, spec = container_spec(notebook, container or None)
    except PlanError:
        return None
    for item in spec.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == OPTIMIZER_OFF_ENV:
            return str(item.get("value") or "")
    return None


def worth_a_look(notebook: Mapping[str, Any], container: str | None = None) -> bool:
    """Whether pod `<name>-0` of this Notebook may be stuck on its sidecar: running (not
    stopped), no ready replica (the controller's status), no move the guard's rollback
    owns, no marker yet. Cheap: only such Notebooks cost the guard a pod read."""
    if stopped(notebook) or marker(notebook, container) is not None:
        return False
    if (notebook.get("status") or {}).get("readyReplicas"):
        return False
    try:
        migration = read_migration(notebook)
    except MigrationAnnotationError:
        migration = None
    return migration is None or migration.phase not in GUARDED_PHASES


def sidecar_waiting(pod: Mapping[str, Any], sidecar: str) -> tuple[str, str] | None:
    """(reason, message) of the sidecar init container's waiting state, when it waits
    with one of `STUCK_WAITING_REASONS`."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    for status in statuses:
        if not isinstance(status, Mapping) or status.get("name") != sidecar:
            continue
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in STUCK_WAITING_REASONS:
            return reason, str(waiting.get("message") or "")
    return None


def stuck_reason(pod: Mapping[str, Any] | None, sidecar: str, now: dt.datetime,
                 grace_seconds: float) -> str | None:
    """Why the notebook of `pod` is kept from starting by the gpushift sidecar (a
    sentence for the user and the Event), or None when it is not (yet)."""
    if pod is None or pod_deleting(pod) or pod_ready(pod):
        return None
    waiting = sidecar_waiting(pod, sidecar)
    created = parse_utc(str((pod.get("metadata") or {}).get("creationTimestamp") or ""))
    if waiting is None or created is None or (now - created).total_seconds() < grace_seconds:
        return None
    reason, message = waiting
    message = " ".join(message.split())
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT - 1] + "…"
    return (f"the gpushift sidecar could not start ({reason}" + (f": {message}" if message
                                                                 else "")
            + "), so the notebook was started without it; moves between CPU and GPU are "
            "off until the notebook is stopped and started again")


def mark_operations(notebook: Mapping[str, Any], reason: str,
                    container: str | None = None) -> list[dict[str, Any]]:
    """JSON Patch putting `OPTIMIZER_OFF_ENV=reason` on the notebook container (none
    when a marker is there already)."""
    if marker(notebook, container) is not None:
        return []
    index, _ = container_spec(notebook, container or None)
    builder = PatchBuilder(notebook)
    builder.append((*_CONTAINERS, index, "env"), {"name": OPTIMIZER_OFF_ENV, "value": reason})
    return builder.operations


def unmark_operations(notebook: Mapping[str, Any],
                      container: str | None = None) -> list[dict[str, Any]]:
    """JSON Patch removing the marker, only while the Notebook is stopped (otherwise
    the template change would restart the user's running notebook)."""
    if not stopped(notebook) or marker(notebook, container) is None:
        return []
    index, spec = container_spec(notebook, container or None)
    env = spec.get("env") or []
    builder = PatchBuilder(notebook)
    # From the end, so each index still names the entry it names in the original.
    for position in reversed(range(len(env))):
        item = env[position]
        if isinstance(item, Mapping) and item.get("name") == OPTIMIZER_OFF_ENV:
            builder.remove((*_CONTAINERS, index, "env", position))
    return builder.operations


# ---------------------------------------------------------------------------------- acting


class StuckSidecarApi(Protocol):
    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_notebook(self, namespace: str, name: str, build_ops: BuildOps,
                             attempts: int = 5) -> PatchResult: ...

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool: ...

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal") -> Any: ...


class SidecarRelease:
    """The guard's part for stuck sidecars: `visit` one Notebook of an enabled namespace
    per pass. Returns what it did ("released", "retry_on_start") or None."""

    def __init__(self, api: StuckSidecarApi, config: WebhookConfig) -> None:
        self.api = api
        self.sidecar = config.sidecar.name
        self.container = config.notebook_container or None
        self.grace = float(config.guard.sidecar_start_grace_seconds)

    async def visit(self, notebook: Mapping[str, Any], now: dt.datetime) -> str | None:
        meta = notebook.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if unmark_operations(notebook, self.container):
            return await self._retry_on_start(ns, name)
        if not worth_a_look(notebook, self.container):
            return None
        pod = await self.api.find_pod(ns, f"{name}-0")
        reason = stuck_reason(pod, self.sidecar, now, self.grace)
        if reason is None or pod is None:
            return None
        return await self._release(ns, name, pod, reason)

    async def _release(self, ns: str, name: str, pod: Mapping[str, Any],
                       reason: str) -> str | None:
        def build(fresh: dict[str, Any]) -> list[dict[str, Any]]:
            # Decided again on the fresh read: stopped or moved since, nothing to do.
            return mark_operations(fresh, reason, self.container) \
                if worth_a_look(fresh, self.container) else []

        result = await self.api.patch_notebook(ns, name, build)
        if not result.changed:
            return None
        pod_meta = pod.get("metadata") or {}
        deleted = await self.api.delete_pod(ns, f"{name}-0", str(pod_meta.get("uid") or ""),
                                            pod_meta.get("resourceVersion"))
        await self._event(result.notebook, "SidecarNotStarted", "Warning",
                          f"The notebook was restarted without gpushift: {reason}."
                          + ("" if deleted else f" Pod {name}-0 changed in the meantime and "
                             "was left as it is."))
        log.warning("guard: notebook released from a stuck sidecar", extra={
            "namespace": ns, "notebook": name, "reason": reason, "pod_deleted": deleted})
        return "released"

    async def _retry_on_start(self, ns: str, name: str) -> str | None:
        result = await self.api.patch_notebook(
            ns, name, lambda fresh: unmark_operations(fresh, self.container))
        if not result.changed:
            return None
        await self._event(result.notebook, "SidecarRetryOnStart", "Normal",
                          "The notebook is stopped: gpushift will try its sidecar again when "
                          "the notebook starts.")
        log.info("guard: optimizer-off marker removed while stopped",
                 extra={"namespace": ns, "notebook": name})
        return "retry_on_start"

    async def _event(self, notebook: Mapping[str, Any], reason: str, type: str,
                     message: str) -> None:
        try:
            namespace = str((notebook.get("metadata") or {}).get("namespace") or "")
            await self.api.create_event(namespace, notebook, reason, message, type)
        except KubeError as exc:  # what was done stands; the story misses a line
            log.warning("guard: Event not created: %s", exc, extra={"reason": reason})
