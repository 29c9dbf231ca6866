"""The guard's loops in the webhook Deployment: elect a leader through the Lease and, while
leading, let `guard.MigrationGuard` look at the Notebooks every interval; a failed pass
is logged and counted, and the next one comes on time.

Both loops (`lease`, `guard`) run under `gpushift_webhook.supervisor`: a crash restarts
the loop with backoff, and a loop without a completed pass within its deadline makes
`/healthz` fail. A Lease pass is a tick that reached the API server; a guard pass is one
look at every Notebook by the leader (a standby completes its pass by standing by: it
has nothing to look at, and its Lease loop says whether it can reach the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpushift_core.kube import KubeError
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.enablement import EnablementMode
from gpushift_webhook.guard import GuardApi, MigrationGuard
from gpushift_webhook.lease import LeaderElector, LeaseSettings
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.supervisor import LoopHealth, LoopSettings, Supervisor

__all__ = ["GuardLoopSettings", "run"]

log = logging.getLogger("gpushift.guard")

# Starts a loop that acts only while this replica holds the Lease, given `is_leader`.
LeaderLoop = Callable[[Callable[[], bool]], asyncio.Task[None]]


@dataclass(frozen=True)
class GuardLoopSettings:
    lease: LeaseSettings
    """The Lease of the leader election (which replica acts)."""
    interval_seconds: float = 5.0
    """Seconds between looks at the Notebooks."""
    ready_timeout_seconds: float | None = None
    """None: the config's guard.ready_timeout_seconds."""
    enablement: EnablementMode = EnablementMode.OPT_IN
    """The chart's enablement.mode: which namespaces the guard acts in."""
    guard_deadline_seconds: float = 300.0
    """The guard loop is stalled (`/healthz` fails) after this long without a completed
    pass: the leader could not look at the Notebooks (API errors), or the loop hangs."""
    lease_deadline_seconds: float = 300.0
    """The Lease loop is stalled after this long without reaching the API server."""


async def run(api: GuardApi, config: WebhookConfig, settings: GuardLoopSettings,
              metrics: WebhookMetrics | None = None,
              supervisor: Supervisor | None = None, *,
              leader_loops: Sequence[LeaderLoop] = ()) -> None:
    """Elect, and while leading look at the Notebooks every interval, until cancelled;
    on the way out release the Lease. Both loops run under `supervisor` (one of their
    own when None). `leader_loops` start other loops that act only while this replica
    leads (the GPU capacity publisher): each gets `is_leader` and returns its task,
    cancelled with the guard's."""
    supervisor = supervisor or Supervisor(metrics)

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
    # One tick before the first guard pass, so that a leader acts at once.
    await elector.tick()
    first_start = True

    async def election(health: LoopHealth) -> None:
        nonlocal first_start
        tick_first = not first_start  # a restart after a crash reads the Lease at once
        if first_start and elector.reached:
            health.passed()
        first_start = False
        await elector.run(tick_first=tick_first, on_pass=health.passed)

    tasks = [
        supervisor.start(LoopSettings("lease", settings.lease_deadline_seconds), election),
        supervisor.start(LoopSettings("guard", settings.guard_deadline_seconds),
                         lambda health: _passes(guard, elector, settings, metrics, health)),
        *(start(lambda: elector.is_leader) for start in leader_loops),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(KubeError, TimeoutError, OSError):
            await asyncio.wait_for(elector.release(), 5)
        leader_changed(False)


async def _passes(guard: MigrationGuard, elector: LeaderElector,
                  settings: GuardLoopSettings, metrics: WebhookMetrics | None,
                  health: LoopHealth) -> None:
    """The guard's loop: one pass every interval while leading."""
    while True:
        if elector.is_leader:
            try:
                await guard.pass_once()
                health.passed()
            except KubeError as exc:
                log.warning("guard pass failed: %s", exc, extra={"status": exc.status})
                if metrics is not None:
                    metrics.guard_errors.inc()
        else:
            health.passed()
        await asyncio.sleep(settings.interval_seconds)
