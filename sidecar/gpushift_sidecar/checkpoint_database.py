"""Reading a notebook's kishu checkpoint database, read-only: which commit is its
latest, and whether a given commit is complete.

gpushift keeps one kishu 0.3.4 SQLite database per notebook (journal mode `delete`) in
the workspace's hidden folder, at the notebook's path relative to the workspace:
`<workspace>/.gpushift/checkpoints/<dir>/<name>.ipynb.kishudb` (`database_path`; the
server extension, which makes the checkpoints, puts them at the same place: a
contract between the two, which import nothing of each other). A commit is written in several
transactions (variable snapshots, then its row in `commit_entry`, then the commit
graph and the `HEAD` rows, then variable versions); no single write marks it done. So
here a commit is *complete* when its id is in `commit_entry` and no `<db>-journal` file
exists (no write transaction in flight).

The *latest* commit of a notebook is kishu's own `HEAD` (`head_branch`, the commit
`kishu log` starts from, i.e. the state the kernel is in); when there is none (kishu
clears it when a new kernel attaches) the commit stored last (`commit_entry` rowid).

The database is only ever opened read-only (`file:...?mode=ro`): this module never
writes, never creates and never rolls back a journal. A missing or corrupt database is
a `Verdict`, never an exception. Watching the databases for new commits is
`checkpoint_watcher`'s part.

A journal is always *incomplete* here, even one whose writer died (a pod killed
mid-prune): the sidecar runs in another container, cannot take the server's lock on
the database, and a rollback is a write, which this module never does. Nothing is
blocked for good by it: the move's checkpoints are verified here on the old pod right
after the server took them (under its lock, which rolls a dead writer's journal back
first; no prune runs while a move is in flight); the new pod's restore is the server's
(`StorageKeeper.writing` rolls the old pod's journal back under the lock, then reads)
and no verdict of this module gates it; an idle move that finds a journal waits, then
is skipped (no move, nothing lost).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

DB_SUFFIX = ".kishudb"
JOURNAL_SUFFIX = "-journal"
_BUSY_ERRORS = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY_ROLLBACK",
                "SQLITE_BUSY_RECOVERY", "SQLITE_BUSY_SNAPSHOT"}


CHECKPOINTS_FOLDER = Path(".gpushift", "checkpoints")


def database_path(notebook_path: str | Path, workspace: Path) -> Path:
    """Where a notebook's checkpoints are: `<workspace>/.gpushift/checkpoints/<notebook
    path relative to the workspace>.kishudb`. ValueError for a notebook that is not on
    the workspace (compared as written, then with links resolved)."""
    path = Path(notebook_path)
    if not path.is_absolute():
        raise ValueError(f"{notebook_path}: not an absolute path")
    for mine, theirs in ((os.path.normpath(path), os.path.normpath(workspace)),
                         (os.path.realpath(path), os.path.realpath(workspace))):
        relative = os.path.relpath(mine, theirs)
        if relative != "." and not relative.startswith(".."):
            return (Path(os.path.normpath(workspace)) / CHECKPOINTS_FOLDER
                    / f"{relative}{DB_SUFFIX}")
    raise ValueError(f"{notebook_path}: not on the workspace volume ({workspace})")


def journal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + JOURNAL_SUFFIX)


class VerdictStatus(StrEnum):
    COMPLETE = "complete"
    """The commit id is in the database and no write is in flight."""
    MISSING = "missing"
    """No database, or the commit is not in it."""
    INCOMPLETE = "incomplete"
    """kishu is writing (journal present, database locked): ask again shortly."""
    UNREADABLE = "unreadable"
    """The file is no kishu database SQLite can read (corrupt, wrong schema, no access)."""


@dataclass(frozen=True)
class Verdict:
    status: VerdictStatus
    reason: str
    """A sentence for people: why this status."""
    commit_id: str
    db_path: str

    @property
    def complete(self) -> bool:
        return self.status is VerdictStatus.COMPLETE

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "reason": self.reason,
                "commitId": self.commit_id, "dbPath": self.db_path}


@dataclass(frozen=True)
class _Read:
    status: VerdictStatus
    reason: str
    head: str | None = None
    """The latest complete commit, when the database could be read."""
    has_commit: bool = False
    """Whether the commit asked about is in `commit_entry`."""
    mtime: float = 0.0


def read_database(db_path: Path, commit_id: str | None = None) -> _Read:
    """Read-only look at a kishu database: its latest commit, and whether `commit_id`
    is in it. Never raises for a missing, locked or corrupt file; never writes."""
    try:
        st = os.stat(db_path)
    except FileNotFoundError:
        return _Read(VerdictStatus.MISSING,
                     f"no kishu database at {db_path} (is kishu attached to the notebook?)")
    except OSError as exc:
        return _Read(VerdictStatus.UNREADABLE, f"cannot stat {db_path}: {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return _Read(VerdictStatus.UNREADABLE, f"{db_path} is not a regular file")
    journal = journal_path(db_path)
    if os.path.lexists(journal):
        return _Read(VerdictStatus.INCOMPLETE,
                     f"kishu is writing: {journal.name} is present", mtime=st.st_mtime)
    try:
        head, has_commit = _query(db_path, commit_id)
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name in _BUSY_ERRORS or "locked" in str(exc):
            return _Read(VerdictStatus.INCOMPLETE, f"kishu is writing: {exc}", mtime=st.st_mtime)
        detail = f"{name}: {exc}" if name else str(exc)
        return _Read(VerdictStatus.UNREADABLE,
                     f"{db_path} is not a kishu database SQLite can read ({detail})",
                     mtime=st.st_mtime)
    return _Read(VerdictStatus.COMPLETE, "read", head=head, has_commit=has_commit,
                 mtime=st.st_mtime)


def _query(db_path: Path, commit_id: str | None) -> tuple[str | None, bool]:
    uri = f"{db_path.as_uri()}?mode=ro"
    # isolation_level=None: no implicit transactions; one explicit read transaction
    # gives both answers from the same state of the file.
    con = sqlite3.connect(uri, uri=True, timeout=0.5, isolation_level=None)
    try:
        con.execute("BEGIN")
        tables = {row[0] for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "commit_entry" not in tables:
            raise sqlite3.DatabaseError("no commit_entry table")
        head = None
        for table in ("head_branch", "var_head_commit"):
            if table not in tables:
                continue
            row = con.execute(
                f"SELECT h.commit_id FROM {table} h JOIN commit_entry c "  # noqa: S608
                "ON c.commit_id = h.commit_id WHERE h.head = 'HEAD'").fetchone()
            if row is not None and row[0]:
                head = str(row[0])
                break
        if head is None:
            row = con.execute(
                "SELECT commit_id FROM commit_entry ORDER BY rowid DESC LIMIT 1").fetchone()
            head = None if row is None else str(row[0])
        has_commit = False
        if commit_id is not None:
            has_commit = con.execute("SELECT 1 FROM commit_entry WHERE commit_id = ?",
                                     (commit_id,)).fetchone() is not None
        con.execute("COMMIT")
        return head, has_commit
    finally:
        con.close()


def verify_database(db_path: Path, commit_id: str) -> Verdict:
    """Whether commit `commit_id` is complete in the database at `db_path`."""
    read = read_database(db_path, commit_id)
    if read.status is VerdictStatus.COMPLETE:
        if read.has_commit:
            return Verdict(VerdictStatus.COMPLETE,
                           "the commit is in the database and no write is in flight",
                           commit_id, str(db_path))
        return Verdict(VerdictStatus.MISSING, f"commit {commit_id!r} is not in {db_path}",
                       commit_id, str(db_path))
    return Verdict(read.status, read.reason, commit_id, str(db_path))


def not_saved(db_path: Path, commit_id: str) -> list[tuple[str, str]]:
    """(name, why) of each variable the commit could not hold, as gpushift's kishu agent
    recorded them (`gpushift_not_saved`); [] when none, or the database cannot say.
    Read-only; never raises."""
    try:
        con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return []
    try:
        rows = con.execute("SELECT name, reason FROM gpushift_not_saved "
                           "WHERE commit_id = ? ORDER BY name", (commit_id,)).fetchall()
    except sqlite3.Error:  # no such table: nothing recorded as unsaved
        return []
    finally:
        con.close()
    return [(str(name), str(reason)) for name, reason in rows]
