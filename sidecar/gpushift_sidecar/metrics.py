"""Prometheus metrics of one sidecar, in a registry of its own (served on GET /metrics)."""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpushift_sidecar.idle_reporting import reclaimed_gpu_seconds
from gpushift_sidecar.state import ENDED, Migration, Phase, Reason, Target

IDLE_STATES = ("active", "warning", "moving", "inert", "pinned")
"""The states `GET /idle` shows (see `gpushift_sidecar.idle_loop`)."""


class SidecarMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.migrations_requested = Counter(
            "gpushift_sidecar_migrations_requested",
            "Migrations accepted by POST /migrations, by target and reason.",
            ["target", "reason"], registry=self.registry,
        )
        self.migrations = Counter(
            "gpushift_sidecar_migrations",
            "Migrations that ended, by target, reason and outcome "
            "(done, rolled_back, failed).",
            ["target", "reason", "outcome"], registry=self.registry,
        )
        self.phase_duration = Histogram(
            "gpushift_sidecar_migration_phase_duration_seconds",
            "Time a migration spent in a phase, observed when it left the phase.",
            ["phase"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.phase = Gauge(
            "gpushift_sidecar_migration_phase",
            "1 for the phase of this notebook's current migration, 0 for the others "
            "(all 0 without a migration).",
            ["phase"], registry=self.registry,
        )
        self.runtime_config_writes = Counter(
            "gpushift_sidecar_runtime_config_writes",
            "Attempts to write the runtime files, by outcome (ok, error).",
            ["outcome"], registry=self.registry,
        )
        self.api_requests = Counter(
            "gpushift_sidecar_api_requests",
            "API requests answered, by route and HTTP status.",
            ["route", "status"], registry=self.registry,
        )
        self.idle_state = Gauge(
            "gpushift_sidecar_idle_state",
            "1 for the idle timer's current state (active, warning, moving, inert, "
            "pinned), 0 for the others.",
            ["state"], registry=self.registry,
        )
        self.gpu_idle_seconds_reclaimed = Counter(
            "gpushift_sidecar_gpu_idle_seconds_reclaimed",
            "Estimate of GPU idle time reclaimed by idle moves to CPU, in GPU-seconds: "
            "each idle move that brought the notebook to a CPU pod adds its idle timeout "
            "times the GPUs it released (counted by the new pod's sidecar).",
            registry=self.registry,
        )
        self.show_phase(None)
        self.show_idle_state("inert")

    def show_idle_state(self, state: str) -> None:
        for name in IDLE_STATES:
            self.idle_state.labels(name).set(1 if name == state else 0)

    def record_write(self, ok: bool) -> None:
        self.runtime_config_writes.labels("ok" if ok else "error").inc()

    def show_phase(self, migration: Migration | None) -> None:
        for phase in Phase:
            self.phase.labels(phase.value).set(
                1 if migration is not None and migration.phase is phase else 0)

    def record_change(self, previous: Migration | None, migration: Migration) -> None:
        """Called after each persisted change of the current migration."""
        self.show_phase(migration)
        if previous is None or previous.id != migration.id:
            self.migrations_requested.labels(migration.target.value,
                                             migration.reason.value).inc()
            return
        if previous.phase is migration.phase:
            return
        if (migration.phase is Phase.RESTORING and migration.reason is Reason.IDLE
                and migration.target is Target.CPU):
            # The notebook runs on a CPU pod now: the GPU is back in the pool.
            self.gpu_idle_seconds_reclaimed.inc(reclaimed_gpu_seconds(migration))
        seconds = (_parse(migration.updated_at) - _parse(previous.history[-1].at))
        self.phase_duration.labels(previous.phase.value).observe(
            max(seconds.total_seconds(), 0.0))
        if migration.phase in ENDED:
            self.migrations.labels(migration.target.value, migration.reason.value,
                                   migration.phase.value).inc()


def _parse(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
