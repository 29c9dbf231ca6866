"""The migration runner's decisions (pure): what to patch, and where to carry on.

`gpushift_sidecar.runner` does the waiting, the API calls and the persisting; every
choice it makes is a function of this module, given the migration, this pod's facts
and a Notebook as read from the API:

* `plan_patch`: the one JSON Patch that moves the Notebook — `plan_move`'s operations
  (`gpushift_core.move_plan`) plus, atomically with them, the migration mirror (phase
  `recreating`) and,
  for a move to GPU, the record of the previous profile as Notebook annotations (keys
  with "notebook" in them: the notebook-controller copies every other Notebook annotation
  into the pod template). A mirror of this migration in a post-patch phase means the
  patch landed already (a sidecar killed after the patch, before persisting): nothing is
  patched twice. A stopped Notebook (`kubeflow-resource-stopped`), or a mirror the guard
  marked `cancelled`, is not patched: the migration ends `cancelled`.
* `resume_action`: on sidecar start, which step an unfinished migration resumes with; in
  `recreating`, whether this pod is the one the migration started in (same UID) or the
  pod that replaced it.
* `new_pod_outcome` / `old_pod_outcome`: in `recreating`, what the new pod (restore, or
  the guard rolled the move back) or a restarted old pod (keep waiting, patch again, or
  rolled back) does.
* the mirror itself (`mirror_ops`, `read_mirror`) is `gpushift_sidecar.migration_mirror`.
* `restore_deadline` / `restore_timeout_error`: `restoring` ends: when no restore was
  reported in time, the move ends `failed`, the checkpoint kept.

The guard (gpushift_webhook.guard) marks a rollback by writing the mirror with the
migration's id, phase `rolled_back` and the reason in `reason` (a move to CPU it cannot
undo: phase `failed`; a move on a Notebook that was stopped: phase `cancelled`); the
sidecar takes each over when it finds it (`error` is read too).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gpushift_core.admin_settings import AdminSettings, GpuFacts, GpuProfile
from gpushift_core.move_plan import MovePlan, PlanError, plan_move, unmapped_image_setting
from gpushift_core.notebook_stop import STOPPED_DURING_MOVE, stopped
from gpushift_core.patches import PatchBuilder
from gpushift_core.rollback_record import read_previous_profile
from gpushift_core.timestamps import parse_utc
from gpushift_sidecar.migration_mirror import ANNOTATIONS, Mirror, read_mirror
from gpushift_sidecar.state import (
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
    Migration,
    Phase,
    Target,
)

__all__ = [
    "NO_CHECKPOINT_NOTE",
    "OldPodAction",
    "PatchDecision",
    "PatchKind",
    "ResumeAction",
    "guard_verdict",
    "new_pod_outcome",
    "old_pod_outcome",
    "plan_patch",
    "resume_action",
    "runs_on_target",
    "spec_on_target",
]

NO_CHECKPOINT_NOTE = ("no checkpoint was named: the kernel state will not be restored on "
                      "the new pod")
# A mirror of the migration in one of these phases was written with or after the patch.
_PATCHED = frozenset({Phase.RECREATING, Phase.RESTORING, Phase.DONE, Phase.ROLLED_BACK})


# ----------------------------------------------------------------------------- the patch


class PatchKind(StrEnum):
    PATCH = "patch"
    """Operations to apply: the move."""
    LANDED = "landed"
    """The mirror shows this migration after the patch: it was applied already."""
    NOTHING = "nothing"
    """The Notebook already is as the target wants."""
    CANCELLED = "cancelled"
    """The Notebook is stopped, or the guard cancelled the migration: end it so."""


@dataclass(frozen=True)
class PatchDecision:
    kind: PatchKind
    operations: list[dict[str, Any]]
    plan: MovePlan | None
    previous_profile: dict[str, Any] | None
    """What to record in the tracker: the plan's record, or (landed) the one on the
    Notebook for a move to GPU."""
    reason: str | None = None
    """CANCELLED: why."""


def move_profile(migration: Migration, settings: AdminSettings,
                 held: GpuFacts | None) -> GpuProfile | None:
    """The GpuProfile handed to plan_move: the migration's (or the default) to GPU; the
    one this pod holds to CPU (used only when there is no record to restore)."""
    if migration.target is Target.GPU:
        profile = settings.profile(migration.profile or settings.default_profile)
        if profile is None:
            raise PlanError(f"GPU profile {migration.profile!r} is not one of the admin's")
        return profile
    return settings.matching_profile(held)


def plan_for(notebook: Mapping[str, Any], migration: Migration, settings: AdminSettings, *,
             container: str | None, held: GpuFacts | None) -> MovePlan:
    """`plan_move` for this migration (PlanError when it cannot be planned). The record
    of the move to GPU goes with a move to CPU (what to restore) and with a move to
    another GPU profile (the CPU original the new profile starts from)."""
    previous = read_previous_profile(notebook)
    try:
        return plan_move(notebook, migration.target.value,
                         move_profile(migration, settings, held), settings.image_map,
                         container=container or None, previous=previous,
                         gpu_resources=settings.gpu_resources, profiles=settings.profiles,
                         unmapped_image=unmapped_image_setting(settings.unmapped_image,
                                                               migration.keep_image))
    except PlanError:
        if previous is None or migration.target is Target.GPU:
            raise  # a move to GPU ignores a record it does not understand
        # A record this code does not understand: take the GPU away without it.
        return plan_move(notebook, migration.target.value,
                         move_profile(migration, settings, held), settings.image_map,
                         container=container or None,
                         gpu_resources=settings.gpu_resources, profiles=settings.profiles)


def spec_on_target(notebook: Mapping[str, Any], migration: Migration,
                   settings: AdminSettings, *, container: str | None,
                   held: GpuFacts | None) -> bool:
    """Whether the Notebook's spec already is what the move makes of it."""
    return not plan_for(notebook, migration, settings, container=container,
                        held=held).operations


def plan_patch(notebook: Mapping[str, Any], migration: Migration, settings: AdminSettings,
               *, now: dt.datetime, container: str | None, held: GpuFacts | None,
               trust_mirror: bool = True) -> PatchDecision:
    """The decision of the `patching` step against a fresh read of the Notebook.

    `migration` is in `patching`; the mirror written with the patch shows it in
    `recreating` at `now` (the time the runner then persists). `trust_mirror=False`
    patches again even though the mirror says the patch landed (a restarted old pod
    that finds the spec changed back)."""
    mirror = read_mirror(notebook)
    if (trust_mirror and mirror is not None and mirror.id == migration.id
            and mirror.phase in _PATCHED):
        landed = read_previous_profile(notebook) if migration.target is Target.GPU else None
        return PatchDecision(PatchKind.LANDED, [], None, landed)
    verdict = guard_verdict(migration, mirror)
    if verdict is not None and verdict[0] is Phase.CANCELLED:
        return PatchDecision(PatchKind.CANCELLED, [], None, None, verdict[1])
    if stopped(notebook):
        # A move never starts on a stopped Notebook: it has no pod to move (Kubeflow's
        # Stop or culler came while the checkpoint was taken).
        return PatchDecision(PatchKind.CANCELLED, [], None, None, STOPPED_DURING_MOVE)
    plan = plan_for(notebook, migration, settings, container=container, held=held)
    if not plan.operations:
        return PatchDecision(PatchKind.NOTHING, [], plan, None)
    recreating = (migration.advance(Phase.RECREATING, now=now)
                  if migration.phase is Phase.PATCHING else migration)
    pb = PatchBuilder(notebook)
    pb.set_key(ANNOTATIONS, MIGRATION_ANNOTATION, recreating.to_annotation())
    if migration.target is Target.GPU:
        pb.set_key(ANNOTATIONS, PREVIOUS_PROFILE_ANNOTATION,
                   json.dumps(plan.previous_profile, separators=(",", ":"), sort_keys=True))
    return PatchDecision(PatchKind.PATCH, [*plan.operations, *pb.operations], plan,
                         plan.previous_profile)


# ----------------------------------------------------------------------------- resuming


class ResumeAction(StrEnum):
    REQUEST = "request"
    """requested: announce it and start with the checkpoint."""
    VERIFY = "verify"
    """checkpointing: verify the checkpoint (again)."""
    PATCH = "patch"
    """checkpointed / patching: patch (a landed patch is recognised by the mirror)."""
    NEW_POD = "new_pod"
    """recreating, in the pod that replaced the source pod."""
    OLD_POD = "old_pod"
    """recreating, in the source pod (the sidecar restarted before the pod went)."""
    AWAIT_RESTORE = "await_restore"
    """restoring: wait for the server extension's POST /migrations/current/restore, until
    `restore_deadline`."""
    NOTHING = "nothing"
    """The migration ended."""


def runs_on_target(migration: Migration, gpu: GpuFacts | None,
                   settings: AdminSettings) -> bool:
    """Whether a pod with these GPU facts is where the migration goes."""
    if migration.target is Target.CPU:
        return gpu is None
    if gpu is None:
        return False
    profile = settings.profile(migration.profile or settings.default_profile)
    if profile is None:
        return True
    # The profile the pod's spec shows, when known: the same GPU on other nodes is not
    # the target.
    return (profile.resource, profile.count) == (gpu.resource, gpu.count) and (
        not gpu.profile or gpu.profile == profile.name)


def resume_action(migration: Migration, pod_uid: str, on_target: bool) -> ResumeAction:
    """Where an unfinished migration carries on in a sidecar that (re)started in the pod
    with `pod_uid`. Without both UIDs, the pod's GPU facts decide: a pod already where
    the migration goes is the new one."""
    phase = migration.phase
    if not migration.active:
        return ResumeAction.NOTHING
    if phase is Phase.REQUESTED:
        return ResumeAction.REQUEST
    if phase is Phase.CHECKPOINTING:
        return ResumeAction.VERIFY
    if phase in (Phase.CHECKPOINTED, Phase.PATCHING):
        return ResumeAction.PATCH
    if phase is Phase.RESTORING:
        return ResumeAction.AWAIT_RESTORE
    known = bool(pod_uid and migration.source_pod_uid)
    new = pod_uid != migration.source_pod_uid if known else on_target
    return ResumeAction.NEW_POD if new else ResumeAction.OLD_POD


def guard_verdict(migration: Migration, mirror: Mirror | None) -> tuple[Phase, str] | None:
    """The cluster-side guard's end of this migration, when the mirror shows one."""
    if mirror is None or mirror.id != migration.id:
        return None
    if mirror.phase is Phase.ROLLED_BACK:
        return Phase.ROLLED_BACK, mirror.error or "rolled back by the cluster-side guard"
    if mirror.phase is Phase.FAILED:
        return Phase.FAILED, mirror.error or "marked failed by the cluster-side guard"
    if mirror.phase is Phase.CANCELLED:
        return Phase.CANCELLED, mirror.error or STOPPED_DURING_MOVE
    return None


def new_pod_outcome(migration: Migration, mirror: Mirror | None, on_target: bool,
                    pod: str) -> tuple[Phase, str | None]:
    """The new pod's step out of `recreating`: `restoring`, or `rolled_back` / `failed` /
    `cancelled` with the reason (the guard marked the mirror, or this pod is not where
    the move went)."""
    verdict = guard_verdict(migration, mirror)
    if verdict is not None:
        return verdict
    if not on_target:
        where = "a GPU" if migration.target is Target.CPU else "CPU"
        return Phase.ROLLED_BACK, (
            f"the pod that replaced {migration.source_pod} ({pod}) runs on {where}, not on "
            f"the target {migration.target.value.upper()}: the Notebook was changed back "
            "before the move completed")
    return Phase.RESTORING, None


class OldPodAction(StrEnum):
    WAIT = "wait"
    """The Notebook shows the target: this pod is about to be replaced."""
    REPATCH = "repatch"
    """The spec does not show the target (and the guard marked nothing): patch again."""
    GUARD = "guard"
    """The guard ended the migration (rolled back, failed or cancelled): take its
    verdict."""


def old_pod_outcome(migration: Migration, mirror: Mirror | None, on_target_spec: bool,
                    ) -> tuple[OldPodAction, tuple[Phase, str] | None]:
    verdict = guard_verdict(migration, mirror)
    if verdict is not None:
        return OldPodAction.GUARD, verdict
    if on_target_spec:
        return OldPodAction.WAIT, None
    return OldPodAction.REPATCH, None


def restore_deadline(migration: Migration, timeout: float) -> dt.datetime | None:
    """When a migration in `restoring` ends failed unless a restore was reported:
    `timeout` seconds after it entered `restoring`, by its persisted history, so a
    restarted sidecar keeps the same deadline. None when it is not restoring."""
    if migration.phase is not Phase.RESTORING:
        return None
    entered = next((parse_utc(h.at) for h in reversed(migration.history)
                    if h.phase is Phase.RESTORING), None)
    return None if entered is None else entered + dt.timedelta(seconds=timeout)


def save_deadline(migration: Migration, timeout: float) -> dt.datetime:
    """When a move waiting for its checkpoints fails: `timeout` seconds after it entered
    `checkpointing`, by its persisted history (a restarted sidecar keeps it)."""
    entered = next((parse_utc(h.at) for h in reversed(migration.history)
                    if h.phase is Phase.CHECKPOINTING), None)
    start = entered or parse_utc(migration.updated_at) or dt.datetime.now(dt.UTC)
    return start + dt.timedelta(seconds=timeout)


def save_timeout_error(timeout: float) -> str:
    """Why a move failed waiting for its checkpoints, for the user and the Events."""
    return (f"the notebooks were not saved within {timeout:g}s (the notebook server did "
            "not name the checkpoints: it restarted, or a kernel is busy): nothing was "
            "changed")


def restore_timeout_error(migration: Migration, timeout: float) -> str:
    """Why the move ended at its restore deadline, for the user and the Events."""
    count = len(migration.checkpoints)
    kept = ("it had no checkpoint" if count == 0 else
            f"its checkpoint (kishu commit {migration.checkpoints[0].commit_id}) is kept on "
            "the workspace volume and is offered when the notebook is opened" if count == 1
            else f"its {count} checkpoints (one per notebook) are kept on the workspace "
            "volume and are offered when the notebooks are opened")
    return (f"no restore was reported within {timeout:g}s of the new pod: the move ended "
            f"here, so the idle timer and later moves go on; {kept}")
