"""Restore on the server: the new pod's Jupyter server restores a move's state by itself,
without waiting for a browser.

When the sidecar says the migration arrived (`restoring`), the server restores every
notebook of the move (`MoveRestorer.restore_move`: into each notebook's session — a
browser's, or one it opens — claimed, once per move) and reports to the sidecar. A tab
closed during the move, a laptop that slept: the variables are back in the kernels all
the same, and the move ends — the GPU is never held by a move waiting for a browser.
A browser that opens a notebook later is told what came back there (`POST /restore`).

The same loop ends a move that waits for checkpoints no save of this server will name
(`Mover.end_orphaned_save`): the server that took it was restarted mid-save.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.move_restore import MoveRestorer, ServerRestore
from gpushift_jupyter.moves import Mover

log = logging.getLogger("gpushift.jupyter")

# Attempts at one move's restore that end in an error other than the restore's own
# (a kernel that would not start): after these, the browser or the sidecar's restore
# deadline decides.
MAX_ATTEMPTS = 3
SIDECAR_START_S = 60.0
SIDECAR_START_RETRY_S = 0.1
"""Until the sidecar first answers (at most this long after the server's start), the
loop looks again every SIDECAR_START_RETRY_S: the sidecar's server may still be starting
beside this one."""


class ServerRestorer:
    """The loop that restores each arriving move on this server (`run_forever`)."""

    def __init__(self, restorer: MoveRestorer, optimizer_on: Callable[[], bool],
                 mover: Mover | None = None) -> None:
        self.restorer = restorer
        self.mover = mover
        """Ends a move whose save died with a previous server process."""
        self.optimizer_on = optimizer_on
        """The pod has a sidecar and the optimizer is on."""
        self._attempts: dict[str, int] = {}

    async def run_forever(self, interval: float) -> None:
        started = time.monotonic()
        answered = False
        while True:
            # The first look at once: on a new pod the move is in `restoring` before the
            # server starts, and a browser that asks meanwhile waits for this restore.
            wait = interval
            try:
                await self.restore_arrived_move()
                answered = True
            except ApiError as exc:
                if (exc.error == "sidecar_unavailable" and not answered
                        and time.monotonic() - started < SIDECAR_START_S):
                    # The notebook container starts while the sidecar still starts up
                    # (its runtime files come first): look again soon, quietly.
                    log.debug("gpushift: the sidecar does not answer yet: %s", exc.detail)
                    wait = min(interval, SIDECAR_START_RETRY_S)
                else:
                    log.warning("gpushift: the move's state was not restored on the "
                                "server (%s): %s", exc.error, exc.detail)
            except Exception:  # a bug here must not end the loop (or the server)
                log.exception("gpushift: restoring the move on the server failed")
            await asyncio.sleep(wait)

    async def restore_arrived_move(self) -> ServerRestore | None:
        """One look: restore the migration in `restoring`, if there is one to do."""
        if not self.optimizer_on():
            return None
        migration = await self.restorer.current()
        if self.mover is not None and await self.mover.end_orphaned_save(migration):
            return None
        if migration is None or migration.get("phase") != "restoring":
            return None
        migration_id = str(migration["id"])
        done = self.restorer.done.get(migration_id)
        if (done is not None and done.reported) or self._attempts.get(
                migration_id, 0) >= MAX_ATTEMPTS:
            return None
        self._attempts[migration_id] = self._attempts.get(migration_id, 0) + 1
        try:
            return await self.restorer.restore_move(migration, by="server")
        except ApiError as exc:
            if exc.status == 409:  # a browser's request has it now
                self._attempts[migration_id] -= 1  # not a failure of ours
                log.info("gpushift: the move's restore is in a browser's hands (%s)",
                         exc.error)
                return None
            raise
