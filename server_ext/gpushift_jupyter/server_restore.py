"""Restore on the server: the new pod's Jupyter server restores a move's state by itself,
without waiting for a browser.

When the sidecar says the migration arrived (`restoring`), the server opens a session
for the checkpoint's notebook (or takes the one a browser opened already), restores the
state into its kernel with kishu and reports to the sidecar (`Mover.restore`: one
restore per move, claimed, so a browser's request meanwhile waits its turn). A tab
closed during the move, a laptop that slept: the variables are back in the kernel all
the same, and the move ends — the GPU is never held by a move waiting for a browser.

What the restore did is kept (`ServerRestore`) for the browser that opens the notebook
later: `GET /migration` says `restored_on_server`, and its `POST /restore` gets the
restore's answer — what came back, what did not, when — instead of restoring again. The
held cell goes to the first browser that asks, once, and only after a restore that
succeeded (it runs in the browser, where its output belongs in the notebook).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError

log = logging.getLogger("gpushift.jupyter")

# Attempts at one move's restore that end in an error other than the restore's own
# (a kernel that would not start): after these, the browser or the sidecar's restore
# deadline decides.
MAX_ATTEMPTS = 3
KERNEL_START_TIMEOUT = 120.0


@dataclass
class ServerRestore:
    """A move's state, restored by this server on its own."""

    migration_id: str
    kernel_id: str | None
    """The kernel the state went into (None: the move had no checkpoint)."""
    notebook: Path | None
    answer: dict[str, Any]
    """What `POST /restore` answers for it (the held cell apart)."""
    pending_cell: dict[str, Any] | None
    """The held cell, until a browser takes it (once)."""
    at: float
    """Epoch seconds at which the restore ended."""
    seen: bool = False
    """A browser has collected the answer."""


def kernel_name_of(notebook: Path, available: set[str]) -> str | None:
    """The kernel the notebook names in its metadata when it is installed here, else
    None (the server's default). A notebook that cannot be read names none (pure but
    for the read)."""
    try:
        metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return None
    name = (metadata.get("kernelspec") or {}).get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name in available else None


class ServerRestorer:
    """The loop that restores each arriving move on this server (`run_forever`)."""

    def __init__(self, mover: Any, session_manager: Any, kernel_spec_manager: Any,
                 optimizer_on: Any) -> None:
        self.mover = mover
        self.session_manager = session_manager
        self.kernel_spec_manager = kernel_spec_manager
        self.optimizer_on = optimizer_on
        """() -> bool: the pod has a sidecar and the optimizer is on."""
        self._attempts: dict[str, int] = {}

    async def run_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.restore_arrived_move()
            except ApiError as exc:
                log.warning("gpushift: the move's state was not restored on the server "
                            "(%s): %s", exc.error, exc.detail)
            except Exception:  # a bug here must not end the loop (or the server)
                log.exception("gpushift: restoring the move on the server failed")

    async def restore_arrived_move(self) -> ServerRestore | None:
        """One look: restore the migration in `restoring`, if there is one to do."""
        if not self.optimizer_on():
            return None
        migration = await self.mover.current()
        if migration is None or migration.get("phase") != "restoring":
            return None
        migration_id = str(migration["id"])
        if (migration_id in self.mover.server_restores
                or self._attempts.get(migration_id, 0) >= MAX_ATTEMPTS):
            return None
        self._attempts[migration_id] = self._attempts.get(migration_id, 0) + 1
        checkpoint = migration.get("checkpoint")
        kernel_id: str | None = None
        notebook: Path | None = None
        relative: str | None = None
        if isinstance(checkpoint, dict):
            notebook = Path(checkpoint["notebook_path"])
            relative = self.mover.kernels.relative(notebook)
            kernel_id = await self._notebook_kernel(relative, notebook)
        try:
            answer = (await self.mover.restore(kernel_id, relative) if kernel_id is not None
                      else await self.mover.report_nothing_to_restore(migration))
        except ApiError as exc:
            if exc.status == 409:  # a browser's restore has it (claimed, or done)
                self._attempts[migration_id] -= 1  # not a failure of ours
                log.info("gpushift: the move's restore is in a browser's hands (%s)",
                         exc.error)
                return None
            raise
        pending = answer.pop("pending_cell", None)
        done = ServerRestore(migration_id, kernel_id, notebook, answer, pending, time.time())
        self.mover.server_restores[migration_id] = done
        log.info("gpushift: the move's state was restored on the server", extra={
            "migration": migration_id, "notebook": relative, "ok": answer.get("ok"),
            "restored": len(answer.get("restored") or [])})
        return done

    async def _notebook_kernel(self, relative: str, notebook: Path) -> str:
        """The kernel of the notebook's session: a browser's, or one opened here."""
        for session in await self.session_manager.list_sessions():
            kernel = session.get("kernel") or {}
            if session.get("path") == relative and kernel.get("id"):
                return str(kernel["id"])
        available = set((await _maybe_await(
            self.kernel_spec_manager.get_all_specs())).keys())
        model = await self.session_manager.create_session(
            path=relative, name=notebook.name, type="notebook",
            kernel_name=kernel_name_of(notebook, available))
        kernel_id = str(model["kernel"]["id"])
        await self.mover.kernels.wait_ready(kernel_id, KERNEL_START_TIMEOUT)
        # A browser that opened the notebook at the same moment has a session of its own
        # (jupyter_server checks for one and creates it in separate steps): its kernel is
        # the one the user works in, so the state goes there and ours is closed — the page
        # never has to switch kernels.
        for session in await self.session_manager.list_sessions():
            other = (session.get("kernel") or {}).get("id")
            if session.get("path") == relative and session.get("id") != model["id"] and other:
                await self.session_manager.delete_session(model["id"])
                return str(other)
        return kernel_id


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value
