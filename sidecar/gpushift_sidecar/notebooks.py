"""The notebooks kishu is attached to, and their latest complete checkpoints.

The server extension knows which notebooks have kishu attached and registers each one
(`POST /notebooks`); the sidecar's one `CheckpointWatcher` then watches the folder of
that notebook's database in the workspace's hidden `.gpushift/checkpoints/` (not the
volume) and knows its latest complete commit. The most recent of those commits, over
all registered notebooks, is `lastCheckpoint` in runtime-config.json; an
idle move names every notebook's. The migration runner verifies a migration's checkpoint
with the same watcher (`CheckpointWatcher.verify`).

"Most recent" is by the kishu database's modification time: kishu writes a notebook's
database when a cell commits, so the database written last holds the newest state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpushift_core.timestamps import iso_utc
from gpushift_sidecar.checkpoint_database import journal_path, not_saved
from gpushift_sidecar.checkpoint_watcher import CheckpointInfo, CheckpointWatcher
from gpushift_sidecar.state import CheckpointRef

MAX_NOTEBOOKS = 256
"""More notebooks with kishu attached than one person has open in one server."""


def most_recent(infos: Iterable[CheckpointInfo | None]) -> CheckpointInfo | None:
    """The checkpoint whose database was written last (None: there is none)."""
    known = [i for i in infos if i is not None]
    return max(known, key=lambda i: (i.mtime, i.verified_at), default=None)


def latest(watcher: CheckpointWatcher) -> CheckpointInfo | None:
    """The most recent complete commit over the watched notebooks, as last read."""
    return most_recent(watcher.latest(path) for path in watcher.watched())


async def refresh_every(watcher: CheckpointWatcher) -> list[CheckpointInfo]:
    """Every watched notebook's latest complete checkpoint, read now (off the event
    loop: right before a move, a commit the watcher has not been woken for yet counts
    too), the most recent first: what an idle move names (every notebook of the pod is
    restored on the new one)."""
    def read() -> list[CheckpointInfo]:
        return [info for path in watcher.watched()
                if (info := watcher.refresh(path)) is not None]

    infos = await asyncio.to_thread(read)
    return sorted(infos, key=lambda i: (i.mtime, i.verified_at), reverse=True)


def being_written(watcher: CheckpointWatcher) -> list[str]:
    """The watched notebooks whose kishu database is being written now (its journal is
    there): a checkpoint under way (blocking file I/O)."""
    return sorted(path for path in watcher.watched()
                  if os.path.lexists(journal_path(watcher.database(path))))


def unsaved_text(watcher: CheckpointWatcher, refs: Iterable[CheckpointRef]) -> str:
    """What the checkpoints could not hold, for people: "gen (train.ipynb), f
    (eval.ipynb)"; "" when they hold everything (blocking file I/O)."""
    return ", ".join(f"{name} ({Path(ref.notebook_path).name})" for ref in refs
                     for name, _ in not_saved(watcher.database(ref.notebook_path),
                                              ref.commit_id))


def _iso(epoch: float) -> str:
    return iso_utc(dt.datetime.fromtimestamp(epoch, dt.UTC))


def runtime_json(info: CheckpointInfo) -> dict[str, Any]:
    """runtime-config.json's `lastCheckpoint` (camelCase, like the rest of the file)."""
    return {"notebookPath": info.notebook_path, "commitId": info.commit_id,
            "verifiedAt": _iso(info.verified_at)}


def api_json(info: CheckpointInfo) -> dict[str, Any]:
    return {"notebook_path": info.notebook_path, "commit_id": info.commit_id,
            "db_path": info.db_path, "written_at": _iso(info.mtime),
            "verified_at": _iso(info.verified_at)}


def listing(watcher: CheckpointWatcher) -> dict[str, Any]:
    """`GET /checkpoints`: each registered notebook, how its folder is watched
    (inotify, or polling when no inotify watch could be added), its latest complete
    commit; and the most recent of them."""
    watched = watcher.watched()
    notebooks = []
    for path in sorted(watched):
        info = watcher.latest(path)
        notebooks.append({"notebook_path": path, "watch": watched[path],
                          "checkpoint": None if info is None else api_json(info)})
    newest = latest(watcher)
    return {"notebooks": notebooks, "latest": None if newest is None else api_json(newest)}
