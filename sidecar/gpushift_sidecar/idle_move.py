"""The migration an idle move starts, read as the idle timer runs out (`IdleLoop`).

Target cpu, reason idle, the most recent complete kishu checkpoint of the registered
notebooks (every other notebook's beside it), no pending cell, and notes the page shows:
the timeout that ran out, and any notebook text the checkpoints do not hold. When the
admin keeps notebooks with such text on the GPU (`idle.when_not_saved: stay`) there is
no move: the answer is the reason the idle timer starts over instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING

from gpushift_sidecar import notebooks
from gpushift_sidecar.idle_reporting import idle_note
from gpushift_sidecar.state import CheckpointRef, Migration, Reason, Target

if TYPE_CHECKING:
    from gpushift_sidecar.service import Sidecar

__all__ = ["idle_migration"]


async def idle_migration(sidecar: Sidecar, timeout: int,
                         when_not_saved: str) -> Migration | str:
    """The idle move's migration, or why there is none (the timer starts over)."""
    refs = [CheckpointRef(info.notebook_path, info.commit_id)
            for info in await notebooks.refresh_every(sidecar.watcher)]
    checkpoint = refs[0] if refs else None  # the most recent; every notebook's goes too
    lost = await asyncio.to_thread(notebooks.unsaved_text, sidecar.watcher, refs)
    if lost and when_not_saved == "stay":
        return (f"not saved by the checkpoints: {lost}; the admin keeps such notebooks "
                "on the GPU (idle.when_not_saved: stay): the idle timer starts over")
    now = dt.datetime.now(dt.UTC)
    migration = Migration.new(sidecar.env, target=Target.CPU, reason=Reason.IDLE,
                              profile=None, checkpoint=checkpoint, pending_cell=None,
                              now=now, other_checkpoints=tuple(refs[1:]))
    migration = migration.with_note(idle_note(timeout, sidecar.env.gpu), now=now)
    if lost:
        migration = migration.with_note(f"not saved, so not restored on the CPU pod: "
                                        f"{lost}", now=now)
    return migration
