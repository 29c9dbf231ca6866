"""Moves between CPU and GPU pods, as the server extension drives them: save the
kernel's state with kishu (verified) before asking the sidecar to move, and restore it
into the new pod's kernel once the sidecar says the migration is restoring.

No step runs before the previous one is verified: a checkpoint that fails or cannot be
verified ends the request with an error and the sidecar is never asked to move. A
restore that fails reports `ok: false` to the sidecar (the migration ends failed, the
checkpoint stays on the volume) and answers the browser with what went wrong.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import (
    Checkpoint,
    KernelStateError,
    attach,
    checkpoint,
    restore,
)
from gpushift_jupyter.kernels import KernelRegistry
from gpushift_jupyter.server_restore import ServerRestore
from gpushift_jupyter.sidecar_client import SidecarClient

log = logging.getLogger("gpushift.jupyter")


# A move that ended without reaching `done` after the old pod was replaced: the new pod's
# kernel is empty, and the checkpoint on the volume is all that is left of its state.
_REPLACED = frozenset({"recreating", "restoring"})
_ENDED_BADLY = frozenset({"rolled_back", "failed"})


def recoverable(migration: dict[str, Any] | None) -> bool:
    """A migration that ended rolled back or failed after its pod was replaced, with a
    checkpoint: this pod's fresh kernel can get the state back from it."""
    if migration is None or migration.get("phase") not in _ENDED_BADLY:
        return False
    phases = {h.get("phase") for h in migration.get("history") or []}
    return bool(migration.get("checkpoint")) and bool(phases & _REPLACED)


class Mover:
    def __init__(self, kernels: KernelRegistry, sidecar: SidecarClient) -> None:
        self.kernels = kernels
        self.sidecar = sidecar
        self.recovered: set[str] = set()
        """Ids of ended migrations whose state this server (this pod) restored already."""
        self.server_restores: dict[str, ServerRestore] = {}
        """Moves this server restored on its own (`server_restore`), by migration id."""
        self._restoring: set[str] = set()
        """Migrations (or notebooks, without a sidecar) whose restore runs now: one at a
        time, so two tabs never restore the same state twice into the kernel."""

    async def attach(self, kernel_id: str, path: str | None) -> Path:
        """Attach kishu to the kernel (idempotent) and have the sidecar watch the
        notebook's checkpoints."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        facts = self.kernels.facts(kernel_id)
        if facts.notebook != notebook:
            async with self.kernels.kernel(kernel_id) as kernel:
                try:
                    await attach(kernel, notebook)
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
        await self.sidecar.post("/notebooks", {"path": str(notebook)})
        async with self.kernels.kernel(kernel_id) as kernel:
            try:
                saved = await checkpoint(kernel, notebook)
            except KernelStateError as exc:
                raise ApiError(500, "checkpoint_failed",
                               f"the kernel's state was not saved, nothing moved: {exc}"
                               ) from None
        facts.notebook = notebook
        log.info("checkpoint", extra={"notebook": str(notebook), "commit": saved.commit_id,
                                      "elapsed_ms": round(saved.elapsed_ms)})
        return notebook, saved

    async def migrate(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /migrate` (checked by the handler): checkpoint, then the sidecar."""
        kernel_id, path = body.get("kernel_id"), body.get("path")
        saved: Checkpoint | None = None
        notebook: Path | None = None
        if kernel_id is not None:
            notebook, saved = await self.checkpoint(kernel_id, path)
        elif path is not None:
            notebook = self.kernels.resolve(path)
        cell = body.get("pending_cell")
        request: dict[str, Any] = {
            "target": body["target"], "reason": body["reason"],
            "checkpoint": None if saved is None or notebook is None else {
                "notebook_path": str(notebook), "commit_id": saved.commit_id},
            "pending_cell": None if cell is None or notebook is None else {
                "notebook_path": str(notebook), "cell_id": cell["cell_id"],
                "code": cell["code"]},
        }
        if body.get("profile") is not None:
            request["profile"] = body["profile"]
        if body.get("keep_image"):  # the user's answer to the sidecar's image_unmapped
            request["keep_image"] = True
        migration = await self.sidecar.post("/migrations", request)
        return {"migration": migration,
                "checkpoint": None if saved is None or notebook is None else {
                    "commit_id": saved.commit_id, "path": self.kernels.relative(notebook),
                    "elapsed_ms": saved.elapsed_ms}}

    async def current(self) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = await self.sidecar.get("/migrations/current")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return answer

    async def current_for_browser(self) -> dict[str, Any] | None:
        """`GET /migration`: the sidecar's record, with the notebook of its checkpoint
        and pending cell also as `path` relative to the server root (as the browser
        names notebooks), and `recoverable` (see `recoverable`)."""
        migration = await self.current()
        if migration is None:
            return None
        shown = dict(migration)
        for key in ("checkpoint", "pending_cell"):
            part = migration.get(key)
            if isinstance(part, dict) and isinstance(part.get("notebook_path"), str):
                shown[key] = {**part,
                              "path": self.kernels.relative(Path(part["notebook_path"]))}
        done = self.server_restores.get(str(migration["id"]))
        shown["recoverable"] = (recoverable(migration) and migration["id"] not in self.recovered
                                and done is None)
        shown["restored_on_server"] = done is not None and not done.seen
        return shown

    async def restore(self, kernel_id: str, path: str | None) -> dict[str, Any]:
        """`POST /restore`: the state of the migration in `restoring`, into this kernel
        — or, once per pod, the checkpoint of a move that was rolled back or failed
        after the old pod was replaced (the sidecar's migration has ended then; the
        pending cell is not run: it asked for a GPU this pod does not have)."""
        migration = await self.current()
        if migration is not None:
            done = self.server_restores.get(str(migration.get("id")))
            if done is not None:
                return await self._collect(done, kernel_id, path, migration)
            with self._claim(str(migration.get("id")), migration):
                return await self._restore_claimed(kernel_id, path, migration)
        return await self._restore_claimed(kernel_id, path, None)

    @contextlib.contextmanager
    def _claim(self, key: str, migration: dict[str, Any] | None) -> Iterator[None]:
        """Run one restore of `key` at a time on this server (the event loop makes the
        check-and-add atomic); another tab's request meanwhile gets 409."""
        if key in self._restoring:
            raise ApiError(409, "already_restoring",
                           "the state is being restored now (from another tab?); its "
                           "kernel will have the variables when it is done",
                           migration=migration)
        self._restoring.add(key)
        try:
            yield
        finally:
            self._restoring.discard(key)

    async def _restore_claimed(self, kernel_id: str, path: str | None,
                               migration: dict[str, Any] | None) -> dict[str, Any]:
        if recoverable(migration) and migration is not None:
            return await self._recover(kernel_id, path, migration)
        if migration is None or migration.get("phase") != "restoring":
            phase = None if migration is None else migration.get("phase")
            raise ApiError(409, "nothing_to_restore",
                           "no migration is waiting for its state to be restored"
                           + ("" if phase is None else f" (the current one is {phase})"),
                           migration=migration)
        notebook = await self.kernels.notebook_path(kernel_id, path)
        saved = migration.get("checkpoint")
        started = time.monotonic()
        if saved is None:
            return await self.report_nothing_to_restore(migration)
        self._require_own_checkpoint(migration, notebook)
        report = await self._restore_into(kernel_id, notebook, saved["commit_id"])
        log.info("restore", extra={"notebook": str(notebook), "ok": report["ok"],
                                   "elapsed_s": round(time.monotonic() - started, 3)})
        return await self._report(migration, report, started)

    async def report_nothing_to_restore(self, migration: dict[str, Any]) -> dict[str, Any]:
        """A move made without a checkpoint: nothing goes into a kernel; the sidecar is
        told, so the move ends."""
        return await self._report(migration, {
            "ok": True, "restored": [], "not_restored": [],
            "detail": "the move was made without a checkpoint"}, time.monotonic())

    async def _report(self, migration: dict[str, Any], report: dict[str, Any],
                      started: float) -> dict[str, Any]:
        """Tell the sidecar how the restore went; `POST /restore`'s answer."""
        ended = await self.sidecar.post("/migrations/current/restore", report)
        saved, cell = migration.get("checkpoint"), migration.get("pending_cell")
        return {**report, "commit_id": None if saved is None else saved["commit_id"],
                "elapsed_ms": (time.monotonic() - started) * 1000,
                "pending_cell": None if cell is None or not report["ok"] else {
                    "cell_id": cell["cell_id"], "code": cell["code"],
                    "path": self.kernels.relative(Path(cell["notebook_path"]))},
                "migration": ended}

    async def _collect(self, done: ServerRestore, kernel_id: str, path: str | None,
                       migration: dict[str, Any]) -> dict[str, Any]:
        """A browser asks for a move this server restored on its own: what the restore
        did, into which kernel, and when; the held cell to the first browser only."""
        if done.notebook is not None:
            notebook = await self.kernels.notebook_path(kernel_id, path)
            if notebook != done.notebook:
                raise ApiError(409, "other_notebook",
                               f"the move's state was restored into "
                               f"{self.kernels.relative(done.notebook)}; open that notebook",
                               migration=migration)
        cell, done.pending_cell = done.pending_cell, None
        done.seen = True
        return {**done.answer, "pending_cell": cell, "migration": migration,
                "restored_on_server": True, "kernel_id": done.kernel_id,
                "restored_at": done.at}

    async def _recover(self, kernel_id: str, path: str | None,
                       migration: dict[str, Any]) -> dict[str, Any]:
        if migration["id"] in self.recovered:
            raise ApiError(409, "already_restored",
                           f"the state of migration {migration['id']} was restored on this "
                           "pod already", migration=migration)
        notebook = await self.kernels.notebook_path(kernel_id, path)
        saved = migration["checkpoint"]
        self._require_own_checkpoint(migration, notebook)
        started = time.monotonic()
        report = await self._restore_into(kernel_id, notebook, saved["commit_id"])
        if report["ok"]:
            self.recovered.add(migration["id"])
        log.info("recovered after %s", migration["phase"], extra={
            "notebook": str(notebook), "ok": report["ok"], "migration": migration["id"]})
        return {**report, "commit_id": saved["commit_id"],
                "elapsed_ms": (time.monotonic() - started) * 1000, "pending_cell": None,
                "migration": migration, "recovered": True}

    def _require_own_checkpoint(self, migration: dict[str, Any], notebook: Path) -> None:
        """409 unless the migration's checkpoint is `notebook`'s (another notebook's
        state must not land in this kernel)."""
        owner = Path(migration["checkpoint"]["notebook_path"])
        if owner != notebook:
            raise ApiError(409, "other_notebook",
                           f"the checkpoint belongs to {self.kernels.relative(owner)}; open "
                           "that notebook to restore it", migration=migration)

    async def restore_latest(self, kernel_id: str, path: str | None) -> dict[str, Any]:
        """Without a sidecar (the pod was not injected: say the webhook was down when
        it was created), the newest checkpoint of the notebook on the volume, once per
        notebook and pod — what is left to recover a move that was cut short."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        if str(notebook) in self.recovered:
            raise ApiError(409, "already_restored",
                           f"the newest checkpoint of {self.kernels.relative(notebook)} was "
                           "restored on this pod already")
        started = time.monotonic()
        with self._claim(str(notebook), None):
            report = await self._restore_into(kernel_id, notebook, None)
        if report["ok"]:
            self.recovered.add(str(notebook))
        return {**report, "commit_id": None,
                "elapsed_ms": (time.monotonic() - started) * 1000, "pending_cell": None,
                "migration": None, "recovered": True}

    async def _restore_into(self, kernel_id: str, notebook: Path,
                            commit_id: str | None) -> dict[str, Any]:
        facts = self.kernels.facts(kernel_id)
        try:
            async with self.kernels.kernel(kernel_id) as kernel:
                outcome = await restore(kernel, notebook, commit_id)
            facts.notebook = notebook  # restore attaches kishu to the notebook
        except KernelStateError as exc:
            return {"ok": False, "restored": [], "not_restored": [],
                    "detail": f"the state was not restored (the checkpoint is kept on "
                              f"the volume): {exc}"}
        return {"ok": outcome.ok, "restored": list(outcome.restored),
                "not_restored": [{"name": n, "reason": r} for n, r in outcome.not_restored],
                "detail": outcome.detail}
