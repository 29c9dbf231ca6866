"""The waits of the checkpoint step (`runner`): for a kishu commit to be complete on the
volume, and for the server extension to name a move's checkpoints. Each has a deadline
and ends; what to do when it passes is the runner's."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from gpushift_sidecar.checkpoint_database import (
    Verdict,
    VerdictStatus,
    database_path,
    verify_database,
)
from gpushift_sidecar.state import CheckpointRef, Migration
from gpushift_sidecar.tracker import MigrationTracker

log = logging.getLogger("gpushift.sidecar")

Verify = Callable[[str, str], Verdict]


def verify_checkpoint(notebook_path: str, commit_id: str, *,
                      workspace: Path | None) -> Verdict:
    """Whether the kishu commit is complete in the notebook's database on the workspace
    volume (blocking file I/O). The runner's default `verify`; the served sidecar passes
    its `CheckpointWatcher.verify` (the same check), so one watcher serves the API, the
    idle move and the runner."""
    try:
        if workspace is None:
            raise ValueError("this pod has no workspace volume")
        db = database_path(notebook_path, workspace)
    except ValueError as exc:
        return Verdict(VerdictStatus.MISSING, f"no checkpoint can be there: {exc}",
                       commit_id, "")
    return verify_database(db, commit_id)


async def await_complete(verify: Verify, migration_id: str, ref: CheckpointRef, *,
                         timeout: float, poll: float) -> Verdict:
    """The commit's verdict once complete, or the last one at `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    said = False
    while True:
        verdict = await asyncio.to_thread(verify, ref.notebook_path, ref.commit_id)
        if verdict.complete or loop.time() >= deadline:
            return verdict
        if not said:
            log.info("waiting for the checkpoint to be complete", extra={
                "migration": migration_id, "commit": ref.commit_id, "why": verdict.reason})
            said = True
        await asyncio.sleep(min(poll, max(0.0, deadline - loop.time())))


async def await_named(tracker: MigrationTracker, named: asyncio.Event, migration_id: str,
                      deadline: dt.datetime) -> Migration | None:
    """The move once its checkpoints are named (`checkpoints_to_come` false); the move as
    it stands when `deadline` passed first (still waiting: the caller fails it); None
    when it ended or is no longer current. `named` is set by whoever names them."""
    while True:
        current = tracker.current
        if current is None or current.id != migration_id or not current.active:
            return None
        if not current.checkpoints_to_come:
            return current
        left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        if left <= 0:
            return current
        named.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(named.wait(), min(left, 5.0))
