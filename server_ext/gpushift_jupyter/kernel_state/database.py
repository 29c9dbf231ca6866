"""Where a notebook's kishu database lives, and a read-only look at it from the
server's process.

Out of the user's way: every database lives in one hidden folder of the workspace
volume, at the notebook's path relative to the workspace, `<workspace>/.gpushift/
checkpoints/<dir>/<name>.ipynb.kishudb` (`database_path`; the sidecar computes the same
place, a contract), never beside the notebook as kishu itself would put it
(`legacy_database_path`: older gpushift releases did; `storage` moves such a database
into the hidden folder the first time it is used). A notebook renamed or moved in
JupyterLab takes its database along (`checkpoint_files`).

The database is SQLite, journal mode delete. No single write marks a commit complete:
it is complete when its id is in `commit_entry` and no `<db>-journal` file exists (no
write in flight); the same rule the sidecar applies. The file is opened with `mode=ro`
and is never written, created or rolled back here (a hot journal is reported, not
recovered: the server rolls back one whose writer died, under the database's lock,
before it restores or checkpoints — `storage.StorageKeeper.writing`).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from gpushift_jupyter.kernel_state.kernel_code import KernelStateError

DB_SUFFIX = ".kishudb"
CHECKPOINTS_FOLDER = Path(".gpushift", "checkpoints")
"""The hidden folder of the workspace that holds every notebook's database."""


def checkpoints_root(workspace: Path) -> Path:
    return Path(os.path.normpath(workspace)) / CHECKPOINTS_FOLDER


def workspace_relative(path: Path, workspace: Path) -> Path:
    """`path` (absolute) relative to the workspace; KernelStateError when it is not on
    it. Compared as written and, failing that, with symbolic links resolved (the
    server names notebooks by their resolved path, the sidecar by the mount path)."""
    if not path.is_absolute():
        raise KernelStateError(f"the notebook path must be absolute, not {path}")
    for mine, theirs in ((os.path.normpath(path), os.path.normpath(workspace)),
                         (os.path.realpath(path), os.path.realpath(workspace))):
        relative = os.path.relpath(mine, theirs)
        if relative != "." and not relative.startswith(".."):
            return Path(relative)
    raise KernelStateError(f"{path} is not on the workspace volume ({workspace}): its "
                           "checkpoints could not move with it")


def database_path(notebook_path: Path, workspace: Path) -> Path:
    """Where gpushift keeps a notebook's checkpoints: `<workspace>/.gpushift/checkpoints/
    <notebook path relative to the workspace>.kishudb` (the full name, so that
    `a.ipynb` and a `a.py` twin never share one)."""
    relative = workspace_relative(notebook_path, workspace)
    return checkpoints_root(workspace) / relative.parent / f"{relative.name}{DB_SUFFIX}"


def databases_folder(folder: Path, workspace: Path) -> Path:
    """The folder holding the databases of every notebook under `folder`."""
    return checkpoints_root(workspace) / workspace_relative(folder, workspace)


def legacy_database_path(notebook_path: Path) -> Path:
    """Where kishu itself (and gpushift before the hidden folder) keeps a notebook's
    database: beside it, `<dir>/<stem>.kishudb`."""
    path = Path(os.path.realpath(notebook_path))
    return path.parent / f"{path.stem}{DB_SUFFIX}"


def journal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-journal")


@dataclass(frozen=True)
class CommitFacts:
    db_path: Path
    latest: str | None
    """kishu's HEAD, else the commit stored last (None: no commit at all)."""
    commit_id: str | None
    """The commit asked about, when it is in the database."""
    saved: tuple[str, ...]
    """Variables of that commit whose snapshot is in the database."""
    not_saved: tuple[tuple[str, str], ...]
    """Variables of that commit kishu could not pickle: (name, reason)."""
    size_bytes: int
    made_at: float | None = None
    """When the commit was made (epoch seconds; recorded by gpushift's agent, else the
    database's last write for the latest commit, else None)."""


def read_commit(db_path: Path, commit_id: str | None) -> CommitFacts:
    """The database's latest commit and, for `commit_id` (None: the latest), which of
    its variables are stored. KernelStateError when the database is missing, unreadable,
    being written, or does not hold the commit."""
    try:
        st = os.stat(db_path)
    except FileNotFoundError:
        raise KernelStateError(f"no kishu database at {db_path}: this notebook has no "
                               "checkpoint") from None
    except OSError as exc:
        raise KernelStateError(f"cannot read {db_path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KernelStateError(f"{db_path} is not a regular file")
    if os.path.lexists(journal_path(db_path)):
        raise KernelStateError(f"kishu is writing {db_path.name} (its -journal file is "
                               "present); try again when the write is done")
    try:
        return _query(db_path, commit_id, st.st_size)
    except sqlite3.Error as exc:
        raise KernelStateError(f"{db_path} is not a kishu database that can be read "
                               f"(corrupt or from another program): {exc}") from None


def _query(db_path: Path, commit_id: str | None, size: int) -> CommitFacts:
    con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=2.0,
                          isolation_level=None)
    try:
        con.execute("BEGIN")  # one read transaction: every answer from one state
        tables = {str(r[0]) for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        needed = {"commit_entry", "ahg_active_vses", "variable_snapshot"}
        if not needed <= tables:
            raise sqlite3.DatabaseError(f"tables missing: {', '.join(sorted(needed - tables))}")
        latest = _latest(con, tables)
        wanted = latest if commit_id is None else commit_id
        if wanted is None:
            raise KernelStateError(f"{db_path} holds no checkpoint yet")
        if con.execute("SELECT 1 FROM commit_entry WHERE commit_id = ?",
                       (wanted,)).fetchone() is None:
            raise KernelStateError(f"checkpoint {wanted!r} is not in {db_path}")
        saved: list[str] = []
        missing: list[str] = []
        for (versioned_name,) in con.execute(
                "SELECT versioned_name FROM ahg_active_vses WHERE commit_id = ?", (wanted,)):
            names = str(versioned_name).split(",")[1:]
            stored = con.execute("SELECT 1 FROM variable_snapshot WHERE versioned_name = ? "
                                 "LIMIT 1", (versioned_name,)).fetchone()
            (saved if stored is not None else missing).extend(names)
        reasons: dict[str, str] = {}
        if "gpushift_not_saved" in tables:
            reasons = {str(n): str(r) for n, r in con.execute(
                "SELECT name, reason FROM gpushift_not_saved WHERE commit_id = ?", (wanted,))}
        made_at = _made_at(con, tables, wanted)
        con.execute("COMMIT")
    finally:
        con.close()
    if made_at is None and wanted == latest:
        made_at = os.stat(db_path).st_mtime
    not_saved = tuple((n, reasons.get(n, "not saved: it cannot be pickled"))
                      for n in sorted(missing))
    return CommitFacts(db_path=db_path, latest=latest, commit_id=wanted,
                       saved=tuple(sorted(saved)), not_saved=not_saved, size_bytes=size,
                       made_at=made_at)


def _made_at(con: sqlite3.Connection, tables: set[str], commit_id: str) -> float | None:
    if "gpushift_commit_time" not in tables:
        return None
    row = con.execute("SELECT made_at FROM gpushift_commit_time WHERE commit_id = ?",
                      (commit_id,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _latest(con: sqlite3.Connection, tables: set[str]) -> str | None:
    for table in ("head_branch", "var_head_commit"):
        if table not in tables:
            continue
        row = con.execute(
            f"SELECT h.commit_id FROM {table} h JOIN commit_entry c "  # noqa: S608
            "ON c.commit_id = h.commit_id WHERE h.head = 'HEAD'").fetchone()
        if row is not None and row[0]:
            return str(row[0])
    row = con.execute("SELECT commit_id FROM commit_entry ORDER BY rowid DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])
