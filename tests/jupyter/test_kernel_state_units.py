"""The kishu driver's pieces that need no kernel: the safe unpickler, the config file,
and the read-only database checks."""

from __future__ import annotations

import configparser
import hashlib
import sqlite3
from pathlib import Path

import dill
import pytest
from conftest import kill_before_journal_sync, writing_before_journal_sync

from gpushift_jupyter.kernel_state import (
    PINNED_SETTINGS,
    KernelStateError,
    database_path,
    prepare_kishu_home,
)
from gpushift_jupyter.kernel_state.database import (
    databases_folder,
    journal_path,
    legacy_database_path,
    read_commit,
)
from gpushift_jupyter.kernel_state.retention import recover
from gpushift_jupyter.kernel_state.snapshots import NotRebuiltError, loads
from gpushift_jupyter.storage import workspace_from_runtime


def test_a_pickled_open_file_is_never_reopened(tmp_path: Path) -> None:
    target = tmp_path / "results.txt"
    handle = target.open("w")
    handle.write("precious")
    handle.flush()
    data = dill.dumps({"log": handle, "n": 1})
    # What plain dill does on load: reopen with mode 'w', which empties the file.
    reopened = dill.loads(data)["log"]
    reopened.close()
    assert target.read_text() == ""
    target.write_text("precious")

    with pytest.raises(NotRebuiltError, match="is not reopened"):
        loads(data)
    assert target.read_text() == "precious"
    handle.close()


def test_plain_values_load_unchanged() -> None:
    value, moved = loads(dill.dumps({"a": [1, 2], "f": lambda v: v + 1}))
    assert value["a"] == [1, 2] and value["f"](1) == 2 and moved is False


def test_prepare_kishu_home_pins_the_settings_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / ".kishu").mkdir()
    (tmp_path / ".kishu" / "config.ini").write_text(
        "[PROFILER]\nexcluded_classes = ['list']\n[CLI]\nkishu_enable_experimental = True\n")
    path = prepare_kishu_home(tmp_path)
    assert path == tmp_path / ".kishu" / "config.ini"
    parser = configparser.ConfigParser()
    parser.read(path)
    assert parser.get("CLI", "kishu_enable_experimental") == "True"
    for (category, entry), value in PINNED_SETTINGS.items():
        assert parser.get(category, entry) == str(value)
    assert parser.get("PROFILER", "excluded_classes") == "[]"
    text = path.read_text()
    assert prepare_kishu_home(tmp_path) == path and path.read_text() == text


@pytest.mark.parametrize("kind", ["missing", "directory", "garbage", "empty_sqlite"])
def test_read_commit_explains_a_bad_database(tmp_path: Path, kind: str) -> None:
    notebook = tmp_path / "n.ipynb"
    db = database_path(notebook, tmp_path)
    db.parent.mkdir(parents=True)
    if kind == "directory":
        db.mkdir()
    elif kind == "garbage":
        db.write_bytes(b"not sqlite" * 100)
    elif kind == "empty_sqlite":
        sqlite3.connect(db).execute("create table t (x)").connection.close()
    before = db.read_bytes() if db.is_file() else None
    expected = {"missing": "no kishu database", "directory": "not a regular file",
                "garbage": "not a kishu database", "empty_sqlite": "tables missing"}[kind]
    with pytest.raises(KernelStateError, match=expected):
        read_commit(db, None)
    assert (db.read_bytes() if db.is_file() else None) == before
    assert not db.with_name(db.name + "-journal").exists()


def test_databases_live_in_the_workspaces_hidden_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    hidden = home / ".gpushift" / "checkpoints"
    assert database_path(home / "work" / "a.ipynb", home) == hidden / "work" / "a.ipynb.kishudb"
    assert database_path(home / "a.ipynb", home / ".") == hidden / "a.ipynb.kishudb"
    assert databases_folder(home / "work", home) == hidden / "work"
    assert legacy_database_path(home / "work" / "a.ipynb") == home / "work" / "a.kishudb"
    # The workspace mounted through a link: the same database either way.
    link = tmp_path / "link"
    link.symlink_to(home)
    assert database_path(home / "work" / "a.ipynb", link) == link / ".gpushift" / "checkpoints" \
        / "work" / "a.ipynb.kishudb"
    for outside in (tmp_path / "a.ipynb", home, home / ".." / "x.ipynb", Path("a.ipynb")):
        with pytest.raises(KernelStateError):
            database_path(outside, home)


def test_the_workspace_is_the_sidecars_else_the_servers_root() -> None:
    root = Path("/srv/root")
    assert workspace_from_runtime({"workspace": "/home/jovyan"}, root) == Path("/home/jovyan")
    for document in ({}, {"workspace": None}, {"workspace": "relative"}, {"workspace": 3}):
        assert workspace_from_runtime(document, root) == root


@pytest.mark.parametrize("writer", ["killed", "live"])
def test_recover_removes_only_a_dead_writers_journal_that_sqlite_ignores(
        tmp_path: Path, writer: str) -> None:
    """A writer killed before it synced its journal leaves a journal SQLite does not
    roll back (first byte zero) nor delete: `recover` removes it, and the database
    holds what it held. The same journal of a writer still running stays (it holds the
    write lock), and the database is not touched."""
    db = tmp_path / "n.ipynb.kishudb"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE commit_entry (commit_id, data)")
    con.executemany("INSERT INTO commit_entry VALUES (?, ?)",
                    [(f"c{n}", b"x" * 1000) for n in range(500)])
    con.commit()
    con.close()
    journal = journal_path(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    if writer == "killed":
        kill_before_journal_sync(db)
        assert recover(db) is True
        assert not journal.exists()
    else:
        live = writing_before_journal_sync(db)
        try:
            assert journal.read_bytes()[:1] == b"\0"
            assert recover(db) is False  # the write lock is the writer's
            assert journal.exists()
            assert live.stdin is not None
            live.stdin.write("done\n")
            live.stdin.flush()
            assert live.wait(timeout=30) == 0
        finally:
            live.kill()
        assert not journal.exists()  # the writer's own rollback ended it
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    check = sqlite3.connect(db)
    assert check.execute("SELECT count(*) FROM commit_entry").fetchone() == (500,)
    check.close()
