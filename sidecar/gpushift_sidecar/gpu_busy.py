"""How long this GPU pod did GPU work, told to the cluster side.

`GpuBusyMeter` (pure) adds up the seconds during which the pod did GPU work: a GPU cell
running in some kernel (by a report that has not expired, as the idle timer sees it) or
a GPU utilisation sample at or above the admin's threshold that is still fresh. A cell
that runs on the CPU of a GPU pod is not GPU work: that time is the GPU held idle, which
is what an admin wants to see beside the GPU-hours held.

`GpuActivityPublisher` writes the meter to the Notebook annotation
`gpushift.io/notebook-gpu-activity` (`gpushift_core.gpu_activity`) as the GPU pod's
sidecar starts (no GPU work yet: a report can tell a GPU held idle since the pod started
from an older sidecar that writes nothing), then every `interval` seconds when it
changed, and once more when the sidecar stops (the pod's end, a move's
included), for the webhook's `gpushift_gpu_busy_seconds_total`. The key contains
"notebook", so Kubeflow's controller does not copy it into the pod template: the write
never recreates the pod. One small patch a minute per GPU notebook at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gpushift_core.gpu_activity import GpuActivity, read_gpu_activity
from gpushift_core.kube import KubeError
from gpushift_core.labels import GPU_ACTIVITY_ANNOTATION, annotations_of
from gpushift_core.patches import PatchBuilder
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.notebook_reporter import NotebookApi, status_text

__all__ = ["GpuActivityPublisher", "GpuBusyMeter", "activity_ops", "gpu_work_now"]

log = logging.getLogger("gpushift.sidecar")
ANNOTATIONS = ("metadata", "annotations")


class GpuBusyMeter:
    """Seconds of GPU work; `observe` whether the pod works at each tick."""

    def __init__(self) -> None:
        self._done = 0.0
        self._working_since: float | None = None
        self._last_work: float | None = None

    def observe(self, working: bool, now: float) -> None:
        """The pod does (`working`) or does not do GPU work at `now`; the time since the
        previous observation counts as it was then."""
        if self._working_since is not None:
            self._done += max(0.0, now - self._working_since)
            self._last_work = now
        self._working_since = now if working else None
        if working:
            self._last_work = now

    def busy(self, now: float) -> float:
        """Seconds of GPU work up to `now`."""
        running = 0.0 if self._working_since is None else max(0.0, now - self._working_since)
        return self._done + running

    def last_work(self, now: float) -> float | None:
        return now if self._working_since is not None else self._last_work


def gpu_work_now(cells_running: int, utilization: Mapping[str, Any] | None,
                 threshold_percent: float, fresh_seconds: float, now: float) -> bool:
    """GPU work now: a GPU cell runs, or the last utilisation sample (`{"percent",
    "at"}`, at most `fresh_seconds` old) is above 0 and at or above the threshold."""
    if cells_running:
        return True
    return (utilization is not None and now - utilization["at"] <= fresh_seconds
            and utilization["percent"] > 0 and utilization["percent"] >= threshold_percent)


def activity_ops(notebook: dict[str, Any], activity: GpuActivity) -> list[dict[str, Any]]:
    """The patch that makes the Notebook's annotation show `activity` ([]: it does, or
    it shows a later report of the same pod: a late write never goes back)."""
    shown = read_gpu_activity(notebook)
    if shown is not None and shown.pod == activity.pod and shown.at > activity.at:
        return []
    pb = PatchBuilder(notebook)
    value = activity.to_annotation()
    if annotations_of(notebook).get(GPU_ACTIVITY_ANNOTATION) != value:
        pb.set_key(ANNOTATIONS, GPU_ACTIVITY_ANNOTATION, value)
    return pb.operations


class GpuActivityPublisher:
    """Writes the meter to the Notebook: `start()`, and `stop()` (with a last write)."""

    def __init__(self, env: SidecarEnv, kube: NotebookApi, meter: GpuBusyMeter,
                 pod_uid: Callable[[], Awaitable[str]], *, interval: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.env = env
        self.kube = kube
        self.meter = meter
        self.pod_uid = pod_uid
        self.interval = interval
        self.clock = clock
        self._uid = ""
        # None: nothing written yet, so the first pass writes even "no GPU work yet".
        self._written: tuple[float, float | None] | None = None
        self._problem: str | None = None
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> GpuActivityPublisher:
        self._loop = asyncio.create_task(self.run())
        return self

    async def stop(self, timeout: float = 3.0) -> None:
        """End the loop and write once more (bounded: the pod is going away)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.publish(), timeout)

    async def run(self) -> None:
        while True:
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive one bad write
                log.exception("writing the GPU activity failed")
            await asyncio.sleep(self.interval)

    async def publish(self) -> None:
        """Write the meter now, unless the annotation already shows it."""
        now = self.clock()
        busy, last = round(self.meter.busy(now), 3), self.meter.last_work(now)
        if self._written == (busy, last):
            return
        if not self._uid:
            self._uid = await self.pod_uid()
            if not self._uid:
                return  # logged by pod_uid; a pod uid is what makes the counts add up
        activity = GpuActivity(self._uid, busy, last, now)
        try:
            await self.kube.patch_notebook(self.env.pod_namespace, self.env.notebook_name,
                                           lambda nb: activity_ops(nb, activity))
        except KubeError as exc:
            problem = status_text(exc)
            if problem != self._problem:
                log.warning("GPU activity not written", extra={"why": problem})
            self._problem = problem
            return
        self._problem = None
        self._written = (busy, last)
