"""The migration mirror (pure): the Notebook annotation `gpushift.io/notebook-migration`
that shows a move's phase to the cluster side (the guard, the notebook-controller's
users).

`mirror_ops` writes the mirror of a phase (and drops the previous-profile record,
`gpushift_core.rollback_record.read_previous_profile`), never over a later phase of
the same migration nor over the guard's `rolled_back` or `cancelled`; `read_mirror`
reads what a Notebook shows. `gpushift_sidecar.migration_steps`
decides with them; the runner and the notebook reporter write them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpushift_core.labels import annotations_of, json_object
from gpushift_core.patches import PatchBuilder
from gpushift_sidecar.state import (
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
    Migration,
    Phase,
)

ANNOTATIONS = ("metadata", "annotations")
# Phases in the order a migration goes through them; the ended ones come last.
_RANK = {phase: i for i, phase in enumerate(
    (Phase.REQUESTED, Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING,
     Phase.RECREATING, Phase.RESTORING))}
_ENDED_RANK = len(_RANK)


def _rank(phase: Phase) -> int:
    return _RANK.get(phase, _ENDED_RANK)


@dataclass(frozen=True)
class Mirror:
    """The Notebook annotation `gpushift.io/notebook-migration`, parsed."""

    id: str
    phase: Phase | None
    """None: a phase this sidecar does not know."""
    raw: str
    error: str | None = None

    @classmethod
    def parse(cls, value: object) -> Mirror | None:
        """None for a missing or unreadable annotation (it is only a mirror)."""
        data = json_object(value)
        if data is None or not isinstance(value, str) or not isinstance(data.get("id"), str):
            return None
        try:
            phase: Phase | None = Phase(str(data.get("phase")))
        except ValueError:
            phase = None
        error = data.get("reason") or data.get("error")
        return cls(id=data["id"], phase=phase, raw=value,
                   error=error if isinstance(error, str) and error else None)


def read_mirror(notebook: Mapping[str, Any] | None) -> Mirror | None:
    if notebook is None:
        return None
    return Mirror.parse(annotations_of(notebook).get(MIGRATION_ANNOTATION))


def mirror_allows(current: Mirror | None, migration: Migration) -> bool:
    """Whether the mirror may show `migration` now: not over a later phase of the same
    migration, and not over the guard's `rolled_back` or `cancelled` (the guard's word
    stands)."""
    if current is None or current.id != migration.id or current.phase is None:
        return True
    if current.phase in (Phase.ROLLED_BACK, Phase.CANCELLED):
        return migration.phase is current.phase
    return _rank(current.phase) <= _rank(migration.phase)


def mirror_ops(notebook: Mapping[str, Any], migration: Migration, *,
               drop_previous: bool = False) -> list[dict[str, Any]]:
    """The operations that make the Notebook's mirror show `migration` (and, with
    `drop_previous`, remove the previous-profile record); [] when nothing changes or the
    mirror must not be overwritten."""
    pb = PatchBuilder(notebook)
    annotations = annotations_of(notebook)
    value = migration.to_annotation()
    if (mirror_allows(read_mirror(notebook), migration)
            and annotations.get(MIGRATION_ANNOTATION) != value):
        pb.set_key(ANNOTATIONS, MIGRATION_ANNOTATION, value)
    if drop_previous and PREVIOUS_PROFILE_ANNOTATION in annotations:
        pb.remove((*ANNOTATIONS, PREVIOUS_PROFILE_ANNOTATION))
    return pb.operations
