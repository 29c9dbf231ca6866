"""Which kishu checkpoints have landed on the workspace volume, per notebook.

`CheckpointWatcher` keeps, per notebook it is told about, the latest complete kishu
commit as `checkpoint_database` reads it (what *complete* and *latest* mean is said
there), and reads it again when the notebook's database or journal changes.

It watches only the folders of the notebooks it is told about (never the whole
volume: a recursive watch over a home directory can exhaust
`fs.inotify.max_user_watches`), with watchdog's inotify observer, and falls back to
polling the two files of a notebook when an inotify watch cannot be added.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import (
    DirDeletedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from gpushift_sidecar.checkpoint_database import (
    Verdict,
    VerdictStatus,
    database_path,
    journal_path,
    read_database,
    verify_database,
)

log = logging.getLogger("gpushift.sidecar")

# The events that can mean a commit landed (and the watched folder going away). Opened /
# closed-without-write events are left out on purpose: this module's own reads would
# otherwise wake it up again.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirDeletedEvent]


@dataclass(frozen=True)
class CheckpointInfo:
    notebook_path: str
    commit_id: str
    """The latest complete commit (kishu's HEAD, else the commit stored last)."""
    db_path: str
    mtime: float
    """Modification time of the database when the commit was read (epoch seconds)."""
    verified_at: float
    """When this module read it (epoch seconds)."""

    def to_json(self) -> dict[str, Any]:
        """camelCase, like runtime-config.json's `lastCheckpoint`."""
        return {"notebookPath": self.notebook_path, "commitId": self.commit_id,
                "dbPath": self.db_path, "mtime": self.mtime, "verifiedAt": self.verified_at}


OnChange = Callable[[str, CheckpointInfo | None], None]


class WatchObserver(Protocol):
    """What this module needs of a watchdog observer (injectable for tests)."""

    def schedule(self, event_handler: FileSystemEventHandler, path: str, *,
                 recursive: bool = False,
                 event_filter: list[type[FileSystemEvent]] | None = None) -> Any: ...

    def unschedule(self, watch: Any) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


@dataclass
class _Notebook:
    path: str
    db_path: Path
    folder: str
    polling: bool
    info: CheckpointInfo | None = None
    signature: tuple[object, ...] | None = None
    """What the poller saw last: (db stat, journal present)."""


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: CheckpointWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)


class CheckpointWatcher:
    """Knows, per watched notebook, the latest complete kishu commit.

    `on_change(notebook_path, info)` is called when that changes (info None: the
    database went away or became unreadable). With an event loop (given, or the running
    one when `start()` is called on it) it is called on the loop through
    `call_soon_threadsafe`; without one, on the watcher's own thread.
    """

    def __init__(self, on_change: OnChange | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 root: Path | None = None,
                 observer: WatchObserver | None = None,
                 poll_interval: float = 2.0,
                 debounce: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        self._on_change = on_change
        self._loop = loop
        self._root = None if root is None else Path(os.path.realpath(root))
        self._workspace = root
        """The workspace as mounted (`_root`: with links resolved)."""
        self._observer: WatchObserver = observer if observer is not None else Observer()
        self._poll_interval = poll_interval
        self._debounce = debounce
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        """Held across a read and its on_change, so changes are reported in order."""
        self._wake = threading.Condition(self._lock)
        self._notebooks: dict[str, _Notebook] = {}
        self._by_file: dict[str, set[str]] = {}
        """db and journal path -> notebook paths (a db may serve several paths)."""
        self._watches: dict[str, Any] = {}
        """folder -> watchdog watch (inotify) of that folder."""
        self._dirty: set[str] = set()
        self._stopping = False
        self._started = False
        self._thread = threading.Thread(target=self._run, name="gpushift-checkpoints",
                                        daemon=True)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the observer and the refresher thread. Called on an event loop, the
        callbacks go to that loop."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        if self._started:
            return
        self._started = True
        self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._started:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(timeout=5)
            self._thread.join(timeout=5)

    # -- what the sidecar asks ------------------------------------------------------

    def watch_notebook(self, notebook_path: str | Path) -> CheckpointInfo | None:
        """Watch the notebook's folder (not recursively) and read its latest commit now.
        Raises ValueError for a path outside `root`. Watching twice is harmless."""
        path = self._key(notebook_path)
        with self._lock:
            if path in self._notebooks:
                return self._notebooks[path].info
        if not self._started:
            self.start()
        db = self.database(path)
        with contextlib.suppress(OSError):  # to watch it before the first checkpoint
            db.parent.mkdir(parents=True, exist_ok=True)
        folder = str(db.parent)
        polling = not self._watch_folder(folder)
        with self._wake:
            nb = _Notebook(path=path, db_path=db, folder=folder, polling=polling)
            self._notebooks[path] = nb
            for file in (db, journal_path(db)):
                self._by_file.setdefault(str(file), set()).add(path)
            self._wake.notify_all()
        self.refresh(path)
        return self.latest(path)

    def unwatch_notebook(self, notebook_path: str | Path) -> None:
        path = self._key(notebook_path)
        with self._lock:
            nb = self._notebooks.pop(path, None)
            if nb is None:
                return
            for file in (nb.db_path, journal_path(nb.db_path)):
                paths = self._by_file.get(str(file), set())
                paths.discard(path)
                if not paths:
                    self._by_file.pop(str(file), None)
            still_used = any(n.folder == nb.folder for n in self._notebooks.values())
            watch = None if still_used else self._watches.pop(nb.folder, None)
        if watch is not None:
            with contextlib.suppress(Exception):
                self._observer.unschedule(watch)

    def watched(self) -> dict[str, str]:
        """notebook path -> "inotify" or "polling"."""
        with self._lock:
            return {p: ("polling" if n.polling else "inotify")
                    for p, n in self._notebooks.items()}

    def latest(self, notebook_path: str | Path) -> CheckpointInfo | None:
        """The latest complete commit of a watched notebook, as last read."""
        with self._lock:
            nb = self._notebooks.get(self._key(notebook_path))
            return None if nb is None else nb.info

    def verify(self, notebook_path: str | Path, commit_id: str) -> Verdict:
        """Whether `commit_id` is complete in the notebook's kishu database, read now.
        Blocking file I/O: on an event loop, use `averify`."""
        try:
            db = self.database(notebook_path)
        except ValueError as exc:
            return Verdict(VerdictStatus.MISSING, f"no checkpoint can be there: {exc}",
                           commit_id, "")
        return verify_database(db, commit_id)

    async def averify(self, notebook_path: str | Path, commit_id: str) -> Verdict:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.verify, notebook_path, commit_id)

    def refresh(self, notebook_path: str | Path) -> CheckpointInfo | None:
        """Read the notebook's database now; calls on_change when the latest changed.
        While kishu is writing (journal present), the previous answer stands."""
        path = self._key(notebook_path)
        with self._refreshing:
            return self._refresh(path)

    def _refresh(self, path: str) -> CheckpointInfo | None:
        with self._lock:
            nb = self._notebooks.get(path)
            if nb is None:
                return None
            db = nb.db_path
        read = read_database(db)
        with self._lock:
            nb = self._notebooks.get(path)
            if nb is None:
                return None
            previous = nb.info
            if read.status is VerdictStatus.INCOMPLETE:
                return previous
            info = None
            if read.status is VerdictStatus.COMPLETE and read.head is not None:
                same = previous is not None and previous.commit_id == read.head
                info = CheckpointInfo(notebook_path=path, commit_id=read.head,
                                      db_path=str(db), mtime=read.mtime,
                                      verified_at=self._clock())
                if same and previous is not None:
                    info = dataclasses.replace(previous, mtime=read.mtime,
                                               verified_at=info.verified_at)
            elif read.status is VerdictStatus.UNREADABLE and previous is not None:
                log.warning("kishu database unreadable", extra={
                    "notebook_path": path, "why": read.reason})
            nb.info = info
        changed = (previous is None) != (info is None) or (
            previous is not None and info is not None and previous.commit_id != info.commit_id)
        if changed:
            self._notify(path, info)
        return info

    # -- inside ------------------------------------------------------------------------

    def database(self, notebook_path: str | Path) -> Path:
        """The notebook's database, in the workspace's hidden folder. ValueError without
        a workspace or for a notebook that is not on it."""
        if self._workspace is None:
            raise ValueError(f"{notebook_path}: this pod has no workspace volume")
        return database_path(notebook_path, self._workspace)

    def _key(self, notebook_path: str | Path) -> str:
        path = Path(notebook_path)
        if not path.is_absolute():
            raise ValueError(f"{notebook_path}: not an absolute path")
        real = Path(os.path.realpath(path))
        if self._root is not None and not real.is_relative_to(self._root):
            raise ValueError(f"{notebook_path}: not on the workspace volume ({self._root})")
        return os.path.normpath(path)

    def _watch_folder(self, folder: str) -> bool:
        """An inotify watch on `folder` (shared by its notebooks); False: poll instead."""
        with self._lock:
            if folder in self._watches:
                return True
        try:
            watch = self._observer.schedule(_Handler(self), folder, recursive=False,
                                            event_filter=WATCHED_EVENTS)
        except OSError as exc:
            log.warning("cannot watch folder with inotify; polling its kishu files instead",
                        extra={"folder": folder, "why": f"{exc.strerror or exc}",
                               "errno": exc.errno, "poll_interval": self._poll_interval})
            return False
        with self._lock:
            self._watches[folder] = watch
        return True

    def _on_event(self, event: FileSystemEvent) -> None:
        """On watchdog's thread: note which notebooks to read again."""
        touched: set[str] = set()
        with self._wake:
            folder = os.fsdecode(event.src_path)
            if event.is_directory and event.event_type == "deleted" and folder in self._watches:
                # The watched folder itself went away, and its inotify watch with it:
                # poll its notebooks from now on (the folder may come back).
                self._watches.pop(folder)
                for nb in self._notebooks.values():
                    if nb.folder == folder:
                        nb.polling = True
                        touched.add(nb.path)
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if raw:
                    touched |= self._by_file.get(os.fsdecode(raw), set())
            if touched:
                self._dirty |= touched
                self._wake.notify_all()

    def _run(self) -> None:
        """The refresher: reads dirty notebooks (after a short debounce, so a burst of
        writes is one read) and polls the notebooks that have no inotify watch."""
        next_poll = time.monotonic()
        while True:
            with self._wake:
                while not self._stopping and not self._dirty:
                    polling = any(n.polling for n in self._notebooks.values())
                    if polling and time.monotonic() >= next_poll:
                        break
                    timeout = max(0.0, next_poll - time.monotonic()) if polling else None
                    self._wake.wait(timeout)
                if self._stopping:
                    return
            if self._dirty:
                time.sleep(self._debounce)
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                polled = [n for n in self._notebooks.values() if n.polling]
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self._poll_interval
                for nb in polled:
                    signature = _signature(nb.db_path)
                    if signature != nb.signature:
                        nb.signature = signature
                        dirty.add(nb.path)
            for path in dirty:
                try:
                    self.refresh(path)
                except Exception:  # the refresher must outlive any one notebook
                    log.exception("refreshing kishu checkpoint failed",
                                  extra={"notebook_path": path})

    def _notify(self, path: str, info: CheckpointInfo | None) -> None:
        callback = self._on_change
        if callback is None:
            return
        loop = self._loop
        if loop is None:
            callback(path, info)
            return
        try:
            loop.call_soon_threadsafe(callback, path, info)
        except RuntimeError:  # the loop is closed: the sidecar is shutting down
            log.debug("event loop closed; checkpoint change not delivered")


def _signature(db_path: Path) -> tuple[object, ...]:
    try:
        st = os.stat(db_path)
        db: tuple[object, ...] = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        db = ()
    return (db, os.path.lexists(journal_path(db_path)))
