"""Retention of a notebook's kishu checkpoints: which commits to keep (pure), and
deleting what only the others needed (server side, from the server's process).

What a kept commit needs to come back exactly (`snapshots.load_commit`, the agent's
restore) and to stay the base of later incremental checkpoints:
- its `commit_entry` row (gpushift checks that the commit is there),
- its rows in `ahg_active_vses`: the *whole* set of variable groups of the state at
  that commit (not a delta),
- for each of those groups, its data in `variable_snapshot` — stored once, with the
  commit where the group last changed, which may be a much older commit: a group is
  kept as long as any kept commit lists it, whatever commit stored it,
- its rows in `commit_variable` (kishu's variable versions, read by a restore) and
  `gpushift_not_saved` (why variables were not saved).

Everything else of a pruned commit goes: its `commit_entry` row (which holds kishu's
copy of the notebook, its cells and outputs), its active-group list, its variable
versions, and every variable group no kept commit lists. kishu's commit graph (a
commit's parent: a few dozen bytes each), its dependency graph (`ahg_*`: cell code and
variable names) and branch rows stay: kishu's next incremental checkpoint asks which
groups the commits *above* HEAD stored (`KishuCheckpoint.get_stored_versioned_names`
over the graph's ancestry), and a group kept under a pruned commit's id must still be
found there, or it would be stored again.

Rows of a checkpoint that failed (the volume filled, the kernel died) have no
`commit_entry` row: they are deleted like a pruned commit's. A prune therefore never
runs while a checkpoint may be writing (`storage.StorageKeeper` runs it under the
database's lock, after a verified checkpoint).

New databases are created with `auto_vacuum = INCREMENTAL` (`prepare_database`) so
that freed pages can be given back to the volume in short steps (`reclaim`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# kishu 0.3.4's tables holding one row (or more) per commit, by commit id.
_PER_COMMIT_TABLES = ("ahg_active_vses", "commit_variable", "gpushift_not_saved",
                      "gpushift_commit_time", "checkpoint")
BUSY_TIMEOUT_S = 0.2
"""How long a prune waits for a lock another connection holds (kishu writing, a restore
reading) before it gives up for this time: it is retried after the next checkpoint."""
PAGE_SIZE = 16384
"""SQLite page size of the databases gpushift creates. A variable's pickle is a chain of
overflow pages, each written and read on its own: at SQLite's default 4 KiB a 500 MiB
group is 128,000 of them. `bench/sqlite_pages.py` (500 MiB, medians of 9): 16 KiB
writes in 0.74x the time of 4 KiB and reads in 0.91x; 64 KiB writes in 0.69x but reads
in 1.73x."""


def commits_to_keep(newest_first: Sequence[str], *, keep: int,
                    protected: Collection[str] = (), head: str | None = None
                    ) -> frozenset[str]:
    """The commits a database keeps (pure): the `keep` newest, kishu's HEAD (the state
    the kernel is in, the base of its next checkpoint) and every `protected` one (a
    move or a restore still needs it) that the database holds. At least the newest
    is always kept."""
    kept = set(newest_first[:max(1, keep)])
    present = set(newest_first)
    kept.update(c for c in protected if c in present)
    if head is not None and head in present:
        kept.add(head)
    return frozenset(kept)


@dataclass(frozen=True)
class PruneResult:
    kept: tuple[str, ...]
    """Commits kept, newest first."""
    pruned: tuple[str, ...]
    """Commits deleted, newest first."""
    groups_deleted: int
    """Variable groups (`variable_snapshot` versions) deleted."""
    failed_rows: int
    """Rows of checkpoints that never completed (no commit_entry row), deleted."""
    free_pages: int
    """Pages on SQLite's free list afterwards (what `reclaim` can give back)."""
    page_size: int


def open_existing(db_path: Path, **options: Any) -> sqlite3.Connection:
    """A read-write connection to a database that must exist: a prune or a rollback
    that comes after the notebook was renamed (its database moved away) must not leave
    an empty database at the old name (sqlite3.OperationalError instead)."""
    con: sqlite3.Connection = sqlite3.connect(f"{db_path.as_uri()}?mode=rw", uri=True,
                                              **options)
    return con


def prepare_database(db_path: Path) -> bool:
    """Create the notebook's kishu database, empty, with `auto_vacuum = INCREMENTAL`
    and pages of `PAGE_SIZE`, when there is none yet (kishu then adds its tables to
    it). True when it did. An existing database is left as it is (its mode and page
    size can only change with a VACUUM, `reclaim`)."""
    if db_path.exists():
        return False
    con = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # first: no effect after any other
        con.execute("PRAGMA auto_vacuum = INCREMENTAL")
        # Both are fixed when the first table is created; this one is gpushift's own
        # (`agent._record_not_saved` creates it the same way).
        con.execute("CREATE TABLE IF NOT EXISTS gpushift_not_saved "
                    "(commit_id text, name text, reason text)")
    finally:
        con.close()
    return True


def recover(db_path: Path) -> bool:
    """Let SQLite roll back a hot journal (a write that failed, or a process that died,
    left `<db>-journal` behind): reading with a connection that may write does it, and
    only when no live connection still writes (then the journal is not hot). A journal
    SQLite leaves alone although no one writes is removed (`_remove_dead_journal`).
    True when no journal is left; sqlite3.OperationalError when the database is locked
    for longer than BUSY_TIMEOUT_S."""
    journal = db_path.with_name(db_path.name + "-journal")
    if not journal.exists():
        return True
    con = open_existing(db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if journal.exists():
            _remove_dead_journal(con, journal)
    finally:
        con.close()
    return not journal.exists()


def _remove_dead_journal(con: sqlite3.Connection, journal: Path) -> None:
    """A writer killed before it synced its journal (kishu's checkout or checkpoint, a
    prune: the first pages copied, the journal's header still zeros, the database file
    not yet written) leaves a journal whose first byte is zero. SQLite does not count it
    as hot, so it neither rolls it back nor deletes it, and the database is as the last
    commit left it; but every read-only check (a restore's, the sidecar's) refuses a
    database with a journal as "being written", so the last verified checkpoint could
    not be restored until some later write replaced the journal. Under the write lock
    (no other connection is then writing: a writer holds it until its journal is gone)
    such a journal is what SQLite's own next write would overwrite; it is deleted here.
    Any other journal is left (busy: another process writes now)."""
    try:
        con.execute("BEGIN IMMEDIATE")  # waits the connection's BUSY_TIMEOUT_S
    except sqlite3.OperationalError:
        return  # a live writer holds the lock: its journal is its own
    try:
        with journal.open("rb") as file:
            first = file.read(1)
        if first in (b"", b"\0"):
            journal.unlink()
    except FileNotFoundError:
        pass  # gone meanwhile
    finally:
        con.execute("ROLLBACK")


def newest_first(con: sqlite3.Connection) -> list[str]:
    """The database's complete commits, newest first (kishu inserts each commit's row
    once, when it is complete; rowids only grow while the newest row is kept)."""
    return [str(r[0]) for r in con.execute(
        "SELECT commit_id FROM commit_entry ORDER BY rowid DESC")]


def head_commit(con: sqlite3.Connection, tables: set[str]) -> str | None:
    """kishu's HEAD, where it has one."""
    for table in ("head_branch", "var_head_commit"):
        if table in tables:
            row = con.execute(
                f"SELECT commit_id FROM {table} WHERE head = 'HEAD'").fetchone()  # noqa: S608
            if row is not None and row[0]:
                return str(row[0])
    return None


def prune_database(db_path: Path, *, keep: int, protected: Collection[str] = (),
                   busy_timeout: float = BUSY_TIMEOUT_S) -> PruneResult:
    """Delete every commit `commits_to_keep` does not keep, with what only those
    commits needed, in one transaction. sqlite3.OperationalError ("database is locked")
    when another connection writes or reads meanwhile: nothing changed then."""
    con = open_existing(db_path, timeout=busy_timeout, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            result = _prune(con, keep, protected)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return result
    finally:
        con.close()


def _prune(con: sqlite3.Connection, keep: int, protected: Collection[str]) -> PruneResult:
    tables = {str(r[0]) for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    page_size = int(con.execute("PRAGMA page_size").fetchone()[0])
    if not {"commit_entry", "ahg_active_vses", "variable_snapshot"} <= tables:
        free = int(con.execute("PRAGMA freelist_count").fetchone()[0])
        return PruneResult((), (), 0, 0, free, page_size)
    commits = newest_first(con)
    kept = commits_to_keep(commits, keep=keep, protected=protected,
                           head=head_commit(con, tables))
    pruned = [c for c in commits if c not in kept]
    con.execute("CREATE TEMP TABLE gpushift_kept (commit_id text PRIMARY KEY)")
    con.executemany("INSERT INTO gpushift_kept VALUES (?)", [(c,) for c in kept])
    failed_rows = 0
    for table in _PER_COMMIT_TABLES:
        if table not in tables:
            continue
        # A failed checkpoint's rows (no commit_entry row) count apart: for the report.
        failed_rows += con.execute(
            f"DELETE FROM {table} WHERE commit_id NOT IN "  # noqa: S608
            "(SELECT commit_id FROM commit_entry)").rowcount
        con.execute(f"DELETE FROM {table} WHERE commit_id NOT IN "  # noqa: S608
                    "(SELECT commit_id FROM temp.gpushift_kept)")
    con.executemany("DELETE FROM commit_entry WHERE commit_id = ?", [(c,) for c in pruned])
    # Versions of a group: one row per chunk (and per commit that stored it).
    groups_deleted = int(con.execute(
        "SELECT count(DISTINCT versioned_name) FROM variable_snapshot WHERE versioned_name "
        "NOT IN (SELECT versioned_name FROM ahg_active_vses)").fetchone()[0])
    con.execute("DELETE FROM variable_snapshot WHERE versioned_name NOT IN "
                "(SELECT versioned_name FROM ahg_active_vses)")
    con.execute("DROP TABLE temp.gpushift_kept")
    free = int(con.execute("PRAGMA freelist_count").fetchone()[0])
    order = {c: i for i, c in enumerate(commits)}
    return PruneResult(kept=tuple(sorted(kept, key=order.__getitem__)), pruned=tuple(pruned),
                       groups_deleted=groups_deleted, failed_rows=failed_rows,
                       free_pages=free, page_size=page_size)
