"""Bounded storage of the notebooks' kishu databases, on the server: room checked
before a checkpoint, old checkpoints pruned and their space given back after one.

- **Retention**: after a verified checkpoint, each notebook's database keeps its
  `keep` newest checkpoints, kishu's HEAD, and every checkpoint the pod's recorded move
  names (`GET /migrations/current` of the sidecar: in flight, or ended and still
  recoverable); what only the others needed is deleted (`kernel_state.retention`).
  While a move is in flight (the pod may be replaced at any moment), or the sidecar
  cannot say which checkpoints its move needs, nothing is pruned.
- **Space**: the freed pages are then given back to the volume in short steps
  (`kernel_state.reclaim`), for at most `RECLAIM_BUDGET_S` per checkpoint.
- **Never in the way**: both run in a task of their own, after the checkpoint's answer,
  each SQLite step in a thread; a checkpoint, an attach or a restore of the same
  notebook takes the database's lock (`lock`), which a prune or reclaim holds for one
  step at a time (a waiting checkpoint goes next), and every step gives up at once
  when another process holds the database.
- **Nothing lost to a kill**: a write cut short (the pod killed mid-prune, a kernel
  killed mid-checkpoint) leaves a hot `-journal`, which SQLite rolls back to the last
  committed state; `writing` does that first, under the lock, so the restore on a new
  pod and the next checkpoint find the last verified checkpoint as it was.
- **Room**: a checkpoint is refused before it starts when the volume would be left
  with less than the admin's minimum free (`kernel_state.space`), and a checkpoint that
  filled the volume anyway is reported as such (507 `volume_full`), with the previous
  checkpoints intact (kishu writes in SQLite transactions, which roll back).

The admin's settings come from the sidecar's runtime-config.json (`checkpoints`:
`keep`, `min_free_mib`); without them (no sidecar, an older one) the defaults apply.

- **Where**: every database is in the workspace's hidden folder (`database`); the
  workspace is the volume the sidecar names in runtime-config.json (`workspace`), else
  the server's root folder. A database an older release left beside its notebook is
  moved there the first time the notebook's database is used (`writing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state.database import (
    database_path,
    journal_path,
    legacy_database_path,
)
from gpushift_jupyter.kernel_state.kernel_code import KernelStateError
from gpushift_jupyter.kernel_state.reclaim import ReclaimResult, reclaim
from gpushift_jupyter.kernel_state.retention import (
    PruneResult,
    prepare_database,
    prune_database,
    recover,
)
from gpushift_jupyter.kernel_state.space import (
    MIB,
    disk_full,
    expected_checkpoint_bytes,
    full_volume_reason,
    space_refusal,
    volume_free_bytes,
)

log = logging.getLogger("gpushift.jupyter")

DEFAULT_KEEP = 5
DEFAULT_MIN_FREE_MIB = 256
RECLAIM_BUDGET_S = 2.0
"""Time a reclaim may take after one checkpoint (in steps of `RECLAIM_STEP_S`)."""
RECLAIM_STEP_S = 0.25
_ENDED = frozenset({"done", "rolled_back", "failed", "cancelled"})


@dataclass(frozen=True)
class StoragePolicy:
    keep: int = DEFAULT_KEEP
    """Checkpoints kept per notebook, besides those a move still needs."""
    min_free_mib: int = DEFAULT_MIN_FREE_MIB
    """Free space a checkpoint must leave on the notebook's volume."""


def policy_from_runtime(document: Mapping[str, Any]) -> StoragePolicy:
    """The admin's checkpoint settings from runtime-config.json (pure); defaults for
    what is missing or not a sound number."""
    given = document.get("checkpoints")
    given = given if isinstance(given, Mapping) else {}

    def number(key: str, default: int, lowest: int) -> int:
        value = given.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= lowest:
            return value
        return default

    return StoragePolicy(keep=number("keep", DEFAULT_KEEP, 1),
                         min_free_mib=number("min_free_mib", DEFAULT_MIN_FREE_MIB, 0))


def workspace_from_runtime(document: Mapping[str, Any], root_dir: Path) -> Path:
    """The workspace volume's mount path the sidecar reports (pure), else `root_dir`."""
    given = document.get("workspace")
    if isinstance(given, str) and os.path.isabs(given):
        return Path(given)
    return root_dir


def move_checkpoints(migration: Mapping[str, Any] | None,
                     notebook: Path) -> frozenset[str] | None:
    """The commits of `notebook` the recorded move names (pure); None while the move is
    in flight (nothing may be pruned then)."""
    if migration is None:
        return frozenset()
    if migration.get("phase") not in _ENDED:
        return None
    refs = [migration.get("checkpoint"), *(migration.get("other_checkpoints") or [])]
    wanted = os.path.realpath(notebook)
    return frozenset(str(r["commit_id"]) for r in refs
                     if isinstance(r, Mapping) and "commit_id" in r
                     and os.path.realpath(str(r.get("notebook_path", ""))) == wanted)


@dataclass(frozen=True)
class TidyReport:
    prune: PruneResult | None
    reclaim: ReclaimResult | None
    skipped: str = ""
    """Why nothing was pruned ("" when it was)."""


class StorageKeeper:
    """One per server: the databases' locks, the room check, and the tidying after
    each checkpoint (see the module's docstring)."""

    def __init__(self, runtime: Callable[[], Mapping[str, Any]] | None,
                 current_move: Callable[[], Awaitable[Mapping[str, Any] | None]] | None,
                 root_dir: Path) -> None:
        self.runtime = runtime
        """The runtime-config document, as `GET /api_extension` answers it (None: not
        known, and nothing is pruned)."""
        self.current_move = current_move
        """The sidecar's recorded move (`GET /migrations/current`; None: there is none;
        ApiError: the sidecar cannot say). None: unknown, and nothing is pruned."""
        self.root_dir = root_dir
        """The server's root folder: the workspace when the sidecar names none."""
        self._locks: dict[Path, asyncio.Lock] = {}
        self._tidying: dict[Path, asyncio.Task[TidyReport]] = {}
        self.last: dict[Path, TidyReport] = {}
        """The last tidy of each database (for tests and logs)."""

    def policy(self) -> StoragePolicy:
        return policy_from_runtime(self.runtime() if self.runtime is not None else {})

    def workspace(self) -> Path:
        return workspace_from_runtime(self.runtime() if self.runtime is not None else {},
                                      self.root_dir)

    def database(self, notebook: Path) -> Path:
        """The notebook's database, in the workspace's hidden folder; ApiError 400 for a
        notebook that is not on the workspace volume (its checkpoints could not move)."""
        try:
            return database_path(notebook, self.workspace())
        except KernelStateError as exc:
            raise ApiError(400, "not_on_workspace", str(exc)) from None

    def database_lock(self, db: Path) -> asyncio.Lock:
        return self._locks.setdefault(db, asyncio.Lock())

    def known_databases(self) -> list[Path]:
        """The databases this server has used (each has its lock)."""
        return list(self._locks)

    def lock(self, notebook: Path) -> asyncio.Lock:
        return self.database_lock(self.database(notebook))

    @contextlib.asynccontextmanager
    async def writing(self, notebook: Path, *, create: bool = False) -> AsyncIterator[None]:
        """Hold the notebook's database for a checkpoint, an attach or a restore.
        `create`: a database that does not exist yet is created first, in the mode that
        lets its space be given back in steps (`retention.prepare_database`)."""
        db = self.database(notebook)
        async with self.database_lock(db):
            await self._adopt_legacy(notebook, db)
            await self.roll_back_dead_write(db)
            if create:
                try:
                    await asyncio.to_thread(_prepare_in_folder, db)
                except (OSError, sqlite3.Error) as exc:  # kishu creates it, then
                    log.warning("gpushift: %s not prepared: %s", notebook, exc)
            yield

    async def _adopt_legacy(self, notebook: Path, db: Path) -> None:
        """Move the database an older release kept beside the notebook into the hidden
        folder (its journal rolled back first: a write cut short must not travel)."""
        legacy = legacy_database_path(notebook)
        if notebook.suffix != ".ipynb" or db.exists() or not legacy.is_file():
            return
        await self.roll_back_dead_write(legacy)
        if os.path.lexists(journal_path(legacy)):
            log.warning("gpushift: %s stays beside the notebook: another process is "
                        "writing it", legacy)
            return
        try:
            await asyncio.to_thread(_move_into, legacy, db)
        except OSError as exc:
            log.warning("gpushift: %s not moved into %s: %s", legacy, db.parent, exc)
            return
        log.info("gpushift: checkpoints moved into the workspace's hidden folder",
                 extra={"from": str(legacy), "to": str(db)})

    async def roll_back_dead_write(self, db: Path) -> None:
        """A `-journal` left by a writer that died (the pod or this server killed
        mid-prune, a kernel killed mid-checkpoint or mid-restore) makes every read-only
        check refuse the database as "being written", so the last verified checkpoint
        could not be restored on the new pod until some later write rolled it back.
        Under the database's lock no writer of this server is running (prunes, reclaims
        and kernels' checkpoints all hold it), and SQLite itself rolls a journal back
        only when it is hot, i.e. no connection anywhere holds its write lock; a journal
        its writer died before syncing (not hot, the database untouched) is removed
        under that lock (`retention.recover`). A write in flight in another process
        keeps its journal, and the caller's read then refuses as before."""
        if not (os.path.lexists(journal_path(db)) and db.exists()):
            return
        try:
            gone = await asyncio.to_thread(recover, db)
        except sqlite3.Error as exc:  # locked: another process is writing it now
            log.warning("gpushift: the -journal of %s is not rolled back: %s", db, exc)
            return
        if gone:
            log.warning("gpushift: undid a write to %s that was cut short (its "
                        "-journal was left behind); the checkpoints before it are intact",
                        db)
        else:
            log.warning("gpushift: the -journal of %s stays: another process is "
                        "writing it", db)

    async def check_room(self, notebook: Path) -> None:
        """ApiError 507 `volume_full` when a checkpoint of `notebook` would leave less
        than the admin's minimum free on its volume."""
        db = self.database(notebook)
        free, expected = await asyncio.to_thread(
            lambda: (volume_free_bytes(db.parent), expected_checkpoint_bytes(db)))
        if free is None:
            return  # cannot tell: kishu's own write decides
        reason = space_refusal(free_bytes=free, expected_bytes=expected,
                               min_free_bytes=self.policy().min_free_mib * MIB)
        if reason is not None:
            raise ApiError(507, "volume_full", reason, free_bytes=free,
                           expected_bytes=expected)

    def failure(self, notebook: Path, error: str) -> ApiError | None:
        """A checkpoint that failed because the volume is full, as the user reads it;
        None for any other failure."""
        db = self.database(notebook)
        free = volume_free_bytes(db.parent)
        if not (disk_full(error) or (free is not None and free < MIB)):
            return None
        try:  # the kernel's agent did it already, unless it died meanwhile
            recover(db)
        except sqlite3.Error as exc:
            log.warning("gpushift: %s not rolled back yet: %s", db, exc)
        free = volume_free_bytes(db.parent)
        return ApiError(507, "volume_full", full_volume_reason(free), free_bytes=free)

    def after_checkpoint(self, notebook: Path, commit_id: str) -> None:
        """Tidy the database in the background (one tidy at a time per database; one
        asked while one runs is folded into it: the next checkpoint tidies again)."""
        db = self.database(notebook)
        if self.current_move is None or db in self._tidying:
            return
        task = asyncio.get_running_loop().create_task(self.tidy(notebook, commit_id))
        self._tidying[db] = task
        task.add_done_callback(lambda _: self._tidying.pop(db, None))

    async def settled(self) -> None:
        """Until every tidy running now has ended (tests, shutdown)."""
        await asyncio.gather(*self._tidying.values(), return_exceptions=True)

    async def tidy(self, notebook: Path, commit_id: str | None) -> TidyReport:
        """Prune, then reclaim; never raises (a failure is logged and retried after the
        next checkpoint)."""
        db = self.database(notebook)
        try:
            report = await self._tidy(notebook, db, commit_id)
        except Exception as exc:
            log.warning("gpushift: the checkpoints of %s were not pruned: %s: %s", notebook,
                        type(exc).__name__, exc)
            report = TidyReport(None, None, f"{type(exc).__name__}: {exc}")
        self.last[db] = report
        return report

    async def _tidy(self, notebook: Path, db: Path, commit_id: str | None) -> TidyReport:
        if not db.exists():
            return TidyReport(None, None, "the database is gone (its notebook was renamed, "
                                          "moved or deleted meanwhile)")
        protected = await self._move_checkpoints(notebook)
        if protected is None:
            return TidyReport(None, None, "a move is in flight, or the sidecar cannot say "
                                          "which checkpoints its move needs")
        keep = self.policy().keep
        mine = protected | ({commit_id} if commit_id else set())
        async with self.database_lock(db):
            try:
                pruned = await asyncio.to_thread(prune_database, db, keep=keep,
                                                 protected=mine)
            except sqlite3.OperationalError as exc:
                return TidyReport(None, None, f"the database is busy: {exc}")
        if pruned.pruned or pruned.failed_rows:
            log.info("gpushift: checkpoints pruned", extra={
                "notebook": str(notebook), "pruned": len(pruned.pruned),
                "kept": len(pruned.kept), "free_pages": pruned.free_pages})
        return TidyReport(pruned, await self._reclaim(notebook, db))

    async def _reclaim(self, notebook: Path, db: Path) -> ReclaimResult | None:
        deadline = time.monotonic() + RECLAIM_BUDGET_S
        first: ReclaimResult | None = None
        result: ReclaimResult | None = None
        steps = 0
        while time.monotonic() < deadline:
            async with self.database_lock(db):
                try:
                    result = await asyncio.to_thread(
                        reclaim, db, budget_s=RECLAIM_STEP_S,
                        free_bytes=volume_free_bytes(db.parent))
                except sqlite3.OperationalError as exc:
                    log.info("gpushift: space of %s not reclaimed now: %s", db, exc)
                    break
            first = first or result
            steps += result.steps
            if result.stopped != "budget":
                break
            await asyncio.sleep(0)  # a checkpoint waiting for the lock goes first
        if first is None or result is None:
            return None
        return ReclaimResult(first.bytes_before, result.bytes_after, result.free_pages_left,
                             first.vacuumed or result.vacuumed, result.stopped, steps)

    async def _move_checkpoints(self, notebook: Path) -> frozenset[str] | None:
        if self.current_move is None:
            return None
        try:
            migration = await self.current_move()
        except ApiError:
            return None
        return move_checkpoints(migration, notebook)


def _prepare_in_folder(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    prepare_database(db)


def _move_into(source: Path, db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, db)
