"""The kishu checkpoint watcher: the latest commit per notebook, inotify and polling,
against SQLite files laid out like kishu 0.3.4's (test_checkpoint_database's `make_db`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from test_checkpoint_database import add_commit, fingerprint, make_db
from watchdog.observers import Observer

from gpushift_sidecar import checkpoint_database
from gpushift_sidecar.checkpoint_database import VerdictStatus, journal_path, verify_database
from gpushift_sidecar.checkpoint_watcher import CheckpointInfo, CheckpointWatcher


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return tmp_path / "work" / "analysis.ipynb"


# -- verify: through the watcher, read-only --------------------------------------------


def test_a_real_hot_journal_is_left_alone(notebook: Path) -> None:
    """A writer killed mid-transaction leaves a hot journal. A read-write open would roll
    it back (change the database, delete the journal); the watcher must not."""
    db = make_db(notebook)
    add_commit(db, "c1")
    code = (
        "import os, sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "con.execute('PRAGMA cache_size=1')\n"
        "con.execute('BEGIN IMMEDIATE')\n"
        "for i in range(500):\n"
        "    con.execute('INSERT INTO commit_entry VALUES (?, randomblob(4000))', (f'x{i}',))\n"
        "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True)
    assert journal_path(db).exists()
    before = fingerprint(db.parent)

    assert verify_database(db, "c1").status is VerdictStatus.INCOMPLETE
    # The journal may also appear just after the check for it: SQLite itself must then
    # refuse (read-only open), not roll it back.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint_database.os.path, "lexists", lambda _path: False)
        verdict = verify_database(db, "c1")
    assert verdict.status is VerdictStatus.INCOMPLETE, verdict.reason
    assert fingerprint(db.parent) == before
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=_RecordingObserver())
    assert watcher.watch_notebook(notebook) is None
    watcher.stop()
    assert fingerprint(db.parent) == before

    # What the test guards against: an ordinary open rolls the journal back.
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM commit_entry").fetchone() == (1,)
    con.close()
    assert not journal_path(db).exists()



def test_verify_through_the_watcher_uses_the_notebook_path(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=_RecordingObserver())
    assert watcher.verify(notebook, "c1").complete
    assert watcher.verify(notebook, "c2").status is VerdictStatus.MISSING


# -- latest --------------------------------------------------------------------------------


def test_latest_is_kishus_head(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    add_commit(db, "c2")
    con = sqlite3.connect(db)  # a checkout of c1 moves HEAD back
    con.execute("UPDATE head_branch SET commit_id = 'c1'")
    con.commit()
    con.close()
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=_RecordingObserver())
    info = watcher.watch_notebook(notebook)
    watcher.stop()
    assert info is not None and info.commit_id == "c1"
    assert info.db_path == str(db) and info.notebook_path == str(notebook)
    assert info.mtime == db.stat().st_mtime
    assert info.to_json()["commitId"] == "c1"


def test_latest_without_head_is_the_commit_stored_last(notebook: Path) -> None:
    db = make_db(notebook)
    for commit in ("b", "c", "a"):
        add_commit(db, commit, head=False)
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=_RecordingObserver())
    info = watcher.watch_notebook(notebook)
    watcher.stop()
    assert info is not None and info.commit_id == "a"


def test_latest_ignores_a_head_whose_commit_is_not_stored(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    con = sqlite3.connect(db)
    con.execute("UPDATE head_branch SET commit_id = 'ghost'")
    con.execute("UPDATE var_head_commit SET commit_id = 'ghost'")
    con.commit()
    con.close()
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=_RecordingObserver())
    info = watcher.watch_notebook(notebook)
    watcher.stop()
    assert info is not None and info.commit_id == "c1"


def test_latest_of_an_unwatched_notebook_is_none(notebook: Path) -> None:
    make_db(notebook)
    assert CheckpointWatcher(root=notebook.parent.parent,
                             observer=_RecordingObserver()).latest(notebook) is None


def test_paths_outside_the_workspace_are_refused(tmp_path: Path) -> None:
    watcher = CheckpointWatcher(root=tmp_path / "home", observer=_RecordingObserver())
    with pytest.raises(ValueError, match="workspace"):
        watcher.watch_notebook(tmp_path / "elsewhere" / "a.ipynb")
    with pytest.raises(ValueError, match="absolute"):
        watcher.watch_notebook("relative.ipynb")


# -- watching --------------------------------------------------------------------------


class _RecordingObserver:
    """A real watchdog observer that records what it was asked to watch, and can fail
    to add a watch the way watchdog does when the inotify limit is reached."""

    def __init__(self, fail: OSError | None = None) -> None:
        self.inner = Observer()
        self.fail = fail
        self.scheduled: list[tuple[str, bool]] = []

    def schedule(self, handler: Any, path: str, *, recursive: bool = False,
                 event_filter: Any = None) -> Any:
        self.scheduled.append((path, recursive))
        if self.fail is not None:
            raise self.fail
        return self.inner.schedule(handler, path, recursive=recursive,
                                   event_filter=event_filter)

    def unschedule(self, watch: Any) -> None:
        self.inner.unschedule(watch)

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()

    def join(self, timeout: float | None = None) -> None:
        self.inner.join(timeout)

    def is_alive(self) -> bool:
        return self.inner.is_alive()


class _Changes:
    """on_change, recording the calls and the thread they came on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, CheckpointInfo | None]] = []
        self.threads: set[int] = set()
        self.event = asyncio.Event()

    def __call__(self, path: str, info: CheckpointInfo | None) -> None:
        self.calls.append((path, info))
        self.threads.add(threading.get_ident())
        self.event.set()

    async def wait_for(self, commit_id: str | None, timeout: float = 5.0) -> None:
        async def until() -> None:
            while not self.calls or (self.calls[-1][1].commit_id if self.calls[-1][1]
                                     else None) != commit_id:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(until(), timeout)


async def test_inotify_reports_a_new_commit_on_the_event_loop(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    (db.parent / "sub").mkdir()
    changes = _Changes()
    observer = _RecordingObserver()
    # A poll interval of an hour: only inotify can deliver within the test's timeout.
    watcher = CheckpointWatcher(changes, root=notebook.parent.parent,
                                observer=observer, poll_interval=3600)
    watcher.start()
    try:
        assert watcher.watch_notebook(notebook) is not None
        await changes.wait_for("c1")
        assert watcher.watched() == {str(notebook): "inotify"}
        # only the folder of the notebook's database, not recursively
        assert observer.scheduled == [(str(db.parent), False)]
        await asyncio.to_thread(add_commit, db, "c2")
        await changes.wait_for("c2")
        latest = watcher.latest(notebook)
        assert latest is not None and latest.commit_id == "c2"
        assert changes.threads == {threading.get_ident()}  # delivered on the loop
        # a file in a subfolder or another file changes nothing
        (db.parent / "sub" / "x.kishudb").write_bytes(b"x")
        (db.parent / "other.txt").write_text("x")
        await asyncio.sleep(0.3)
        assert [c[1].commit_id for c in changes.calls if c[1]] == ["c1", "c2"]
    finally:
        watcher.stop()


async def test_two_notebooks_in_one_folder_share_one_watch(notebook: Path) -> None:
    other = notebook.with_name("other.ipynb")
    db1, db2 = make_db(notebook), make_db(other)
    changes = _Changes()
    observer = _RecordingObserver()
    watcher = CheckpointWatcher(changes, root=notebook.parent.parent,
                                observer=observer, poll_interval=3600)
    watcher.start()
    try:
        watcher.watch_notebook(notebook)
        watcher.watch_notebook(other)
        assert len(observer.scheduled) == 1
        await asyncio.to_thread(add_commit, db2, "o1")
        await changes.wait_for("o1")
        assert changes.calls[-1][0] == str(other)
        assert watcher.latest(notebook) is None
        await asyncio.to_thread(add_commit, db1, "n1")
        await changes.wait_for("n1")
        assert changes.calls[-1][0] == str(notebook)
    finally:
        watcher.stop()


async def test_a_commit_is_reported_only_once_the_journal_is_gone(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    changes = _Changes()
    watcher = CheckpointWatcher(changes, root=notebook.parent.parent,
                                observer=_RecordingObserver(), poll_interval=3600)
    watcher.start()
    try:
        watcher.watch_notebook(notebook)
        await changes.wait_for("c1")
        journal = journal_path(db)
        journal.write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\0" * 504)
        await asyncio.to_thread(_add_commit_behind_the_journal, db, "c2")
        await asyncio.sleep(0.4)
        latest = watcher.latest(notebook)
        assert latest is not None and latest.commit_id == "c1"
        journal.unlink()
        await changes.wait_for("c2")
    finally:
        watcher.stop()


def _add_commit_behind_the_journal(db: Path, commit_id: str) -> None:
    """Write a commit while a (fake) journal sits beside the database: rename the journal
    away for the write, then put it back, so SQLite does not see it as hot."""
    journal = journal_path(db)
    parked = journal.with_name("parked")
    journal.rename(parked)
    add_commit(db, commit_id)
    parked.rename(journal)


async def test_a_database_that_goes_bad_is_reported_as_none(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    changes = _Changes()
    watcher = CheckpointWatcher(changes, root=notebook.parent.parent,
                                observer=_RecordingObserver(), poll_interval=3600)
    watcher.start()
    try:
        watcher.watch_notebook(notebook)
        await changes.wait_for("c1")
        db.write_bytes(b"garbage" * 1000)
        await changes.wait_for(None)
        assert watcher.latest(notebook) is None
    finally:
        watcher.stop()


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "inotify watch limit reached"),
    OSError(errno.EMFILE, "inotify instance limit reached")])
async def test_falls_back_to_polling_when_inotify_cannot_watch(
        notebook: Path, failure: OSError, caplog: pytest.LogCaptureFixture) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    changes = _Changes()
    observer = _RecordingObserver(fail=failure)
    watcher = CheckpointWatcher(changes, root=notebook.parent.parent,
                                observer=observer, poll_interval=0.1)
    watcher.start()
    try:
        info = watcher.watch_notebook(notebook)
        assert info is not None and info.commit_id == "c1"
        assert watcher.watched() == {str(notebook): "polling"}
        assert observer.scheduled == [(str(db.parent), False)]
        assert "polling" in caplog.text
        await changes.wait_for("c1")
        await asyncio.to_thread(add_commit, db, "c2")
        await changes.wait_for("c2", timeout=3)
        # and the journal rule holds when polling too
        journal = journal_path(db)
        journal.write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\0" * 504)
        await asyncio.to_thread(_add_commit_behind_the_journal, db, "c3")
        await asyncio.sleep(0.5)
        assert watcher.latest(notebook).commit_id == "c2"  # type: ignore[union-attr]
        journal.unlink()
        await changes.wait_for("c3", timeout=3)
    finally:
        watcher.stop()


async def test_polling_takes_over_when_the_watched_folder_is_removed(tmp_path: Path) -> None:
    notebook = tmp_path / "proj" / "a.ipynb"
    db = make_db(notebook)
    add_commit(db, "c1")
    changes = _Changes()
    watcher = CheckpointWatcher(changes, root=notebook.parent.parent,
                                observer=_RecordingObserver(), poll_interval=0.1)
    watcher.start()
    try:
        watcher.watch_notebook(notebook)
        await changes.wait_for("c1")
        for p in db.parent.iterdir():
            p.unlink()
        db.parent.rmdir()
        await changes.wait_for(None)
        for _ in range(50):
            if watcher.watched() == {str(notebook): "polling"}:
                break
            await asyncio.sleep(0.05)
        assert watcher.watched() == {str(notebook): "polling"}
        db = make_db(notebook)
        add_commit(db, "c2")
        await changes.wait_for("c2", timeout=3)
    finally:
        watcher.stop()


def test_without_a_loop_on_change_runs_on_the_watcher_thread(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def on_change(path: str, info: CheckpointInfo | None) -> None:
        if info is not None:
            seen.append((info.commit_id, threading.get_ident()))
            if info.commit_id == "c2":
                done.set()

    watcher = CheckpointWatcher(on_change, root=notebook.parent.parent,
                                observer=_RecordingObserver(), poll_interval=3600)
    watcher.start()
    try:
        watcher.watch_notebook(notebook)
        add_commit(db, "c2")
        assert done.wait(5)
        assert seen[0] == ("c1", threading.get_ident())  # the initial read, here
        assert seen[-1][1] != threading.get_ident()
    finally:
        watcher.stop()


def test_unwatch_drops_the_folder_watch(notebook: Path) -> None:
    make_db(notebook)
    observer = _RecordingObserver()
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=observer)
    watcher.start()
    try:
        watcher.watch_notebook(notebook)
        assert len(observer.inner.emitters) == 1
        watcher.unwatch_notebook(notebook)
        assert watcher.watched() == {}
        assert len(observer.inner.emitters) == 0
    finally:
        watcher.stop()


def test_nothing_is_written_next_to_the_notebook(notebook: Path) -> None:
    db = make_db(notebook)
    add_commit(db, "c1")
    before = fingerprint(db.parent)
    beside = sorted(os.listdir(notebook.parent))
    watcher = CheckpointWatcher(root=notebook.parent.parent, observer=_RecordingObserver())
    watcher.watch_notebook(notebook)
    watcher.refresh(notebook)
    watcher.verify(notebook, "c1")
    watcher.stop()
    assert fingerprint(db.parent) == before
    assert sorted(os.listdir(db.parent)) == ["analysis.ipynb.kishudb"]
    assert sorted(os.listdir(notebook.parent)) == beside == ["analysis.ipynb"]
