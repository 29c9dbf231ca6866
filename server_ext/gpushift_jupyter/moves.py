"""Moves between CPU and GPU pods, as the server extension starts them: save the state of
every notebook kernel of the pod with kishu (each verified) before asking the sidecar to
move; the new pod's side is `move_restore`.

No step runs before the previous one is verified: a checkpoint that fails or cannot be
verified, in any notebook, ends the request with an error naming that notebook, and the
sidecar is never asked to move. What the move stops without saving (consoles, kernels
of other languages, terminals) is listed in the answer, as the confirmation listed it
(`GET /pod`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import (
    Checkpoint,
    KernelStateError,
    attach,
    checkpoint,
)
from gpushift_jupyter.kernels import KernelRegistry
from gpushift_jupyter.pod_sessions import PodSessions, SavedKernel, pod_sessions
from gpushift_jupyter.sidecar_client import SidecarClient

log = logging.getLogger("gpushift.jupyter")


class Mover:
    def __init__(self, kernels: KernelRegistry, sidecar: SidecarClient,
                 terminals: Callable[[], Any] = lambda: None) -> None:
        self.kernels = kernels
        self.sidecar = sidecar
        self.terminals = terminals
        """() -> jupyter_server's terminal manager (None: terminals are off)."""

    async def sessions(self) -> PodSessions:
        """`GET /pod`: the notebooks a move saves and what it stops."""
        return await pod_sessions(self.kernels, self.terminals)

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

    async def checkpoint_pod(self, kernel_id: str | None, path: str | None
                             ) -> tuple[list[tuple[Path, Checkpoint]], PodSessions]:
        """Checkpoint the kernel that asks (when one does) and every other notebook
        kernel of the pod, at once; each is verified by kishu. The one that asks comes
        first. A failure in any of them refuses the move (ApiError naming it)."""
        sessions = await self.sessions()
        kernels = [k for k in sessions.saved if k.kernel_id != kernel_id]
        if kernel_id is not None:
            kernels.insert(0, SavedKernel(kernel_id, Path()))  # its notebook: checkpoint()
        results = await asyncio.gather(
            *(self.checkpoint(k.kernel_id, path if k.kernel_id == kernel_id
                              else self.kernels.relative(k.notebook)) for k in kernels),
            return_exceptions=True)
        for result in results:
            if isinstance(result, ApiError) and len(kernels) > 1:
                raise ApiError(result.status, result.error,
                               f"{result.detail} (with {len(kernels)} notebooks open, "
                               "every one is saved before a move)") from None
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)], sessions

    async def migrate(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /migrate` (checked by the handler): checkpoint every notebook, then the
        sidecar."""
        kernel_id, path = body.get("kernel_id"), body.get("path")
        saved, sessions = await self.checkpoint_pod(kernel_id, path)
        notebook: Path | None = None
        if kernel_id is not None:
            notebook = saved[0][0]
        elif path is not None:
            notebook = self.kernels.resolve(path)
        first = saved[0][1] if saved and kernel_id is not None else None
        others = saved[1:] if kernel_id is not None else saved
        cell = body.get("pending_cell")
        request: dict[str, Any] = {
            "target": body["target"], "reason": body["reason"],
            "checkpoint": None if first is None or notebook is None else {
                "notebook_path": str(notebook), "commit_id": first.commit_id},
            "other_checkpoints": [{"notebook_path": str(nb), "commit_id": c.commit_id}
                                  for nb, c in others],
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
                "checkpoint": None if first is None or notebook is None else {
                    "commit_id": first.commit_id, "path": self.kernels.relative(notebook),
                    "elapsed_ms": first.elapsed_ms},
                "checkpoints": [{"commit_id": c.commit_id, "path": self.kernels.relative(nb),
                                 "elapsed_ms": c.elapsed_ms,
                                 "not_saved": [{"name": n, "reason": r}
                                               for n, r in c.not_saved]}
                                for nb, c in saved],
                "will_stop": sessions.will_stop}
