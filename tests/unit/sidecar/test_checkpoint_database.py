"""Reading a kishu checkpoint database read-only: the verdicts, against SQLite files laid
out like kishu 0.3.4's.

The schema below is what kishu 0.3.4 wrote in a real run (see
tests/server/test_checkpoints_kishu.py for the run itself); `make_db` and `add_commit`
lay it out for the watcher's and the other sidecar tests too.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gpushift_sidecar.checkpoint_database import (
    VerdictStatus,
    database_path,
    journal_path,
    verify_database,
)

KISHU_SCHEMA = [
    "CREATE TABLE persistent_config (config_category text, config_entry text, "
    "config_value blob, primary key(config_category, config_entry))",
    "CREATE TABLE connection (conn primary key, kernel_id text, notebook_path text)",
    "CREATE TABLE commit_entry (commit_id text primary key, data blob)",
    "CREATE TABLE checkpoint (commit_id text, chunk_id int, data blob, "
    "primary key (commit_id, chunk_id))",
    "CREATE TABLE variable_snapshot (versioned_name text, commit_id text, chunk_id int, "
    "data blob, primary key (versioned_name, commit_id, chunk_id))",
    "CREATE TABLE branch (branch_name text primary key, commit_id text)",
    "CREATE TABLE head_branch (head primary key, branch_name text, commit_id text)",
    "CREATE TABLE var_commit_parent (commit_id text primary key, parent_id text)",
    "CREATE TABLE var_head_commit (head primary key, commit_id text)",
    "CREATE TABLE nb_commit_parent (commit_id text primary key, parent_id text)",
    "CREATE TABLE nb_head_commit (head primary key, commit_id text)",
]


def make_db(notebook: Path, workspace: Path | None = None) -> Path:
    """A kishu database for `notebook`, in the hidden folder of `workspace` (default:
    the notebook's grandparent)."""
    notebook.parent.mkdir(parents=True, exist_ok=True)
    notebook.write_text("{}")
    db = database_path(notebook, workspace or notebook.parent.parent)
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    for statement in KISHU_SCHEMA:
        con.execute(statement)
    con.commit()
    con.close()
    return db


def add_commit(db: Path, commit_id: str, *, head: bool = True) -> None:
    """What kishu does for one cell: the commit row, the graph, then HEAD (several
    transactions, journal mode delete)."""
    con = sqlite3.connect(db)
    con.execute("INSERT INTO commit_entry VALUES (?, ?)", (commit_id, b"dill bytes"))
    con.commit()
    con.execute("INSERT INTO var_commit_parent VALUES (?, '')", (commit_id,))
    if head:
        con.execute("INSERT OR REPLACE INTO var_head_commit VALUES ('HEAD', ?)", (commit_id,))
        con.execute("INSERT OR REPLACE INTO head_branch VALUES ('HEAD', 'main', ?)",
                    (commit_id,))
    con.commit()
    con.close()


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file in the folder: content hash and mtime."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return tmp_path / "work" / "analysis.ipynb"


# -- verify: the verdicts ---------------------------------------------------------------


def test_database_path_is_in_the_workspaces_hidden_folder() -> None:
    home = Path("/home/jovyan")
    assert (database_path("/home/jovyan/a/b.ipynb", home)
            == Path("/home/jovyan/.gpushift/checkpoints/a/b.ipynb.kishudb"))
    assert (database_path("/home/jovyan/b.ipynb", Path("/home/jovyan/"))
            == Path("/home/jovyan/.gpushift/checkpoints/b.ipynb.kishudb"))
    # a.ipynb and its a.py twin never share a database
    assert database_path("/home/jovyan/a.py", home) != database_path("/home/jovyan/a.ipynb", home)
    for outside in ("/tmp/b.ipynb", "/home/jovyan", "/home/jovyan/../x.ipynb", "b.ipynb"):
        with pytest.raises(ValueError):
            database_path(outside, home)


def test_complete_commit(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    add_commit(db, "c2")
    before = fingerprint(db.parent)
    verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.COMPLETE and verdict.complete
    assert verdict.db_path == str(db)
    assert fingerprint(db.parent) == before  # read-only: not even a journal appeared


def test_unknown_commit_is_missing(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    verdict = verify_database(db, "c9")
    assert verdict.status is VerdictStatus.MISSING
    assert "c9" in verdict.reason


def test_missing_database_is_missing_and_not_created(notebook: Path) -> None:
    notebook.parent.mkdir(parents=True)
    db = database_path(notebook, notebook.parent.parent)
    verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.MISSING
    assert "kishu attached" in verdict.reason
    assert list(notebook.parent.iterdir()) == []


def test_journal_present_is_incomplete(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    journal_path(db).write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\0" * 504)
    before = fingerprint(db.parent)
    verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.INCOMPLETE
    assert "journal" in verdict.reason
    assert fingerprint(db.parent) == before


def test_a_dead_writers_hot_journal_stays_incomplete_and_untouched(notebook: Path) -> None:
    """A writer SIGKILLed mid-transaction (the old pod killed mid-prune) leaves a hot
    journal: the sidecar, which cannot take the server's lock, keeps saying
    "incomplete" and rolls nothing back (the server does, under its lock)."""
    db = make_db(notebook)
    add_commit(db, "c1")
    add_commit(db, "c2")
    child = ("import os, signal, sqlite3, sys\n"
             "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "con.execute('PRAGMA cache_size = 1')\n"
             "con.execute('BEGIN IMMEDIATE')\n"
             "con.execute('DELETE FROM commit_entry')\n"
             "con.execute('DELETE FROM var_commit_parent')\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", child, str(db)], check=False,
                          capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert journal_path(db).exists()
    before = fingerprint(db.parent)
    verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.INCOMPLETE and "journal" in verdict.reason
    assert fingerprint(db.parent) == before
    # SQLite's own rollback (what the server's lock-holding `recover` triggers) brings
    # both commits back.
    con = sqlite3.connect(db)
    assert sorted(r[0] for r in con.execute("SELECT commit_id FROM commit_entry")) == \
        ["c1", "c2"]
    con.close()
    assert not journal_path(db).exists()
    assert verify_database(db, "c1").complete



@pytest.mark.parametrize("content", [b"this is no database" * 300, b"",
                                     b"SQLite format 3\0" + b"\xff" * 4000])
def test_corrupt_database_is_unreadable_and_unchanged(notebook: Path, content: bytes) -> None:
    notebook.parent.mkdir(parents=True)
    db = database_path(notebook, notebook.parent.parent)
    db.parent.mkdir(parents=True)
    db.write_bytes(content)
    before = fingerprint(db.parent)
    verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.UNREADABLE
    assert str(db) in verdict.reason
    assert fingerprint(db.parent) == before


def test_a_sqlite_file_that_is_not_kishus_is_unreadable(notebook: Path) -> None:
    notebook.parent.mkdir(parents=True)
    db = database_path(notebook, notebook.parent.parent)
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.UNREADABLE
    assert "commit_entry" in verdict.reason


def test_a_directory_in_place_of_the_database_is_unreadable(notebook: Path) -> None:
    db = database_path(notebook, notebook.parent.parent)
    db.mkdir(parents=True)
    assert verify_database(db, "c1").status is VerdictStatus.UNREADABLE
