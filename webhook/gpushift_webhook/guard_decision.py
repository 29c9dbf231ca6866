"""The migration guard's pure part: what to do about one Notebook, and the one JSON patch
that rolls a move back. No I/O here: `gpushift_webhook.guard` reads the cluster, acts on
what this module says, logs and counts.

The sidecar's migration annotations are described in `gpushift_webhook.guard`.

`decide(notebook, pod, now, timeout, failed_creates=...)` says what to do with one Notebook:

* phase `patching`/`recreating`, target `gpu`, no GPU pod `<name>-0`, and a FailedCreate
  Event of StatefulSet `<name>` newer than `updated` among `failed_creates`
  (`gpushift_webhook.failed_create`): ROLLBACK at once, the apiserver's message (quota,
  LimitRange, Pod Security) as the reason. Waiting would not help.
* phase `patching`/`recreating` (the new pod has not become Ready yet: in `restoring` the
  sidecar of the new pod runs), and pod `<name>-0` is not a Ready pod of the target
  kind `timeout` seconds after `updated` — or after a later start of the wait
  (`waiting_since`: a pod of the target kind created or deleted, no pod found):
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
* the Notebook is stopped (Kubeflow's `kubeflow-resource-stopped`: the dashboard's Stop or
  the culler; the StatefulSet has 0 replicas, no pod comes): a stopped Notebook is
  stopped, not stuck.
  - a migration not yet `restoring` (the sidecar's phases before the patch, and the
    guarded ones): CANCEL, reason STOPPED_DURING_MOVE. No timeout: nothing is waited for.
  - else, the spec holds a GPU and there is a previous-profile record: TO_CPU (the
    Notebook goes back to its CPU profile while stopped; Start brings it up on CPU).
    Without a record (created on a GPU) it is left as it is.
* anything else: NONE.

`rollback_patch(notebook, action, now)` is the ROLLBACK as ONE JSON patch of the Notebook
(first a `test` of its resourceVersion) that puts the previous profile back
(`plan_move(notebook, "cpu", previous=<record>)`), sets the migration annotation to phase
`rolled_back` with the reason (same id), and removes the record; a FAIL (or a ROLLBACK
whose previous profile cannot be planned) is the annotation alone, phase `failed`. Once
the annotation says `rolled_back`/`failed`, `decide` has nothing more to do.

A CANCEL or TO_CPU is carried out by `gpushift_webhook.guard_stopped.stop_patch` (pure).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES
from gpushift_core.labels import (
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
    annotations_of,
)
from gpushift_core.move_plan import PlanError, plan_move
from gpushift_core.notebook_stop import STOPPED_DURING_MOVE, stopped
from gpushift_core.patches import PatchBuilder
from gpushift_core.rollback_record import read_previous_profile
from gpushift_core.timestamps import iso_utc, parse_utc
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.failed_create import newest_failed_create

# The new pod has not become Ready yet: what the guard watches over.
GUARDED_PHASES = frozenset({"patching", "recreating"})
ROLLED_BACK = "rolled_back"
FAILED = "failed"
CANCELLED = "cancelled"
# A migration the sidecar has not carried to `restoring` yet: a Stop cancels it. (In
# `restoring` the new pod was Ready on the target: the move happened.)
CANCELLABLE_PHASES = frozenset({"requested", "checkpointing", "checkpointed", *GUARDED_PHASES})
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
    CANCEL = "cancel"
    TO_CPU = "to_cpu"


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
    container_waiting, pod_missing, not_ready, failed_create."""
    migration: Migration | None = None
    delete_pod_uid: str | None = None
    """The uid of the stuck pod to delete (ROLLBACK, DELETE_POD)."""

# ----------------------------------------------------------------------------- reading


def read_migration(notebook: Mapping[str, Any]) -> Migration | None:
    """The migration annotation; None when there is none. MigrationAnnotationError when
    it is there but not understood."""
    text = annotations_of(notebook).get(MIGRATION_ANNOTATION)
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
                     updated=parse_utc(data.get("updated")), raw=data)


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
           gpu_resources: Sequence[str] = tuple(DEFAULT_GPU_RESOURCES),
           failed_creates: Sequence[Mapping[str, Any]] = (),
           missing_since: dt.datetime | None = None) -> Action:
    """What the guard does about `notebook`, whose pod `<name>-0` is `pod` (None: no such
    pod), at `now`, with `timeout` seconds for the new pod to become Ready.
    `failed_creates`: the FailedCreate Events of StatefulSet `<name>` (those older than
    the migration are ignored here). `missing_since`: when the guard first found no pod
    (None: not known)."""
    try:
        migration = read_migration(notebook)
    except MigrationAnnotationError as exc:
        return Action(ActionKind.NONE, f"migration annotation not understood: {exc}")
    if stopped(notebook):
        return _while_stopped(notebook, migration, gpu_resources)
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
    refused = None if m.target != "gpu" or (pod is not None and of_target) else \
        newest_failed_create(failed_creates, name, m.updated)
    if refused is not None:
        message = str(refused.get("message") or "").strip() or \
            f"the StatefulSet could not create pod {pod_name}"
        return Action(ActionKind.ROLLBACK, "the apiserver refused the GPU pod (FailedCreate)",
                      message[:REASON_MAX], "failed_create", m)
    elapsed = (now - waiting_since(m.updated, pod, of_target, missing_since)).total_seconds()
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


def waiting_since(updated: dt.datetime, pod: Mapping[str, Any] | None, of_target: bool,
                  missing_since: dt.datetime | None) -> dt.datetime:
    """When the wait for a Ready pod last began: the move's `updated`, or later the
    creation of a pod of the target kind, the deletion of one (the StatefulSet replaces
    it from the same template: someone deleted a scheduled pod, as an admin does with one
    created without the sidecar) or the first pass that found no pod (the gap between a
    deletion and its replacement). A pod that cannot be scheduled is created at once, so
    its wait is the move's."""
    moments = [updated]
    if pod is None and missing_since is not None:
        moments.append(missing_since)
    elif pod is not None and of_target:
        meta = pod.get("metadata") or {}
        moments.append(parse_utc(meta.get("creationTimestamp")) or updated)
        if _scheduled(pod):  # an unschedulable pod's replacement would be just as stuck
            moments.append(parse_utc(meta.get("deletionTimestamp")) or updated)
    return max(moments)


def _scheduled(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "PodScheduled" and c.get("status") == "True"
               for c in conditions)


def _while_stopped(notebook: Mapping[str, Any], m: Migration | None,
                   gpu_resources: Sequence[str]) -> Action:
    if m is not None and m.phase in CANCELLABLE_PHASES and m.target in ("gpu", "cpu"):
        return Action(ActionKind.CANCEL, "the Notebook was stopped during the move",
                      STOPPED_DURING_MOVE, "stopped", m)
    if holds_gpu(notebook_pod_spec(notebook), gpu_resources) \
            and read_previous_profile(notebook) is not None:
        return Action(ActionKind.TO_CPU, "stopped on a GPU: back to its CPU profile while "
                      "stopped", migration=m)
    if holds_gpu(notebook_pod_spec(notebook), gpu_resources):
        return Action(ActionKind.NONE, "stopped on a GPU it was created with (no record): "
                      "left as it is", migration=m)
    return Action(ActionKind.NONE, "stopped", migration=m)


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


def rollback_patch(notebook: Mapping[str, Any], action: Action, now: dt.datetime,
                   config: WebhookConfig | None = None) -> RollbackPatch:
    """The one JSON patch that carries out a ROLLBACK or FAIL `action` on `notebook`."""
    if action.kind not in (ActionKind.ROLLBACK, ActionKind.FAIL) or action.migration is None:
        raise ValueError(f"not a rollback: {action.kind}")
    cfg = config or WebhookConfig()
    m = action.migration
    kind, reason, summary = action.kind, action.reason, ""
    spec_ops: list[dict[str, Any]] = []
    annotations = annotations_of(notebook)
    if kind is ActionKind.ROLLBACK:
        spec_ops, summary, error = cpu_spec(notebook, cfg)
        if error is not None:
            kind = ActionKind.FAIL
            reason = f"{reason}; the previous profile could not be restored: {error}"
    pb = PatchBuilder(notebook)
    record_out = set_mirror(pb, m, ROLLED_BACK if kind is ActionKind.ROLLBACK else FAILED,
                            now, reason)
    if kind is ActionKind.ROLLBACK and PREVIOUS_PROFILE_ANNOTATION in annotations:
        pb.remove(("metadata", "annotations", PREVIOUS_PROFILE_ANNOTATION))
    return RollbackPatch(kind, guarded_ops(notebook, spec_ops, pb), record_out,
                         record_out["reason"], summary)


def set_mirror(pb: PatchBuilder, m: Migration, phase: str, now: dt.datetime,
               reason: str) -> dict[str, Any]:
    """Set the migration annotation to `phase` with `reason` (same id, target and
    trigger) in `pb`; returns the record written."""
    record = {"id": m.id, "phase": phase, "target": m.target, "updated": iso_utc(now),
              "reason": reason[:REASON_MAX]}
    trigger = m.raw.get("trigger")
    if isinstance(trigger, str) and trigger:
        record["trigger"] = trigger  # what started the move, kept for the GPU-hours
    pb.set_key(("metadata", "annotations"), MIGRATION_ANNOTATION,
               json.dumps(record, separators=(",", ":")))
    return record


def guarded_ops(notebook: Mapping[str, Any], spec_ops: list[dict[str, Any]],
                pb: PatchBuilder) -> list[dict[str, Any]]:
    """One patch: a `test` of the resourceVersion read, then the spec's and `pb`'s
    operations (a Notebook changed since it was read refuses it whole)."""
    rv = (notebook.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            *spec_ops, *pb.operations]


def cpu_spec(notebook: Mapping[str, Any], cfg: WebhookConfig,
              ) -> tuple[list[dict[str, Any]], str, str | None]:
    """(spec operations, summary, None) that put the previous profile back (from the
    record; without it when the record cannot be planned), or ([], "", error)."""
    record = read_previous_profile(notebook)
    attempts: list[dict[str, Any] | None] = [record, None] if record is not None else [None]
    errors: list[str] = []
    for previous in attempts:
        try:
            plan = plan_move(notebook, "cpu", image_map=cfg.image_map, previous=previous,
                             gpu_resources=cfg.gpu_resources, profiles=cfg.profiles)
        except PlanError as exc:
            errors.append(str(exc))
            continue
        return [op for op in plan.operations if op.get("op") != "test"], plan.summary, None
    return [], "", errors[-1]
