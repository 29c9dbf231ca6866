"""Resume where you left off: a notebook opened with a fresh kernel — after a Kubeflow
Stop and Start, a pod replaced outside gpushift, a server crash — or whose kernel died
and restarted (an out-of-memory kill), while its newest checkpoint is on the volume.

The browser asks (`GET /api_extension/resume`) when a notebook's kernel is new or
restarted, and offers the user "Resume where you left off — N variables from HH:MM";
on accept it asks for the restore (`POST`). What decides is here and pure
(`resume_verdict`); the facts come from the kernel itself (`kernel_history`: how many
cells this process ran, whether gpushift restored into it — a restarted kernel is a new
process), the notebook's database (read-only) and the sidecar's record of the pod's
move. Never offered, and refused on accept (409), for a kernel that has run a cell:
a restore never overwrites what the user made since. Never offered while a move is in
flight or its own restore is to come (`move_restore` brings that state back), nor
without a sidecar when the recovery of `POST /restore` applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import (
    KernelHistory,
    KernelStateError,
    kernel_history,
    restore,
)
from gpushift_jupyter.kernel_state.database import CommitFacts, read_commit
from gpushift_jupyter.kernels import KernelInUse, KernelRegistry
from gpushift_jupyter.move_restore import MoveRestorer, checkpoints_of, recoverable
from gpushift_jupyter.storage import StorageKeeper

log = logging.getLogger("gpushift.jupyter")

_ENDED = frozenset({"done", "rolled_back", "failed", "cancelled"})
ASK_WAIT_S = 10.0
"""How long a question waits for another kishu operation on the kernel (an attach, a
background checkpoint's look at a kernel that is still starting)."""
READY_WAIT_S = 30.0
"""How long a question waits for a kernel that is still starting."""


@dataclass(frozen=True)
class Verdict:
    offer: bool
    why: str = ""
    """Why not ("" when offered)."""


def resume_verdict(history: KernelHistory, migration: Mapping[str, Any] | None,
                   notebook: Path, recovered: bool) -> Verdict:
    """Whether a fresh kernel may be offered its notebook's newest checkpoint (pure)."""
    if history.cells_run > 0:
        return Verdict(False, "the kernel has run cells: a restore would overwrite them")
    if history.restored_commit is not None:
        return Verdict(False, "a checkpoint was restored into this kernel already")
    if migration is not None:
        phase = migration.get("phase")
        names = {str(c.get("notebook_path")) for c in checkpoints_of(dict(migration))}
        if phase not in _ENDED:
            return Verdict(False, f"a move is under way ({phase}): it restores the state")
        if recoverable(dict(migration)) and not recovered and str(notebook) in names:
            return Verdict(False, "the move's own recovery restores this notebook")
    return Verdict(True)


class ResumeOffers:
    def __init__(self, kernels: KernelRegistry, storage: StorageKeeper,
                 restorer: MoveRestorer, sidecar_present: Callable[[], bool]) -> None:
        self.kernels = kernels
        self.storage = storage
        self.restorer = restorer
        self.sidecar_present = sidecar_present
        """() -> bool: the pod has gpushift's sidecar (its optimizer is on)."""

    async def offer(self, kernel_id: str, path: str | None) -> dict[str, Any]:
        """`GET /resume`: the offer for the kernel's notebook, or why there is none."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        answer: dict[str, Any] = {"offer": False, "path": self.kernels.relative(notebook),
                                  "commit_id": None, "saved_at": None, "variables": [],
                                  "not_saved": []}
        facts = await self._latest(notebook)
        if facts is None:
            return {**answer, "why": "this notebook has no checkpoint"}
        verdict = await self._verdict(kernel_id, notebook)
        return {**answer, "offer": verdict.offer, "why": verdict.why,
                "commit_id": facts.commit_id, "saved_at": facts.made_at,
                "variables": list(facts.saved),
                "not_saved": [{"name": n, "reason": r} for n, r in facts.not_saved]}

    async def resume(self, kernel_id: str, path: str | None,
                     commit_id: str) -> dict[str, Any]:
        """`POST /resume`: restore `commit_id` (the one offered) into the kernel, after
        checking again that it is still fresh."""
        notebook = await self.kernels.notebook_path(kernel_id, path)
        verdict = await self._verdict(kernel_id, notebook)
        if not verdict.offer:
            code = ("kernel_ran_cells" if "run cells" in verdict.why or "restored" in
                    verdict.why else "move_in_progress")
            raise ApiError(409, code, f"nothing was restored: {verdict.why}")
        try:
            async with self.kernels.kernel(kernel_id, wait=ASK_WAIT_S) as kernel, \
                    self.storage.writing(notebook):
                # The user may have run a cell since the check: look again, with the
                # kernel held (no other kishu operation), right before the restore.
                if (await kernel_history(kernel)).cells_run > 0:
                    raise ApiError(409, "kernel_ran_cells", "nothing was restored: a cell "
                                   "ran in this kernel meanwhile")
                outcome = await restore(kernel, notebook, commit_id,
                                        workspace=self.storage.workspace())
        except KernelInUse as exc:
            raise ApiError(409, "kernel_busy", str(exc)) from None
        except KernelStateError as exc:
            if "no kishu database" in str(exc) or "is not in" in str(exc):
                raise ApiError(404, "no_checkpoint", str(exc)) from None
            raise ApiError(500, "resume_failed", f"the state was not restored (the "
                           f"checkpoint is kept on the volume): {exc}") from None
        self.kernels.facts(kernel_id).notebook = notebook  # restore attached kishu
        log.info("resumed", extra={"notebook": str(notebook), "commit": commit_id,
                                   "ok": outcome.ok})
        return {"ok": outcome.ok, "restored": list(outcome.restored),
                "not_restored": [{"name": n, "reason": r} for n, r in outcome.not_restored],
                "detail": outcome.detail, "commit_id": commit_id}

    async def _latest(self, notebook: Path) -> CommitFacts | None:
        try:
            return read_commit(self.storage.database(notebook), None)
        except KernelStateError:
            return None

    async def _verdict(self, kernel_id: str, notebook: Path) -> Verdict:
        try:
            async with self.kernels.kernel(kernel_id, wait=ASK_WAIT_S) as kernel:
                # A kernel just (re)started may not listen yet: a request sent before
                # it does is lost, so wait until it answers kernel_info.
                await kernel.client.wait_for_ready(timeout=READY_WAIT_S)
                history = await kernel_history(kernel)
        except (RuntimeError, TimeoutError) as exc:  # wait_for_ready's
            return Verdict(False, f"the kernel is not ready: {exc}")
        except KernelInUse:
            return Verdict(False, "gpushift is working in this kernel (a checkpoint or a "
                                  "restore); ask again when it is done")
        except KernelStateError as exc:
            return Verdict(False, f"the kernel did not answer: {exc}")
        migration: Mapping[str, Any] | None = None
        recovered = False
        if self.sidecar_present():
            try:
                migration = await self.restorer.current()
            except ApiError as exc:
                return Verdict(False, f"the sidecar cannot say whether a move is under "
                                      f"way: {exc.detail}")
            recovered = migration is not None and migration.get("id") in self.restorer.recovered
        elif str(notebook) in self.restorer.recovered:
            # No sidecar: POST /restore brought the newest checkpoint back already.
            return Verdict(False, "its newest checkpoint was restored on this pod already")
        return resume_verdict(history, migration, notebook, recovered)
