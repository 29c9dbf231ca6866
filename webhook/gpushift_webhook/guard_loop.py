"""The guard's loop in the webhook Deployment: elect a leader through the Lease and, while
leading, let `guard.MigrationGuard` look at the Notebooks every interval; a failed pass
is logged and counted, and the next one comes on time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from gpushift_core.kube import KubeError
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.enablement import EnablementMode
from gpushift_webhook.guard import GuardApi, MigrationGuard
from gpushift_webhook.lease import LeaderElector, LeaseSettings
from gpushift_webhook.metrics import WebhookMetrics

__all__ = ["GuardLoopSettings", "run"]

log = logging.getLogger("gpushift.guard")


@dataclass(frozen=True)
class GuardLoopSettings:
    lease: LeaseSettings
    interval_seconds: float = 5.0
    """Seconds between looks at the Notebooks."""
    ready_timeout_seconds: float | None = None
    """None: the config's guard.ready_timeout_seconds."""
    enablement: EnablementMode = EnablementMode.OPT_IN
    """The chart's enablement.mode: which namespaces the guard acts in."""


async def run(api: GuardApi, config: WebhookConfig, settings: GuardLoopSettings,
              metrics: WebhookMetrics | None = None) -> None:
    """Elect, and while leading look at the Notebooks every interval, until cancelled;
    on the way out release the Lease."""

    def leader_changed(leading: bool) -> None:
        if metrics is not None:
            metrics.guard_leader.set(1 if leading else 0)

    elector = LeaderElector(api, settings.lease, on_change=leader_changed)
    guard = MigrationGuard(api, config, metrics=metrics,
                           is_leader=lambda: elector.is_leader,
                           timeout_seconds=settings.ready_timeout_seconds,
                           enablement=settings.enablement)
    log.info("migration guard started", extra={
        "lease": settings.lease.name, "namespace": settings.lease.namespace,
        "identity": settings.lease.identity, "ready_timeout_seconds": guard.timeout,
        "enablement": settings.enablement.value,
        "interval_seconds": settings.interval_seconds})
    await elector.tick()
    election = asyncio.create_task(elector.run(tick_first=False))
    try:
        while True:
            if elector.is_leader:
                try:
                    await guard.pass_once()
                except KubeError as exc:
                    log.warning("guard pass failed: %s", exc, extra={"status": exc.status})
                    if metrics is not None:
                        metrics.guard_errors.inc()
            await asyncio.sleep(settings.interval_seconds)
    finally:
        election.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await election
        with contextlib.suppress(KubeError, TimeoutError, OSError):
            await asyncio.wait_for(elector.release(), 5)
        leader_changed(False)
