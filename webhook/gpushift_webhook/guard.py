"""The migration guard: roll back a move whose new pod does not become Ready in time.

When the sidecar moves a notebook it patches the Notebook, and in the same JSON patch
sets the annotations

* `gpushift.io/notebook-migration` = {"id", "phase", "target", "updated"} (phase
  `recreating`; `updated` ISO 8601 UTC), and
* for a move to GPU, `gpushift.io/notebook-previous-profile` = the move's
  `previous_profile` record (`gpushift_core.move_plan.plan_move`).

The notebook-controller then recreates pod `<name>-0` with the new spec. If no node can
take it (no GPU free, quota, taints, the workspace volume's zone) or its image cannot be
pulled, the pod stays Pending and the user waits for nothing. The guard, in the webhook
Deployment, watches for that. What to do about one Notebook (`decide`: ROLLBACK, FAIL,
DELETE_POD or NONE) and the rollback's JSON patch (`rollback_patch`) are pure logic, in
`gpushift_webhook.guard_decision`; this module does the I/O (through
`gpushift_core.kube`), the logging and the metrics.

Acting (`MigrationGuard`): a ROLLBACK is ONE JSON patch of the Notebook (guarded by a
`test` of its resourceVersion; built again on a fresh read, and decided again on it and
on a fresh read of the pod, when the Notebook changed in between) that puts the previous
profile back (`plan_move(notebook, "cpu", previous=<record>)`), sets the migration
annotation to phase `rolled_back` with the reason (same id), and removes the record. Then
the stuck pod is deleted, with a precondition on its uid and resourceVersion: only the
pod that was seen stuck, never a pod recreated in between (a StatefulSet does not replace
a pod that never became Ready when its template is reverted; it must be deleted). Then a
Warning Event `MigrationRolledBack` on the Notebook. A FAIL is the annotation alone
(phase `failed`) and a Warning Event `MigrationFailed`. Once the annotation says
`rolled_back`/`failed`, `decide` has nothing more to do: running twice changes nothing.

A stopped Notebook (Kubeflow's Stop or culler) is not stuck: a CANCEL or TO_CPU
(`gpushift_webhook.guard_stopped.stop_patch`) is one JSON patch of the same kind, then a
Normal Event `MigrationCancelled` or `NotebookStoppedOnGpu`; no pod is deleted (the
StatefulSet has 0 replicas).

A notebook pod whose sidecar cannot start (image pull failure, crash loop) is recreated
without it (`gpushift_webhook.stuck_sidecar`), checked for every Notebook of an enabled
namespace that has no ready replica.

The loop polls the Notebooks of all namespaces every `interval` seconds, keeps those in
namespaces where gpushift is enabled (`gpushift_webhook.enablement`: the chart's
`enablement.mode`, never the excluded namespaces; the namespaces are listed once per
pass), and reads pod `<name>-0` only for those with a migration in a guarded phase. It
acts only while this replica holds the guard's Lease (`gpushift_webhook.lease`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gpushift_certs.issue import utcnow
from gpushift_core.kube import BuildOps, KubeError, PatchResult
from gpushift_core.labels import MIGRATION_ANNOTATION, annotations_of
from gpushift_webhook import failed_create
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.enablement import EnablementMode, namespace_enabled, namespace_selector
from gpushift_webhook.guard_decision import (
    GUARDED_PHASES,
    ROLLED_BACK,
    Action,
    ActionKind,
    MigrationAnnotationError,
    RollbackPatch,
    decide,
    holds_gpu,
    pod_deleting,
    pod_ready,
    read_migration,
)
from gpushift_webhook.guard_stopped import action_patch
from gpushift_webhook.lease import LeaseApi
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.stuck_sidecar import SidecarRelease

log = logging.getLogger("gpushift.guard")


# ----------------------------------------------------------------------------- acting


def _migration_id(notebook: Mapping[str, Any]) -> str:
    try:
        migration = read_migration(notebook)
    except MigrationAnnotationError:
        return ""
    return migration.id if migration is not None else ""


class GuardApi(LeaseApi, Protocol):
    async def list_notebooks(self) -> list[dict[str, Any]]: ...

    async def list_namespaces(self, label_selector: str = "") -> dict[str, dict[str, str]]: ...

    async def find_notebook(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_notebook(self, namespace: str, name: str, build_ops: BuildOps,
                             attempts: int = 5) -> PatchResult: ...

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool: ...

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal") -> Any: ...

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Outcome:
    """What one pass did about one Notebook (for tests and logs)."""

    namespace: str
    notebook: str
    action: ActionKind
    phase: str = ""
    """The migration's phase as this pass found it."""
    applied: bool = False
    """The Notebook was patched (ROLLBACK/FAIL)."""
    pod_deleted: bool = False
    reason: str = ""


class MigrationGuard:
    def __init__(self, api: GuardApi, config: WebhookConfig, *,
                 metrics: WebhookMetrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True,
                 clock: Callable[[], dt.datetime] = utcnow,
                 timeout_seconds: float | None = None,
                 enablement: EnablementMode = EnablementMode.OPT_IN) -> None:
        self.api = api
        self.config = config
        self.enablement = enablement
        self.metrics = metrics
        self.is_leader = is_leader
        self.clock = clock
        self.timeout = float(timeout_seconds if timeout_seconds is not None
                             else config.guard.ready_timeout_seconds)
        self._last_logged: dict[tuple[str, str], tuple[str, str, str]] = {}
        # (namespace, name, migration id) -> when a pass first found no pod `<name>-0`.
        self._missing_since: dict[tuple[str, str, str], dt.datetime] = {}
        self._events_unreadable = False
        self.sidecar_release = SidecarRelease(api, config)

    def decide(self, notebook: Mapping[str, Any], pod: Mapping[str, Any] | None,
               now: dt.datetime, failed_creates: Sequence[Mapping[str, Any]] = ()) -> Action:
        meta = notebook.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""),
               _migration_id(notebook))
        missing_since = self._missing_since.setdefault(key, now) if pod is None else None
        if pod is not None:
            self._missing_since.pop(key, None)
        return decide(notebook, pod, now, self.timeout, gpu_resources=self.config.gpu_resources,
                      failed_creates=failed_creates, missing_since=missing_since)

    async def _failed_creates(self, nb: Mapping[str, Any], ns: str, name: str,
                              pod: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """The FailedCreate Events of StatefulSet `<name>`, read only while a move to GPU
        waits for a GPU pod that is not there (one list per such Notebook and pass). When
        the guard may not list Events (a chart without that rule), the timeout decides."""
        try:
            m = read_migration(nb)
        except MigrationAnnotationError:
            return []
        if m is None or m.phase not in GUARDED_PHASES or m.target != "gpu" or (
                pod is not None and holds_gpu(pod.get("spec"), self.config.gpu_resources)):
            return []
        try:
            return await self.api.list_events(ns, failed_create.selector(name))
        except KubeError as exc:
            if not self._events_unreadable:
                log.warning("guard: Events not listed; a refused pod waits for the timeout: "
                            "%s", exc, extra={"namespace": ns, "status": exc.status})
            self._events_unreadable = True
            return []

    async def pass_once(self) -> list[Outcome]:
        """One look at every Notebook; acts only while this replica leads."""
        if not self.is_leader():
            return []
        notebooks = await self.api.list_notebooks()
        enabled = await self._enabled_namespaces()
        now = self.clock()
        outcomes: list[Outcome] = []
        in_flight = 0
        seen: set[tuple[str, str]] = set()
        for nb in notebooks:
            meta = nb.get("metadata") or {}
            ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
            if ns not in enabled:
                continue
            await self._release_stuck_sidecar(nb, ns, name, now)
            if MIGRATION_ANNOTATION not in annotations_of(nb):
                continue
            seen.add((ns, name))
            try:
                outcome = await self._one(nb, ns, name, now)
            except KubeError as exc:
                log.warning("guard: %s", exc, extra={"namespace": ns, "notebook": name,
                                                     "status": exc.status})
                if self.metrics is not None:
                    self.metrics.guard_errors.inc()
                continue
            outcomes.append(outcome)
            in_flight += outcome.phase in GUARDED_PHASES
        for key in set(self._last_logged) - seen:
            del self._last_logged[key]
        for gone in [k for k in self._missing_since if k[:2] not in seen]:
            del self._missing_since[gone]
        if self.metrics is not None:
            self.metrics.guard_in_flight.set(in_flight)
        return outcomes

    async def _release_stuck_sidecar(self, nb: dict[str, Any], ns: str, name: str,
                                     now: dt.datetime) -> None:
        """A sidecar that cannot start must not keep the notebook from starting
        (`gpushift_webhook.stuck_sidecar`)."""
        try:
            done = await self.sidecar_release.visit(nb, now)
        except KubeError as exc:
            log.warning("guard: stuck sidecar not handled: %s", exc, extra={
                "namespace": ns, "notebook": name, "status": exc.status})
            if self.metrics is not None:
                self.metrics.guard_errors.inc()
            return
        if done == "released" and self.metrics is not None:
            self.metrics.guard_pods_deleted.inc()

    async def _enabled_namespaces(self) -> set[str]:
        """The namespaces the guard acts in, listed afresh each pass: one call, filtered
        by the API server, and checked again here (the selector cannot name the
        excluded namespaces)."""
        listed = await self.api.list_namespaces(namespace_selector(self.enablement))
        return {name for name, labels in listed.items()
                if namespace_enabled(name, labels, self.enablement,
                                     self.config.excluded_namespaces)}

    async def _one(self, nb: dict[str, Any], ns: str, name: str,
                   now: dt.datetime) -> Outcome:
        try:
            quick = read_migration(nb)
        except MigrationAnnotationError:
            quick = None
        phase = quick.phase if quick is not None else ""
        pod: dict[str, Any] | None = None
        if phase in GUARDED_PHASES or phase == ROLLED_BACK:
            pod = await self.api.find_pod(ns, f"{name}-0")
        action = self.decide(nb, pod, now, await self._failed_creates(nb, ns, name, pod))
        self._log_decision(ns, name, action)
        if action.kind is ActionKind.NONE:
            return Outcome(ns, name, action.kind, phase)
        if not self.is_leader():
            log.info("guard: no longer the leader; leaving it to the next one",
                     extra={"namespace": ns, "notebook": name})
            return Outcome(ns, name, ActionKind.NONE, phase)
        if action.kind is ActionKind.DELETE_POD:
            # The pass's list may be older than the pod just read: a new move may have
            # been patched in between, and its Pending pod is not ours to delete. Decide
            # again on a fresh Notebook before deleting anything.
            fresh = await self.api.find_notebook(ns, name)
            if fresh is None or self.decide(fresh, pod, now).kind is not ActionKind.DELETE_POD \
                    or _migration_id(fresh) != _migration_id(nb):
                return Outcome(ns, name, ActionKind.NONE, phase)
            deleted = await self._delete_stuck(ns, f"{name}-0", pod)
            if deleted:
                await self._event(nb, "MigrationPodDeleted", "Normal",
                                  f"Deleted pod {name}-0: it still held the GPU profile of "
                                  "the rolled-back move and was not Ready")
            return Outcome(ns, name, action.kind, phase, pod_deleted=deleted)
        return await self._roll_back(ns, name, now, phase)

    async def _roll_back(self, ns: str, name: str, now: dt.datetime, phase: str) -> Outcome:
        pod_name = f"{name}-0"
        chosen: list[tuple[Action, RollbackPatch, dict[str, Any] | None]] = []

        async def build(fresh: dict[str, Any]) -> list[dict[str, Any]]:
            # Decide again on what is there now: the pod may have become Ready, the
            # sidecar may have moved on, another guard may have rolled back already.
            chosen.clear()
            pod = await self.api.find_pod(ns, pod_name)
            action = self.decide(fresh, pod, now,
                                 await self._failed_creates(fresh, ns, name, pod))
            patch = action_patch(fresh, action, now, self.config)
            if patch is None:
                return []
            chosen.append((action, patch, pod))
            return patch.operations

        result = await self.api.patch_notebook(ns, name, build)
        if not result.changed or not chosen:
            log.info("guard: nothing to roll back any more", extra={
                "namespace": ns, "notebook": name})
            return Outcome(ns, name, ActionKind.NONE, phase)
        action, patch, pod = chosen[-1]
        if patch.kind in (ActionKind.CANCEL, ActionKind.TO_CPU):
            return await self._stopped(ns, name, phase, action, patch,
                                       notebook=result.notebook)
        m = action.migration
        assert m is not None
        deleted = False
        if patch.kind is ActionKind.ROLLBACK and action.delete_pod_uid and pod is not None:
            deleted = await self._delete_stuck(ns, pod_name, pod)
        fields = {"namespace": ns, "notebook": name, "migration_id": m.id,
                  "phase": patch.annotation["phase"], "target": m.target,
                  "action": patch.kind.value, "reason": patch.reason,
                  "reason_class": action.reason_class, "pod_deleted": deleted}
        if patch.kind is ActionKind.ROLLBACK:
            message = (f"The move to {m.target.upper()} was rolled back: {patch.reason}. "
                       f"Previous profile restored ({patch.summary})"
                       + (f"; stuck pod {pod_name} deleted." if deleted else "."))
            await self._event(result.notebook, "MigrationRolledBack", "Warning", message)
            if self.metrics is not None:
                self.metrics.guard_rollbacks.labels(action.reason_class).inc()
            log.warning("guard: migration rolled back", extra={**fields,
                                                                "summary": patch.summary})
        else:
            message = (f"The move to {m.target.upper()} failed: {patch.reason}. There is no "
                       "earlier profile to go back to; the Notebook was left as it is.")
            await self._event(result.notebook, "MigrationFailed", "Warning", message)
            if self.metrics is not None:
                self.metrics.guard_failures.labels(action.reason_class).inc()
            log.warning("guard: migration marked failed", extra=fields)
        return Outcome(ns, name, patch.kind, phase, applied=True, pod_deleted=deleted,
                       reason=patch.reason)

    async def _stopped(self, ns: str, name: str, phase: str, action: Action,
                       patch: RollbackPatch, *, notebook: Mapping[str, Any]) -> Outcome:
        """Tell what a CANCEL / TO_CPU on a stopped Notebook did."""
        m = action.migration
        restored = (f"; its CPU profile was restored while it is stopped ({patch.summary}): "
                    "Start brings it up on CPU" if patch.summary else "")
        if patch.kind is ActionKind.CANCEL and m is not None:
            reason, message = "MigrationCancelled", (
                f"The move to {m.target.upper()} was cancelled: {patch.reason}{restored}.")
        else:
            reason, message = "NotebookStoppedOnGpu", (
                "The notebook was stopped on a GPU" + (restored or f": {patch.reason}") + ".")
        await self._event(notebook, reason, "Normal", message)
        log.info("guard: stopped notebook", extra={
            "namespace": ns, "notebook": name, "migration_id": m.id if m else None,
            "action": patch.kind.value, "reason": patch.reason or None,
            "summary": patch.summary or None})
        return Outcome(ns, name, patch.kind, phase, applied=True, reason=patch.reason)

    async def _delete_stuck(self, ns: str, pod_name: str, pod: Mapping[str, Any] | None,
                            attempts: int = 3) -> bool:
        """Delete the pod seen stuck, only while it is that pod (uid) and unchanged
        (resourceVersion); when it changed, look again: still stuck, same uid -> retry."""
        current = pod
        uid = str(((pod or {}).get("metadata") or {}).get("uid") or "")
        for _ in range(attempts):
            meta = (current or {}).get("metadata") or {}
            if (current is None or not uid or meta.get("uid") != uid or pod_deleting(current)
                    or pod_ready(current)):
                return False
            if await self.api.delete_pod(ns, pod_name, uid, meta.get("resourceVersion")):
                if self.metrics is not None:
                    self.metrics.guard_pods_deleted.inc()
                log.info("guard: stuck pod deleted", extra={
                    "namespace": ns, "pod": pod_name, "uid": uid})
                return True
            current = await self.api.find_pod(ns, pod_name)
        return False

    async def _event(self, notebook: Mapping[str, Any], reason: str, type: str,
                     message: str) -> None:
        try:
            namespace = str((notebook.get("metadata") or {}).get("namespace") or "")
            await self.api.create_event(namespace, notebook, reason, message, type)
        except KubeError as exc:  # the rollback stands; the story misses a line
            log.warning("guard: Event not created: %s", exc, extra={"reason": reason})

    def _log_decision(self, ns: str, name: str, action: Action) -> None:
        m = action.migration
        key = (m.id if m else "", m.phase if m else "", action.kind.value)
        level = logging.INFO if self._last_logged.get((ns, name)) != key else logging.DEBUG
        self._last_logged[(ns, name)] = key
        log.log(level, "guard decision", extra={
            "namespace": ns, "notebook": name, "migration_id": m.id if m else None,
            "phase": m.phase if m else None, "target": m.target if m else None,
            "action": action.kind.value, "why": action.why,
            "reason": action.reason or None})
