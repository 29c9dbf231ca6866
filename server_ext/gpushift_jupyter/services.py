"""What the handlers share, wired once by the extension app: the runtime files, the
sidecar client, the kernels, the mover, and the GPU activity the idle timer needs."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_jupyter import gpu_probe
from gpushift_jupyter.background import BackgroundCheckpoints
from gpushift_jupyter.checkpoint_files import CheckpointFiles
from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernels import KernelRegistry
from gpushift_jupyter.move_restore import MoveRestorer
from gpushift_jupyter.moves import Mover
from gpushift_jupyter.resume import ResumeOffers
from gpushift_jupyter.runtime_info import RuntimeInfo, read_runtime_info
from gpushift_jupyter.sidecar_client import SidecarClient

log = logging.getLogger("gpushift.jupyter")

# The periodic report's kernel id: the sidecar keeps activity by kernel; the server's
# own utilisation sample is not any kernel's.
SERVER_REPORTER_ID = "gpushift-server-extension"


@dataclass
class Services:
    runtime_dir: Path | None
    sidecar: SidecarClient
    kernels: KernelRegistry
    mover: Mover
    restorer: MoveRestorer
    files: CheckpointFiles
    resume: ResumeOffers
    background: BackgroundCheckpoints

    def runtime(self) -> RuntimeInfo:
        """The sidecar's runtime config (NVML is asked only when it is missing: this
        runs on every request and every second in the idle watch)."""
        return read_runtime_info(self.runtime_dir,
                                 sees_gpu=lambda: gpu_probe.sample() is not None)

    def runtime_document(self) -> dict[str, Any]:
        info = self.runtime()
        document = dict(info.document)
        gpu = document.get("gpu")
        sample = gpu_probe.sample() if isinstance(gpu, dict) else None
        if isinstance(gpu, dict) and sample is not None:
            # The sidecar knows the resource and count from the pod spec; the GPU's
            # model only this container sees.
            document["gpu"] = {**gpu, "name": sample.names[0]}
        return document

    def require_optimizer(self) -> RuntimeInfo:
        info = self.runtime()
        if not info.optimizer_on:
            raise ApiError(503, "optimizer_off", info.off_reason)
        return info

    async def report_activity(self, kernel_id: str, running: bool) -> None:
        facts = self.kernels.gpu_activity(kernel_id, running)
        if not self.runtime().optimizer_on:
            return  # nothing to tell: no sidecar (the browser need not care)
        sample = gpu_probe.sample()
        await self.sidecar.post("/activity", {
            "kernel_id": kernel_id, "gpu_cell_running": facts.gpu_cell_running,
            "gpu_cell_finished_at": facts.gpu_cell_finished_at,
            "gpu_utilization_percent": None if sample is None else sample.utilization_percent})

    async def checkpoint_on_idle_warning_forever(self, interval: float) -> None:
        """On a GPU pod, when the sidecar's idle warning starts, checkpoint every kernel
        kishu is attached to: the idle move (which may happen with no browser open)
        takes the newest verified checkpoint, and checkpoints are made only on demand."""
        warned = False
        while True:
            await asyncio.sleep(interval)
            idle = self.runtime().document.get("idle") or {}
            warning = idle.get("state") == "warning"
            if warning and not warned:
                try:
                    await self.checkpoint_attached("the idle warning started")
                except Exception:  # a bug here must not end the loop (or the server)
                    log.exception("gpushift: checkpoint on the idle warning failed")
            warned = warning

    async def checkpoint_attached(self, why: str) -> None:
        for kernel_id in self.kernels.attached():
            try:
                _, saved = await self.mover.checkpoint(kernel_id, None)
            except ApiError as exc:
                log.warning("gpushift: kernel %s not checkpointed (%s): %s", kernel_id, why,
                            exc.detail)
                continue
            log.info("gpushift: kernel %s checkpointed (%s): commit %s", kernel_id, why,
                     saved.commit_id)

    async def report_activity_forever(self, interval: float, look_every: float = 0.5) -> None:
        """On a GPU pod, what the sidecar's idle timer cannot see by itself: the kernels
        busy now and those running a GPU cell (`KernelRegistry.activity_view`: the idle
        move never starts while a cell runs, and a closed tab's GPU cell does not hold
        the GPU), and the container's GPU utilisation (the sidecar has no GPU devices).
        Sent every `interval` seconds, and at once (within `look_every`) when the busy
        or GPU kernels change: a cell that starts just before the timeout must hold the
        move, not be seen a whole interval later. Sent also when NVML cannot measure
        (null): the report tells the sidecar that this extension is there, and its idle
        timer runs only once the notebook side has reported."""
        step = min(interval, look_every)
        sent: tuple[list[str], list[str]] | None = None
        sent_at = time.monotonic()
        while True:
            await asyncio.sleep(step)
            try:
                info = self.runtime()
                if not (info.optimizer_on and info.using_gpu):
                    continue
                view = self.kernels.activity_view(time.time())
                if view == sent and time.monotonic() - sent_at < interval:
                    continue
                busy, gpu = view
                sample = gpu_probe.sample()
                await self.sidecar.post("/activity", {
                    "kernel_id": SERVER_REPORTER_ID, "gpu_cell_running": False,
                    "busy_kernels": busy, "gpu_cells_running": gpu,
                    "gpu_utilization_percent":
                        None if sample is None else sample.utilization_percent})
                sent, sent_at = view, time.monotonic()
            except ApiError as exc:
                log.warning("gpushift: kernel activity not reported: %s", exc.detail)
