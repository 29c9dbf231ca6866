"""This notebook's current migration, as the API and the migration runner share it.

One migration at a time per notebook, and every change is written to the state file
before anyone sees it, so a sidecar killed at any point resumes from the file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from gpushift_sidecar.state import CheckpointRef, IllegalTransition, Migration, Phase
from gpushift_sidecar.state_file import MigrationStore


class MigrationInFlight(Exception):
    def __init__(self, current: Migration) -> None:
        super().__init__(f"migration {current.id} is {current.phase}")
        self.current = current


class NotebookStopped(Exception):
    """No move starts on a Notebook Kubeflow stopped (`kubeflow-resource-stopped`)."""


class MigrationTracker:
    """The current migration (the latest, ended or not) and the only way to change it."""

    def __init__(self, store: MigrationStore,
                 on_change: Callable[[Migration | None, Migration], None] | None = None,
                 ) -> None:
        self.store = store
        self.current = store.load()
        self.on_change = on_change

    def begin(self, migration: Migration) -> Migration:
        """Make `migration` current; MigrationInFlight while another is active. Callers
        on the event loop must not await between deciding and calling this."""
        if self.current is not None and self.current.active:
            raise MigrationInFlight(self.current)
        return self._commit(migration)

    def advance(self, migration_id: str, phase: Phase, *, error: str | None = None,
                now: dt.datetime | None = None) -> Migration:
        current = self._get(migration_id)
        return self._commit(current.advance(phase, now=now or _now(), error=error))

    def record_previous_profile(self, migration_id: str, record: dict[str, Any]) -> Migration:
        current = self._get(migration_id)
        return self._commit(current.with_previous_profile(record, now=_now()))

    def add_note(self, migration_id: str, note: str) -> Migration:
        current = self._get(migration_id)
        return self._commit(current.with_note(note, now=_now()))

    def name_checkpoints(self, migration_id: str, checkpoint: CheckpointRef | None,
                         others: tuple[CheckpointRef, ...]) -> Migration:
        current = self._get(migration_id)
        return self._commit(current.with_checkpoints(checkpoint, others, now=_now()))

    def finish_restore(self, migration_id: str, report: Mapping[str, Any], *,
                       error: str | None = None, now: dt.datetime | None = None) -> Migration:
        """`restoring -> done` (no error) or `-> failed`, with the restore report, in
        one write."""
        current = self._get(migration_id)
        if current.phase is not Phase.RESTORING:
            raise IllegalTransition(f"migration {migration_id} is {current.phase}, not "
                                    "restoring")
        moment = now or _now()
        phase = Phase.FAILED if error else Phase.DONE
        return self._commit(current.with_restore_report(report, now=moment)
                            .advance(phase, now=moment, error=error))

    def _get(self, migration_id: str) -> Migration:
        if self.current is None or self.current.id != migration_id:
            raise IllegalTransition(f"migration {migration_id} is not the current one")
        return self.current

    def _commit(self, migration: Migration) -> Migration:
        self.store.save(migration)  # raises OSError: then nothing changed
        previous, self.current = self.current, migration
        if self.on_change is not None:
            self.on_change(previous, migration)
        return migration


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
