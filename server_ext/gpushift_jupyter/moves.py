"""Moves between CPU and GPU pods, as the server extension starts them; the new pod's
side is `move_restore`.

One clock: `/migrate` answers as soon as the sidecar took the move, and the move is the
sidecar's from then on. It waits in `checkpointing` while this server saves every
notebook kernel of the pod with kishu (at once, each verified) and names the checkpoints
(`POST /migrations/current/checkpoints`); the sidecar verifies each again before it
patches anything. A checkpoint that fails in any notebook fails the move, naming that
notebook, before anything changed; a server that dies meanwhile leaves the move to the
sidecar's save deadline. What the move stops without saving (consoles, kernels of other
languages, terminals) is listed in the answer, as the confirmation listed it (`GET /pod`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpushift_jupyter.background import BackgroundCheckpoints
from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import (
    Checkpoint,
    KernelStateError,
    attach,
    checkpoint,
)
from gpushift_jupyter.kernels import KernelRegistry
from gpushift_jupyter.pod_sessions import (
    PodSessions,
    SavedKernel,
    pod_sessions,
    with_variables,
)
from gpushift_jupyter.sidecar_client import SidecarClient
from gpushift_jupyter.storage import StorageKeeper

log = logging.getLogger("gpushift.jupyter")

# How long the checkpoints are offered to a sidecar that does not answer (restarting).
NAME_RETRY_SECONDS = 120.0
ORPHANED_SAVE = ("the notebook server restarted while it saved the notebooks, and their "
                 "kernels stopped with it; the last checkpoints on the volume are kept")


class Mover:
    def __init__(self, kernels: KernelRegistry, sidecar: SidecarClient,
                 terminals: Callable[[], Any] = lambda: None,
                 storage: StorageKeeper | None = None) -> None:
        self.kernels = kernels
        self.sidecar = sidecar
        self.storage = storage or StorageKeeper(None, None, kernels.root_dir)
        """Room before a checkpoint, retention after it (`storage`)."""
        self.terminals = terminals
        """() -> jupyter_server's terminal manager (None: terminals are off)."""
        self.background: BackgroundCheckpoints | None = None
        """Background checkpoints, stopped before a checkpoint of the same kernel."""
        self._saving: dict[str, asyncio.Task[None]] = {}
        """Saves running for accepted moves, by migration id."""
        self.started_at = dt.datetime.now(dt.UTC)
        """When this server process started: a move taken before can only be a previous
        process's."""

    async def sessions(self, *, variables: bool = False) -> PodSessions:
        """`GET /pod`: the notebooks a move saves and what it stops; with `variables`,
        also the variables it would not bring back."""
        sessions = await pod_sessions(self.kernels, self.terminals)
        return await with_variables(self.kernels, sessions) if variables else sessions

    async def attach(self, kernel_id: str, path: str | None) -> Path:
        """Attach kishu to the kernel (idempotent) and have the sidecar watch the
        notebook's checkpoints."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        facts = self.kernels.facts(kernel_id)
        if facts.notebook != notebook:
            async with self.kernels.kernel(kernel_id) as kernel, \
                    self.storage.writing(notebook, create=True):
                try:
                    await attach(kernel, notebook, workspace=self.storage.workspace())
                except KernelStateError as exc:
                    raise ApiError(500, "attach_failed",
                                   f"kishu could not be attached: {exc}") from None
            facts.notebook = notebook
        await self.sidecar.post("/notebooks", {"path": str(notebook)})
        return notebook

    async def checkpoint(self, kernel_id: str, path: str | None) -> tuple[Path, Checkpoint]:
        """The kernel's notebook and its verified checkpoint. The sidecar is told of the
        notebook first (it verifies the commit on its side); the driver attaches kishu
        itself, so no separate attach round trip is made."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        facts = self.kernels.facts(kernel_id)
        if self.background is not None:  # never wait on one: its child is killed
            await self.background.stop(kernel_id)
        try:
            await self.sidecar.post("/notebooks", {"path": str(notebook)})
        except ApiError as exc:
            if exc.status < 500:
                raise
            # A sidecar restarting (killed mid-move): the checkpoint is made all the same;
            # the sidecar verifies it from the volume, watched or not.
            log.warning("gpushift: %s not registered with the sidecar: %s", notebook,
                        exc.detail)
        await self.storage.check_room(notebook)
        async with self.kernels.kernel(kernel_id) as kernel, \
                self.storage.writing(notebook, create=True):
            try:
                saved = await checkpoint(kernel, notebook,
                                         workspace=self.storage.workspace())
            except KernelStateError as exc:
                full = self.storage.failure(notebook, str(exc))
                if full is not None:
                    raise full from None
                raise ApiError(500, "checkpoint_failed",
                               f"the kernel's state was not saved, nothing moved: {exc}"
                               ) from None
        facts.notebook = notebook
        self.storage.after_checkpoint(notebook, saved.commit_id)
        log.info("checkpoint", extra={"notebook": str(notebook), "commit": saved.commit_id,
                                      "elapsed_ms": round(saved.elapsed_ms)})
        return notebook, saved

    async def migrate(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /migrate` (checked by the handler), answered at once: the sidecar takes
        the move (or refuses it: image, quota, a move in flight) and waits in
        `checkpointing` while this server saves every notebook of the pod
        (`_save_and_name`); the browser follows the phases. The answer names the
        notebooks being saved and what the move stops without saving."""
        kernel_id, path = body.get("kernel_id"), body.get("path")
        notebook: Path | None = None
        if kernel_id is not None:
            notebook = await self.kernels.notebook_path(kernel_id, path)
            self.kernels.facts(kernel_id)  # 404 for a kernel that is not running
        elif path is not None:
            notebook = self.kernels.resolve(path)
        sessions = await self.sessions()
        kernels = [k for k in sessions.saved if k.kernel_id != kernel_id]
        if kernel_id is not None and notebook is not None:
            kernels.insert(0, SavedKernel(kernel_id, notebook))
        cell = body.get("pending_cell")
        request: dict[str, Any] = {
            "target": body["target"], "reason": body["reason"],
            "checkpoint": None, "checkpoints_to_come": bool(kernels),
            "pending_cell": None if cell is None or notebook is None else {
                "notebook_path": str(notebook), "cell_id": cell["cell_id"],
                "code": cell["code"]},
        }
        if body.get("profile") is not None:
            request["profile"] = body["profile"]
        if body.get("keep_image"):  # the user's answer to the sidecar's image_unmapped
            request["keep_image"] = True
        migration = await self.sidecar.post("/migrations", request)
        if kernels:
            migration_id = str(migration["id"])
            task = asyncio.create_task(
                self._save_and_name(migration_id, kernels, asking=kernel_id))
            self._saving[migration_id] = task
            task.add_done_callback(lambda _: self._saving.pop(migration_id, None))
        return {"migration": migration,
                "saving": [self.kernels.relative(k.notebook) for k in kernels],
                "will_stop": sessions.will_stop}

    async def _save_and_name(self, migration_id: str, kernels: list[SavedKernel], *,
                             asking: str | None) -> None:
        """Checkpoint every kernel at once (each verified by kishu), then name the
        checkpoints to the sidecar — or the first failure, which fails the move before
        anything changed. The sidecar's save deadline covers a server that dies here."""
        results = await asyncio.gather(
            *(self.checkpoint(k.kernel_id, self.kernels.relative(k.notebook))
              for k in kernels), return_exceptions=True)
        named: dict[str, Any] = {"migration_id": migration_id}
        failures = [(k, r) for k, r in zip(kernels, results, strict=True)
                    if isinstance(r, BaseException)]
        if failures:
            kernel, error = failures[0]
            detail = error.detail if isinstance(error, ApiError) else repr(error)
            named["error"] = f"{self.kernels.relative(kernel.notebook)}: {detail}"
        else:
            refs = [{"notebook_path": str(nb), "commit_id": c.commit_id}
                    for nb, c in (r for r in results if not isinstance(r, BaseException))]
            first = asking is not None and kernels[0].kernel_id == asking
            named["checkpoint"] = refs[0] if first else None
            named["other_checkpoints"] = refs[1:] if first else refs
        await self._name(named)

    async def end_orphaned_save(self, migration: dict[str, Any] | None) -> bool:
        """A move waiting for checkpoints that no save of this server will name: the
        server that took it was restarted (killed, out of memory) and its kernels — the
        state to save — stopped with it. Fail it now, with the reason, instead of at the
        sidecar's save deadline. True when it did."""
        if (migration is None or migration.get("phase") != "checkpointing"
                or not migration.get("checkpoints_to_come")
                or str(migration["id"]) in self._saving):
            return False
        created = _utc(migration.get("created_at"))
        if created is None or created >= self.started_at:
            return False  # this process's own move, its save about to be registered
        log.warning("gpushift: migration %s waits for checkpoints no one is making: "
                    "the notebook server restarted while saving", migration["id"])
        await self._name({"migration_id": str(migration["id"]), "error": ORPHANED_SAVE})
        return True

    async def _name(self, named: dict[str, Any]) -> None:
        """Tell the sidecar, again while it does not answer (it restarts in a second or
        two when killed; its save deadline bounds the move all the same)."""
        deadline = asyncio.get_running_loop().time() + NAME_RETRY_SECONDS
        while True:
            try:
                await self.sidecar.post("/migrations/current/checkpoints", named)
                return
            except ApiError as exc:
                gone = exc.status >= 500 and asyncio.get_running_loop().time() < deadline
                if not gone:  # refused (the move ended meanwhile), or for too long
                    log.warning("gpushift: the checkpoints of migration %s were not taken "
                                "(%s): %s", named["migration_id"], exc.error, exc.detail)
                    return
            await asyncio.sleep(1.0)


def _utc(value: object) -> dt.datetime | None:
    """The sidecar's ISO 8601 UTC time ("...Z"); None for anything else."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
