"""The migration state machine: phases, transitions and the migration record (pure).

    requested -> checkpointing -> checkpointed -> patching -> recreating -> restoring -> done

Any unfinished phase may end in `failed`. Once the Notebook may have been patched
(`patching`, `recreating`, `restoring`) it may instead end in `rolled_back`, meaning the
previous profile was put back. Any unfinished phase may also end in `cancelled`: the
Notebook was stopped (Kubeflow's Stop or culler, `kubeflow-resource-stopped`) during the
move; the checkpoint stays on the volume. All three need a reason, which the user is
shown. One shortcut:
`patching -> done` when the Notebook already was as the target wants (nothing patched,
no pod recreated; the migration's `notes` say so).

The state lives on the workspace PVC (`state_file.MigrationStore`), which moves with the
notebook: the sidecar of the new pod reads it and carries on (restore, pending cell). The
Notebook annotation `gpushift.io/notebook-migration` mirrors a summary (`to_annotation()`)
for the cluster-side guard.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gpushift_core import labels
from gpushift_core.timestamps import iso_utc, parse_utc
from gpushift_sidecar.env import SidecarEnv

# The key must contain "notebook": Kubeflow's notebook-controller copies every other
# Notebook annotation into the pod template, and changing the template recreates the pod.
# MIGRATION_ANNOTATION and PREVIOUS_PROFILE_ANNOTATION are defined once, in
# gpushift_core.labels (the guard reads and writes them too). The second holds JSON of
# the last move to GPU's `gpushift_core.move_plan.MovePlan.previous_profile`, written in the same
# patch as the move: the move back to CPU, and the guard's rollback, read it there.
MIGRATION_ANNOTATION = labels.MIGRATION_ANNOTATION
PREVIOUS_PROFILE_ANNOTATION = labels.PREVIOUS_PROFILE_ANNOTATION
SCHEMA = 1


class Phase(StrEnum):
    REQUESTED = "requested"
    CHECKPOINTING = "checkpointing"
    CHECKPOINTED = "checkpointed"
    PATCHING = "patching"
    RECREATING = "recreating"
    RESTORING = "restoring"
    DONE = "done"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Target(StrEnum):
    GPU = "gpu"
    CPU = "cpu"


class Reason(StrEnum):
    AUTO = "auto"  # a cell that needs a GPU asked for it
    MANUAL = "manual"  # the user pressed the button
    IDLE = "idle"  # the GPU sat idle past the timeout


ENDED = frozenset({Phase.DONE, Phase.ROLLED_BACK, Phase.FAILED, Phase.CANCELLED})
_NEXT_STEP = {
    Phase.REQUESTED: Phase.CHECKPOINTING,
    Phase.CHECKPOINTING: Phase.CHECKPOINTED,
    Phase.CHECKPOINTED: Phase.PATCHING,
    Phase.PATCHING: Phase.RECREATING,
    Phase.RECREATING: Phase.RESTORING,
    Phase.RESTORING: Phase.DONE,
}
# Before `patching` nothing outside the kernel changed: there is nothing to roll back.
_MAY_ROLL_BACK = frozenset({Phase.PATCHING, Phase.RECREATING, Phase.RESTORING})
# The Notebook already was as the target wants: nothing patched, nothing to restore.
_SHORTCUTS = frozenset({(Phase.PATCHING, Phase.DONE)})


class IllegalTransition(ValueError):
    """A phase change the state machine does not allow."""


class CorruptState(ValueError):
    """A state file that does not hold a migration this sidecar understands."""


def check_transition(current: Phase, new: Phase, error: str | None) -> None:
    """Raise IllegalTransition unless `current -> new` is a step of a migration."""
    if current in ENDED:
        raise IllegalTransition(f"the migration already ended ({current})")
    if new in (Phase.FAILED, Phase.CANCELLED) or (new is Phase.ROLLED_BACK
                                                 and current in _MAY_ROLL_BACK):
        if not error:
            raise IllegalTransition(f"{current} -> {new} needs a reason")
        return
    if _NEXT_STEP.get(current) is not new and (current, new) not in _SHORTCUTS:
        raise IllegalTransition(f"{current} -> {new} is not a step of a migration")
    if error:
        raise IllegalTransition(f"{current} -> {new} is a step forward: it takes no error")


@dataclass(frozen=True)
class CheckpointRef:
    notebook_path: str
    """Absolute path of the notebook whose kishu database holds the checkpoint."""
    commit_id: str
    """The kishu commit to restore."""


@dataclass(frozen=True)
class PendingCell:
    notebook_path: str
    """Absolute path of the notebook the cell belongs to."""
    cell_id: str
    """The cell's id in the notebook (nbformat 4.5)."""
    code: str
    """The source that asked for the move; it runs once the state is restored."""


@dataclass(frozen=True)
class PhaseChange:
    phase: Phase
    at: str
    """ISO 8601 UTC time of the change."""
    error: str | None = None


@dataclass(frozen=True)
class Migration:
    id: str
    notebook: str
    namespace: str
    source_pod: str
    """Name of the pod the migration started in (the new pod has the same name)."""
    source_pod_uid: str
    """UID of that pod: a sidecar with another UID runs in the pod that replaced it."""
    target: Target
    reason: Reason
    profile: str | None
    """The GPU profile moved to; None for a move to CPU."""
    checkpoint: CheckpointRef | None
    pending_cell: PendingCell | None
    phase: Phase
    created_at: str
    updated_at: str
    history: tuple[PhaseChange, ...]
    previous_profile: dict[str, Any] | None = None
    """What the Notebook looked like before the patch (opaque here: the patching step
    writes it, a rollback reads it)."""
    error: str | None = None
    """Why the migration failed or was rolled back."""
    notes: tuple[str, ...] = ()
    """Sentences for people about how the migration went (e.g. that no checkpoint was
    named, so the kernel state will not be restored)."""
    restore_report: dict[str, Any] | None = None
    """What the server extension reported when it restored the state on the new pod
    (`ok`, `restored`, `not_restored`, `detail`, `at`)."""
    keep_image: bool = False
    """The user chose to move to GPU with an image that has no CUDA pair, keeping it
    (admin setting `unmapped_image: ask`)."""
    other_checkpoints: tuple[CheckpointRef, ...] = ()
    """The checkpoints of the pod's other notebooks (one each, none of them
    `checkpoint`'s): every kernel of the pod is saved before the patch, each verified
    like `checkpoint`, and the new pod restores them all."""
    checkpoints_to_come: bool = False
    """The server extension saves the notebooks after the move was accepted (its
    `/migrate` answers at once) and names the checkpoints later
    (`POST /migrations/current/checkpoints`); until then the move waits in
    `checkpointing`, within the runner's `save_timeout`."""

    @property
    def checkpoints(self) -> tuple[CheckpointRef, ...]:
        """Every checkpoint of the move: `checkpoint` (the notebook that asked) first."""
        return ((self.checkpoint,) if self.checkpoint is not None else ()) \
            + self.other_checkpoints

    @classmethod
    def new(cls, env: SidecarEnv, *, target: Target, reason: Reason, profile: str | None,
            checkpoint: CheckpointRef | None, pending_cell: PendingCell | None,
            now: dt.datetime, keep_image: bool = False,
            other_checkpoints: tuple[CheckpointRef, ...] = (),
            checkpoints_to_come: bool = False) -> Migration:
        at = iso_utc(now)
        return cls(id=str(uuid.uuid4()), notebook=env.notebook_name,
                   namespace=env.pod_namespace, source_pod=env.pod_name,
                   source_pod_uid=env.pod_uid, target=target, reason=reason, profile=profile,
                   checkpoint=checkpoint, pending_cell=pending_cell, phase=Phase.REQUESTED,
                   created_at=at, updated_at=at, history=(PhaseChange(Phase.REQUESTED, at),),
                   keep_image=keep_image, other_checkpoints=other_checkpoints,
                   checkpoints_to_come=checkpoints_to_come)

    @property
    def active(self) -> bool:
        return self.phase not in ENDED

    def advance(self, phase: Phase, *, now: dt.datetime, error: str | None = None) -> Migration:
        """This migration in `phase`; raises IllegalTransition when that is no step."""
        check_transition(self.phase, phase, error)
        at = iso_utc(now)
        return dataclasses.replace(self, phase=phase, error=error, updated_at=at,
                                   history=(*self.history, PhaseChange(phase, at, error)))

    def with_previous_profile(self, record: dict[str, Any], *, now: dt.datetime) -> Migration:
        if not self.active:
            raise IllegalTransition(f"the migration already ended ({self.phase})")
        return dataclasses.replace(self, previous_profile=dict(record), updated_at=iso_utc(now))

    def with_note(self, note: str, *, now: dt.datetime) -> Migration:
        if not self.active:
            raise IllegalTransition(f"the migration already ended ({self.phase})")
        return dataclasses.replace(self, notes=(*self.notes, note), updated_at=iso_utc(now))

    def with_checkpoints(self, checkpoint: CheckpointRef | None,
                         others: tuple[CheckpointRef, ...], *, now: dt.datetime) -> Migration:
        """The checkpoints the server extension named for a move that was waiting for
        them (`checkpoints_to_come`)."""
        if self.phase is not Phase.CHECKPOINTING or not self.checkpoints_to_come:
            raise IllegalTransition(f"migration {self.id} is {self.phase} and waits for no "
                                    "checkpoints")
        return dataclasses.replace(self, checkpoint=checkpoint, other_checkpoints=others,
                                   checkpoints_to_come=False, updated_at=iso_utc(now))

    def with_restore_report(self, report: Mapping[str, Any], *, now: dt.datetime) -> Migration:
        if not self.active:
            raise IllegalTransition(f"the migration already ended ({self.phase})")
        return dataclasses.replace(self, restore_report=dict(report), updated_at=iso_utc(now))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["history"] = [{k: v for k, v in dataclasses.asdict(h).items()
                            if v is not None or k != "error"} for h in self.history]
        data["notes"] = list(self.notes)
        data["other_checkpoints"] = list(data["other_checkpoints"])
        data["active"] = self.active
        return data

    def summary(self) -> dict[str, Any]:
        """The `migration` field of runtime-config.json (camelCase, like the file).
        `notebooks`: how many notebooks' checkpoints the move carries (the new pod's
        server warms a kernel for each as it starts)."""
        return {"id": self.id, "phase": self.phase.value, "target": self.target.value,
                "reason": self.reason.value, "profile": self.profile, "error": self.error,
                "active": self.active, "updatedAt": self.updated_at,
                "notebooks": len(self.checkpoints)}

    def to_annotation(self) -> str:
        """Compact JSON for the Notebook annotation `gpushift.io/notebook-migration`
        (+ `reason`, the error, once the migration failed or was rolled back: the
        key the cluster-side guard writes too). `trigger` is what started the move
        (auto, manual, idle): the webhook's GPU-hours count idle moves' reclaim by it.
        Once it ended, `phases`: the seconds spent in each phase (the webhook's
        `gpushift_move_phase_duration_seconds`)."""
        mirror: dict[str, Any] = {"id": self.id, "phase": self.phase.value,
                                  "target": self.target.value, "trigger": self.reason.value,
                                  "updated": self.updated_at}
        if self.error:
            mirror["reason"] = self.error
        if self.phase in ENDED:
            mirror["phases"] = phase_seconds(self.history)
        return json.dumps(mirror, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: object) -> Migration:
        """Parse `to_dict()`'s output; raises CorruptState on anything else."""
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptState(f"{type(exc).__name__}: {exc}") from None


def phase_seconds(history: tuple[PhaseChange, ...]) -> dict[str, float]:
    """Seconds spent in each phase of `history` but the last (ms precision); a phase
    with an unreadable time is left out."""
    out: dict[str, float] = {}
    for change, after in itertools.pairwise(history):
        start, end = parse_utc(change.at), parse_utc(after.at)
        if start is not None and end is not None:
            seconds = max(0.0, (end - start).total_seconds())
            out[change.phase.value] = round(out.get(change.phase.value, 0.0) + seconds, 3)
    return out


def _parse(data: object) -> Migration:
    d = _mapping(data, "migration")
    entries = d["history"]
    if not isinstance(entries, list) or not entries:
        raise ValueError("history: not a list of phase changes")
    history = tuple(PhaseChange(Phase(_mapping(h, "history entry")["phase"]), _str(h["at"]),
                                _opt_str(h.get("error"))) for h in entries)
    if history[-1].phase != d["phase"]:
        raise ValueError(f"phase {d['phase']!r} is not the last of the history")
    checkpoint = d.get("checkpoint")
    pending = d.get("pending_cell")
    previous = d.get("previous_profile")
    notes = d.get("notes") or []
    if not isinstance(notes, list):
        raise TypeError("notes is not a list")
    report = d.get("restore_report")
    others = d.get("other_checkpoints") or []
    if not isinstance(others, list):
        raise TypeError("other_checkpoints is not a list")
    return Migration(
        id=_str(d["id"]), notebook=_str(d["notebook"]), namespace=_str(d["namespace"]),
        source_pod=_str(d["source_pod"]), source_pod_uid=_str(d["source_pod_uid"]),
        target=Target(d["target"]), reason=Reason(d["reason"]),
        profile=_opt_str(d.get("profile")),
        checkpoint=None if checkpoint is None else _checkpoint_ref(checkpoint),
        pending_cell=None if pending is None else PendingCell(
            **{k: _str(v) for k, v in _mapping(pending, "pending_cell").items()}),
        phase=Phase(d["phase"]), created_at=_str(d["created_at"]),
        updated_at=_str(d["updated_at"]), history=history,
        previous_profile=None if previous is None else dict(_mapping(previous, "profile")),
        error=_opt_str(d.get("error")),
        notes=tuple(_str(n) for n in notes),
        restore_report=None if report is None else dict(_mapping(report, "restore_report")),
        keep_image=d.get("keep_image") is True,
        other_checkpoints=tuple(_checkpoint_ref(c) for c in others),
        checkpoints_to_come=d.get("checkpoints_to_come") is True,
    )


def _checkpoint_ref(value: object) -> CheckpointRef:
    return CheckpointRef(**{k: _str(v) for k, v in _mapping(value, "checkpoint").items()})


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)
