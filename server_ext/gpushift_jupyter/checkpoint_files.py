"""The notebooks' checkpoint databases follow their notebooks in JupyterLab.

Every database lives in the workspace's hidden folder at its notebook's path
(`kernel_state.database`), so a notebook renamed or moved (JupyterLab's rename, drag
and drop, `PATCH /api/contents`) would leave its checkpoints behind under the old
name. jupyter_server announces each rename on its event bus (the `contents_service`
schema, after the rename succeeded); `CheckpointFiles.on_contents_event` then moves the
notebook's database, or for a folder the folder of its notebooks' databases, to the
new name, under the databases' locks (no checkpoint or restore of them is running),
with a write cut short rolled back first. A database already at the new name (a
deleted notebook's, kept) is renamed aside, never overwritten.

A notebook deleted keeps its checkpoints until the user says otherwise: JupyterLab
offers to delete them (`GET`/`DELETE /api_extension/checkpoints`, `describe` and
`delete`), which is refused while the notebook is there again or a move still needs
them. Files changed behind JupyterLab's back (a terminal's `mv`) are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state.database import DB_SUFFIX, databases_folder, journal_path
from gpushift_jupyter.storage import StorageKeeper, move_checkpoints

log = logging.getLogger("gpushift.jupyter")

CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
_MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class Followed:
    source: Path
    target: Path
    set_aside: Path | None = None
    """Where a database that was already at `target` went."""


class CheckpointFiles:
    def __init__(self, storage: StorageKeeper, root_dir: Path) -> None:
        self.storage = storage
        self.root_dir = root_dir
        """The contents API's root (its paths are relative to it)."""
        self.followed: list[Followed] = []
        """Every move of a database this server made (tests and logs)."""
        self._pending: set[asyncio.Task[None]] = set()

    # -- renames -----------------------------------------------------------------------

    async def on_contents_event(self, logger: Any, schema_id: str,
                                data: Mapping[str, Any]) -> None:
        """jupyter_events listener: follow `rename` events. Never raises (the event bus
        would only log it; a failure here must not fail the user's rename)."""
        if data.get("action") != "rename":
            return
        source, target = data.get("source_path"), data.get("path")
        if not (isinstance(source, str) and isinstance(target, str)):
            return
        try:
            await self.follow_rename(source, target)
        except Exception as exc:
            log.warning("gpushift: the checkpoints of %s did not follow it to %s: %s: %s",
                        source, target, type(exc).__name__, exc)

    async def follow_rename(self, source: str, target: str) -> list[Followed]:
        """Move the databases of `source` (a notebook or a folder, contents API path)
        to `target`'s. Returns what moved (nothing when there were no checkpoints)."""
        old, new = self._absolute(source), self._absolute(target)
        moved: list[Followed] = []
        old_db, new_db = self.storage.database(old), self.storage.database(new)
        async with self._holding([old_db, new_db]):
            if old_db.is_file():
                await self.storage.roll_back_dead_write(old_db)
                moved.append(await asyncio.to_thread(_move_database, old_db, new_db))
        workspace = self.storage.workspace()
        old_folder, new_folder = databases_folder(old, workspace), databases_folder(new, workspace)
        if old_folder.is_dir():
            inside = [db for db in self.storage.known_databases() if db.is_relative_to(old_folder)]
            async with self._holding(inside):
                moved.append(await asyncio.to_thread(_move_database, old_folder, new_folder))
        for done in moved:
            log.info("gpushift: checkpoints followed their notebook", extra={
                "from": str(done.source), "to": str(done.target),
                "set_aside": str(done.set_aside) if done.set_aside else None})
        self.followed.extend(moved)
        return moved

    # -- deleted notebooks -----------------------------------------------------------

    def describe(self, path: str) -> dict[str, Any]:
        """What checkpoints are kept for the notebook (or folder) at `path`."""
        absolute = self._absolute(path)
        files = self._databases(absolute)
        return {"path": path, "exists": absolute.exists(),
                "databases": len(files), "bytes": sum(_size(f) for f in files)}

    async def delete(self, path: str) -> dict[str, Any]:
        """Delete the checkpoints of a deleted notebook (or folder). 409 while the
        notebook is there (its checkpoints are retention's to prune) or while a move
        is in flight or still needs one of them."""
        absolute = self._absolute(path)
        if absolute.exists():
            raise ApiError(409, "notebook_exists",
                           f"{path} exists: its checkpoints are deleted only after it is")
        files = self._databases(absolute)
        await self._refuse_if_a_move_needs(absolute, files)
        freed = 0
        async with self._holding(files):
            for db in files:
                freed += _size(db)
                for file in (db, journal_path(db)):
                    with contextlib.suppress(FileNotFoundError):
                        file.unlink()
            folder = databases_folder(absolute, self.storage.workspace())
            if folder.is_dir():
                await asyncio.to_thread(shutil.rmtree, folder, True)
        log.info("gpushift: checkpoints of a deleted notebook deleted",
                 extra={"path": path, "databases": len(files), "bytes": freed})
        return {"path": path, "deleted": len(files), "bytes": freed}

    async def _refuse_if_a_move_needs(self, absolute: Path, files: list[Path]) -> None:
        if not files or self.storage.current_move is None:
            return
        try:
            migration = await self.storage.current_move()
        except ApiError:
            migration = None
        if migration is None:
            return
        needed = move_checkpoints(migration, absolute)
        refs = [migration.get("checkpoint"), *(migration.get("other_checkpoints") or [])]
        named = [Path(str(r.get("notebook_path", ""))) for r in refs if isinstance(r, Mapping)]
        under = any(p == absolute or p.is_relative_to(absolute) for p in named)
        if needed is None or under:
            raise ApiError(409, "move_needs_them",
                           f"the pod's move ({migration.get('phase')}) still needs the "
                           f"checkpoints of {absolute.name}; try again when it has ended")

    # -- inside ------------------------------------------------------------------------

    def _absolute(self, path: str) -> Path:
        if not path or len(path) > _MAX_PATH_CHARS or "\x00" in path:
            raise ApiError(400, "invalid_field", "path: a path relative to the server root")
        absolute = (self.root_dir / path.lstrip("/")).resolve()
        if absolute == self.root_dir or not absolute.is_relative_to(self.root_dir):
            raise ApiError(400, "invalid_field", f"path: {path!r} is outside the server root")
        return absolute

    def _databases(self, absolute: Path) -> list[Path]:
        db = self.storage.database(absolute)
        files = [db] if db.is_file() else []
        folder = databases_folder(absolute, self.storage.workspace())
        if folder.is_dir():
            files.extend(sorted(folder.rglob(f"*{DB_SUFFIX}")))
        return files

    @contextlib.asynccontextmanager
    async def _holding(self, databases: Iterable[Path]) -> AsyncIterator[None]:
        """The databases' locks, always taken in one order (no deadlock between two
        renames)."""
        async with contextlib.AsyncExitStack() as stack:
            for db in sorted(set(databases)):
                await stack.enter_async_context(self.storage.database_lock(db))
            yield


def _move_database(source: Path, target: Path) -> Followed:
    """Rename a database (with its journal) or a folder of them; one already at the
    target is renamed aside first (`<name>.replaced-<epoch>`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    aside: Path | None = None
    if os.path.lexists(target):
        aside = target.with_name(f"{target.name}.replaced-{int(time.time())}")
        os.replace(target, aside)
        with contextlib.suppress(FileNotFoundError):
            os.replace(journal_path(target), journal_path(aside))
    os.replace(source, target)
    with contextlib.suppress(FileNotFoundError):
        os.replace(journal_path(source), journal_path(target))
    return Followed(source, target, aside)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
