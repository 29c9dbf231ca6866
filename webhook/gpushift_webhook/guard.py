"""The migration guard: roll back a move whose new pod does not become Ready in time.

When the sidecar moves a notebook it patches the Notebook, and in the same JSON patch
sets the annotations

* `gpushift.io/notebook-migration` = {"id", "phase", "target", "updated"} (phase
  `recreating`; `updated` ISO 8601 UTC), and
* for a move to GPU, `gpushift.io/notebook-previous-profile` = the move's
  `previous_profile` record (`gpushift_sidecar.notebook_patch.plan_move`).

The notebook-controller then recreates pod `<name>-0` with the new spec. If no node can
take it (no GPU free, quota, taints, the workspace volume's zone) or its image cannot be
pulled, the pod stays Pending and the user waits for nothing. The guard, in the webhook
Deployment, watches for that:

`decide(notebook, pod, now, timeout)` (pure) says what to do with one Notebook:

* phase `patching`/`recreating` (the new pod has not become Ready yet: in `restoring` the
  sidecar of the new pod runs), and pod `<name>-0` is not a Ready pod of the target
  kind `timeout` seconds after `updated`:
  - target `gpu`: ROLLBACK. The reason is the scheduler's message from the pod's
    PodScheduled=False condition ("0/3 nodes are available: 1 Insufficient
    nvidia.com/gpu, ..."), else the waiting reason and message of a container
    (ImagePullBackOff, ErrImagePull, ...), else "pod <name>-0 not Ready after N s".
    A "volume node affinity conflict" gets a sentence on what it means.
  - target `cpu`: FAIL. There is no record to go back to the GPU (and holding a GPU
    again is not what the user wanted): the migration is marked failed with the reason.
* phase `rolled_back`, and pod `<name>-0` still holds a GPU the Notebook no longer asks
  for and is not Ready: DELETE_POD (the deletion of a rollback that did not finish, or a
  pod the StatefulSet made from its old template just before the rollback reached it).
* anything else: NONE.

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

The loop polls the Notebooks of all namespaces every `interval` seconds and reads pod
`<name>-0` only for those with a migration in a guarded phase. It acts only while this
replica holds the guard's Lease (`gpushift_webhook.lease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from gpushift_sidecar.notebook_patch import PlanError, plan_move
from gpushift_webhook.config import DEFAULT_GPU_RESOURCES, WebhookConfig
from gpushift_webhook.kube import KubeError, PatchResult
from gpushift_webhook.labels import MIGRATION_ANNOTATION, PREVIOUS_PROFILE_ANNOTATION
from gpushift_webhook.lease import LeaderElector, LeaseApi, LeaseSettings
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.patches import PatchBuilder

log = logging.getLogger("gpushift.guard")

# The new pod has not become Ready yet: what the guard watches over.
GUARDED_PHASES = frozenset({"patching", "recreating"})
ROLLED_BACK = "rolled_back"
FAILED = "failed"
REASON_MAX = 1000
# Waiting reasons of a container that do not go away by waiting.
STUCK_WAITING = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff",
    "RunContainerError",
})
IMAGE_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                           "ErrImageNeverPull"})
VOLUME_ZONE_HINT = (
    " (the notebook's workspace volume can only be attached to nodes in its own zone, "
    "and no GPU node there can take the pod)")


class ActionKind(StrEnum):
    NONE = "none"
    ROLLBACK = "rollback"
    FAIL = "fail"
    DELETE_POD = "delete_pod"


class MigrationAnnotationError(ValueError):
    """The migration annotation is not the JSON object the sidecar writes."""


@dataclass(frozen=True)
class Migration:
    """The migration annotation of a Notebook, as far as the guard reads it."""

    id: str
    phase: str
    target: str
    updated: dt.datetime | None
    """When the phase was written (UTC); None when missing or not ISO 8601."""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    why: str
    """One line for the log: why this action (or why none)."""
    reason: str = ""
    """For ROLLBACK/FAIL: what the user is shown (the scheduler's message, ...)."""
    reason_class: str = ""
    """A short class of the reason, for metrics: insufficient_resources,
    volume_node_affinity, untolerated_taint, node_selector, unschedulable, image_pull,
    container_waiting, pod_missing, not_ready."""
    migration: Migration | None = None
    delete_pod_uid: str | None = None
    """The uid of the stuck pod to delete (ROLLBACK, DELETE_POD)."""


# ----------------------------------------------------------------------------- reading


def read_migration(notebook: Mapping[str, Any]) -> Migration | None:
    """The migration annotation; None when there is none. MigrationAnnotationError when
    it is there but not understood."""
    annotations = (notebook.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(MIGRATION_ANNOTATION)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MigrationAnnotationError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("phase"), str):
        raise MigrationAnnotationError("not an object with a phase")
    return Migration(id=str(data.get("id") or ""), phase=data["phase"],
                     target=str(data.get("target") or ""),
                     updated=parse_time(data.get("updated")), raw=data)


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_deleting(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def holds_gpu(pod_spec: Mapping[str, Any] | None,
              gpu_resources: Sequence[str] = tuple(DEFAULT_GPU_RESOURCES)) -> bool:
    """Whether a container of the pod spec has a nonzero limit of a GPU resource."""
    for container in (pod_spec or {}).get("containers") or []:
        limits = ((container or {}).get("resources") or {}).get("limits") or {}
        if any(str(limits.get(r, "0")).strip() not in ("", "0") for r in gpu_resources):
            return True
    return False


def notebook_pod_spec(notebook: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = ((notebook.get("spec") or {}).get("template") or {}).get("spec")
    return spec if isinstance(spec, Mapping) else {}


def stuck_reason(pod: Mapping[str, Any] | None, pod_name: str,
                 timeout: float) -> tuple[str, str]:
    """(reason for the user, reason class) of a pod that is not Ready in time."""
    waited = f"{int(timeout)} s"
    if pod is None:
        return f"pod {pod_name} not created after {waited}", "pod_missing"
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            message = str(c.get("message") or c.get("reason") or "the pod cannot be scheduled")
            return _scheduler_reason(message)
    for cs in [*(status.get("initContainerStatuses") or []),
               *(status.get("containerStatuses") or [])]:
        waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in STUCK_WAITING:
            message = str(waiting.get("message") or "").strip()
            text = f"container {cs.get('name')}: {reason}" + (f": {message}" if message else "")
            return text, "image_pull" if reason in IMAGE_WAITING else "container_waiting"
    phase = status.get("phase") or "unknown"
    return f"pod {pod_name} not Ready after {waited} (phase {phase})", "not_ready"


def _scheduler_reason(message: str) -> tuple[str, str]:
    lower = message.lower()
    if "volume node affinity conflict" in lower:
        return message + VOLUME_ZONE_HINT, "volume_node_affinity"
    if "insufficient " in lower:
        return message, "insufficient_resources"
    if "untolerated taint" in lower:
        return message, "untolerated_taint"
    if "node affinity/selector" in lower:
        return message, "node_selector"
    return message, "unschedulable"


# ----------------------------------------------------------------------------- deciding


def decide(notebook: Mapping[str, Any], pod: Mapping[str, Any] | None, now: dt.datetime,
           timeout: float, *,
           gpu_resources: Sequence[str] = tuple(DEFAULT_GPU_RESOURCES)) -> Action:
    """What the guard does about `notebook`, whose pod `<name>-0` is `pod` (None: no such
    pod), at `now`, with `timeout` seconds for the new pod to become Ready."""
    try:
        migration = read_migration(notebook)
    except MigrationAnnotationError as exc:
        return Action(ActionKind.NONE, f"migration annotation not understood: {exc}")
    if migration is None:
        return Action(ActionKind.NONE, "no migration")
    m = migration
    name = str((notebook.get("metadata") or {}).get("name") or "")
    pod_name = f"{name}-0"
    if m.phase == ROLLED_BACK:
        return _after_rollback(notebook, m, pod, gpu_resources)
    if m.phase not in GUARDED_PHASES:
        return Action(ActionKind.NONE, f"phase {m.phase}: nothing to guard", migration=m)
    if m.target not in ("gpu", "cpu"):
        return Action(ActionKind.NONE, f"target {m.target!r} not understood", migration=m)
    if m.updated is None:
        return Action(ActionKind.NONE, "no valid 'updated' time in the annotation",
                      migration=m)
    spec = (pod or {}).get("spec")
    of_target = holds_gpu(spec, gpu_resources) == (m.target == "gpu")
    if pod is not None and of_target and pod_ready(pod) and not pod_deleting(pod):
        return Action(ActionKind.NONE, "the new pod is Ready", migration=m)
    elapsed = (now - m.updated).total_seconds()
    if elapsed < timeout:
        return Action(ActionKind.NONE,
                      f"waiting for the new pod ({elapsed:.0f} of {timeout:.0f} s)",
                      migration=m)
    reason, reason_class = stuck_reason(pod, pod_name, timeout)
    reason = reason[:REASON_MAX]
    if m.target == "cpu":
        return Action(ActionKind.FAIL, "the CPU pod is not Ready in time; there is no "
                      "earlier profile to go back to", reason, reason_class, m)
    stuck = None
    if pod is not None and of_target and not pod_deleting(pod):
        stuck = str((pod.get("metadata") or {}).get("uid") or "") or None
    return Action(ActionKind.ROLLBACK, "the GPU pod is not Ready in time", reason,
                  reason_class, m, stuck)


def _after_rollback(notebook: Mapping[str, Any], m: Migration,
                    pod: Mapping[str, Any] | None, gpu_resources: Sequence[str]) -> Action:
    if (pod is not None and not pod_deleting(pod) and not pod_ready(pod)
            and holds_gpu(pod.get("spec"), gpu_resources)
            and not holds_gpu(notebook_pod_spec(notebook), gpu_resources)):
        uid = str((pod.get("metadata") or {}).get("uid") or "") or None
        return Action(ActionKind.DELETE_POD, "rolled back, but the pod still holds the "
                      "GPU profile and is not Ready", migration=m, delete_pod_uid=uid)
    return Action(ActionKind.NONE, "rolled back", migration=m)


# ----------------------------------------------------------------------------- the patch


@dataclass(frozen=True)
class RollbackPatch:
    kind: ActionKind
    """ROLLBACK, or FAIL when no way back could be planned."""
    operations: list[dict[str, Any]]
    """One JSON patch: `test` of the resourceVersion, the spec put back, the annotations."""
    annotation: dict[str, Any]
    """The migration annotation it writes."""
    reason: str
    summary: str
    """What changed in the spec (plan_move's summary), "" for FAIL."""


def previous_record(notebook: Mapping[str, Any]) -> dict[str, Any] | None:
    annotations = (notebook.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(PREVIOUS_PROFILE_ANNOTATION)
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def rollback_patch(notebook: Mapping[str, Any], action: Action, now: dt.datetime,
                   config: WebhookConfig | None = None) -> RollbackPatch:
    """The one JSON patch that carries out a ROLLBACK or FAIL `action` on `notebook`."""
    if action.kind not in (ActionKind.ROLLBACK, ActionKind.FAIL) or action.migration is None:
        raise ValueError(f"not a rollback: {action.kind}")
    cfg = config or WebhookConfig()
    m = action.migration
    kind, reason, summary = action.kind, action.reason, ""
    spec_ops: list[dict[str, Any]] = []
    annotations = (notebook.get("metadata") or {}).get("annotations") or {}
    if kind is ActionKind.ROLLBACK:
        record = previous_record(notebook)
        attempts: list[dict[str, Any] | None] = [record, None] if record is not None else [None]
        errors: list[str] = []
        for previous in attempts:
            try:
                plan = plan_move(notebook, "cpu", image_map=cfg.image_map, previous=previous,
                                 gpu_resources=cfg.gpu_resources, profiles=cfg.profiles)
            except PlanError as exc:
                errors.append(str(exc))
                continue
            spec_ops = [op for op in plan.operations if op.get("op") != "test"]
            summary = plan.summary
            break
        else:
            kind = ActionKind.FAIL
            reason = f"{reason}; the previous profile could not be restored: {errors[-1]}"
    record_out = {"id": m.id, "phase": ROLLED_BACK if kind is ActionKind.ROLLBACK else FAILED,
                  "target": m.target, "updated": iso_utc(now), "reason": reason[:REASON_MAX]}
    pb = PatchBuilder(notebook)
    pb.set_key(("metadata", "annotations"), MIGRATION_ANNOTATION,
               json.dumps(record_out, separators=(",", ":")))
    if kind is ActionKind.ROLLBACK and PREVIOUS_PROFILE_ANNOTATION in annotations:
        pb.remove(("metadata", "annotations", PREVIOUS_PROFILE_ANNOTATION))
    rv = (notebook.get("metadata") or {}).get("resourceVersion")
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           *spec_ops, *pb.operations]
    return RollbackPatch(kind, ops, record_out, record_out["reason"], summary)


# ----------------------------------------------------------------------------- acting


class GuardApi(LeaseApi, Protocol):
    async def list_notebooks(self) -> list[dict[str, Any]]: ...

    async def patch_notebook(self, namespace: str, name: str, build_ops: Any,
                             attempts: int = 5) -> PatchResult: ...

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool: ...

    async def create_event(self, involved: Mapping[str, Any], reason: str, message: str,
                           type: str = "Normal") -> None: ...


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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MigrationGuard:
    def __init__(self, api: GuardApi, config: WebhookConfig, *,
                 metrics: WebhookMetrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True,
                 clock: Callable[[], dt.datetime] = utcnow,
                 timeout_seconds: float | None = None) -> None:
        self.api = api
        self.config = config
        self.metrics = metrics
        self.is_leader = is_leader
        self.clock = clock
        self.timeout = float(timeout_seconds if timeout_seconds is not None
                             else config.guard.ready_timeout_seconds)
        self._last_logged: dict[tuple[str, str], tuple[str, str, str]] = {}

    def decide(self, notebook: Mapping[str, Any], pod: Mapping[str, Any] | None,
               now: dt.datetime) -> Action:
        return decide(notebook, pod, now, self.timeout, gpu_resources=self.config.gpu_resources)

    async def pass_once(self) -> list[Outcome]:
        """One look at every Notebook; acts only while this replica leads."""
        if not self.is_leader():
            return []
        notebooks = await self.api.list_notebooks()
        now = self.clock()
        outcomes: list[Outcome] = []
        in_flight = 0
        seen: set[tuple[str, str]] = set()
        for nb in notebooks:
            meta = nb.get("metadata") or {}
            ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
            if MIGRATION_ANNOTATION not in (meta.get("annotations") or {}):
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
        if self.metrics is not None:
            self.metrics.guard_in_flight.set(in_flight)
        return outcomes

    async def _one(self, nb: dict[str, Any], ns: str, name: str,
                   now: dt.datetime) -> Outcome:
        try:
            quick = read_migration(nb)
        except MigrationAnnotationError:
            quick = None
        phase = quick.phase if quick is not None else ""
        pod: dict[str, Any] | None = None
        if phase in GUARDED_PHASES or phase == ROLLED_BACK:
            pod = await self.api.get_pod(ns, f"{name}-0")
        action = self.decide(nb, pod, now)
        self._log_decision(ns, name, action)
        if action.kind is ActionKind.NONE:
            return Outcome(ns, name, action.kind, phase)
        if not self.is_leader():
            log.info("guard: no longer the leader; leaving it to the next one",
                     extra={"namespace": ns, "notebook": name})
            return Outcome(ns, name, ActionKind.NONE, phase)
        if action.kind is ActionKind.DELETE_POD:
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
            pod = await self.api.get_pod(ns, pod_name)
            action = self.decide(fresh, pod, now)
            if action.kind not in (ActionKind.ROLLBACK, ActionKind.FAIL):
                return []
            patch = rollback_patch(fresh, action, now, self.config)
            chosen.append((action, patch, pod))
            return patch.operations

        result = await self.api.patch_notebook(ns, name, build)
        if not result.changed or not chosen:
            log.info("guard: nothing to roll back any more", extra={
                "namespace": ns, "notebook": name})
            return Outcome(ns, name, ActionKind.NONE, phase)
        action, patch, pod = chosen[-1]
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
            current = await self.api.get_pod(ns, pod_name)
        return False

    async def _event(self, notebook: Mapping[str, Any], reason: str, type: str,
                     message: str) -> None:
        try:
            await self.api.create_event(notebook, reason, message, type)
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


# ----------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class GuardLoopSettings:
    lease: LeaseSettings
    interval_seconds: float = 5.0
    """Seconds between looks at the Notebooks."""
    ready_timeout_seconds: float | None = None
    """None: the config's guard.ready_timeout_seconds."""


async def run(api: GuardApi, config: WebhookConfig, settings: GuardLoopSettings,
              metrics: WebhookMetrics | None = None) -> None:
    """Elect, and while leading look at the Notebooks every interval, until cancelled;
    on the way out release the Lease."""

    def leader_changed(leading: bool) -> None:
        if metrics is not None:
            metrics.guard_leader.set(1 if leading else 0)

    elector = LeaderElector(api, settings.lease, on_change=leader_changed)
    guard = MigrationGuard(api, config, metrics=metrics,
                           is_leader=lambda: elector.is_leader,
                           timeout_seconds=settings.ready_timeout_seconds)
    log.info("migration guard started", extra={
        "lease": settings.lease.name, "namespace": settings.lease.namespace,
        "identity": settings.lease.identity, "ready_timeout_seconds": guard.timeout,
        "interval_seconds": settings.interval_seconds})
    await elector.tick()
    election = asyncio.create_task(elector.run(tick_first=False))
    try:
        while True:
            if elector.is_leader:
                try:
                    await guard.pass_once()
                except KubeError as exc:
                    log.warning("guard pass failed: %s", exc, extra={"status": exc.status})
                    if metrics is not None:
                        metrics.guard_errors.inc()
            await asyncio.sleep(settings.interval_seconds)
    finally:
        election.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await election
        with contextlib.suppress(KubeError, TimeoutError, OSError):
            await asyncio.wait_for(elector.release(), 5)
        leader_changed(False)
