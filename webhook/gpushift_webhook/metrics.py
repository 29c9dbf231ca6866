"""Prometheus metrics of the webhook, in a registry of its own per server instance.

The registry is not the global one (tests run several servers in one process), so the
default collectors that the global registry has are added to it here: process (CPU,
memory, open files, start time), Python GC and platform, as every Prometheus client
serves them. `gpushift_build_info{version}` says which gpushift answers.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from gpushift_core.version import __version__


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The collectors are stateless readers (of /proc, gc, platform): one instance may
        # serve several registries.
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            self.registry.register(collector)
        self.build_info = Gauge(
            "gpushift_build_info",
            "Always 1; the labels say which gpushift (version) on which Python runs.",
            ["version", "python_version"], registry=self.registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # The supervised background loops (gpushift_webhook.supervisor).
        self.loop_restarts = Counter(
            "gpushift_loop_restarts",
            "Background loops that crashed and were started again, by loop (guard, "
            "lease, certificates, server_types).",
            ["loop"], registry=self.registry,
        )
        self.loop_last_pass = Gauge(
            "gpushift_loop_last_pass_timestamp_seconds",
            "Unix time of the last completed pass of each background loop.",
            ["loop"], registry=self.registry,
        )
        self.loop_deadline = Gauge(
            "gpushift_loop_deadline_seconds",
            "Longest time a loop may go without a completed pass before /healthz fails.",
            ["loop"], registry=self.registry,
        )
        self.reviews = Counter(
            "gpushift_webhook_reviews", "AdmissionReviews answered, by outcome.",
            ["outcome"], registry=self.registry,
        )
        self._reviews_by_outcome: dict[str, Counter] = {}
        self.latency = Histogram(
            "gpushift_webhook_review_duration_seconds",
            "Time to answer one AdmissionReview, from body read to response built.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "gpushift_webhook_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate in use expires.",
            registry=self.registry,
        )
        self.cert_reloads = Counter(
            "gpushift_webhook_certificate_reloads",
            "Serving certificates loaded (the first one included).", registry=self.registry,
        )
        # The migration guard (gpushift_webhook.guard).
        self.guard_leader = Gauge(
            "gpushift_webhook_guard_leader",
            "1 while this replica holds the migration guard's Lease and acts, else 0.",
            registry=self.registry,
        )
        self.guard_rollbacks = Counter(
            "gpushift_webhook_guard_rollbacks",
            "Migrations to GPU rolled back because the new pod did not become Ready, "
            "by class of reason (insufficient_resources, volume_node_affinity, "
            "untolerated_taint, node_selector, unschedulable, image_pull, "
            "container_waiting, pod_missing, not_ready).",
            ["reason"], registry=self.registry,
        )
        self.guard_failures = Counter(
            "gpushift_webhook_guard_failed_migrations",
            "Migrations marked failed by the guard (a move to CPU whose pod did not become "
            "Ready, or a rollback that could not be planned), by class of reason.",
            ["reason"], registry=self.registry,
        )
        self.guard_pods_deleted = Counter(
            "gpushift_webhook_guard_stuck_pods_deleted",
            "Pods deleted by the guard because they were stuck on a rolled-back profile.",
            registry=self.registry,
        )
        self.guard_in_flight = Gauge(
            "gpushift_webhook_guard_migrations_in_flight",
            "Migrations whose new pod is not Ready yet (phase patching or recreating), as "
            "the leader's last pass found them.",
            registry=self.registry,
        )
        self.guard_errors = Counter(
            "gpushift_webhook_guard_errors",
            "Kubernetes API calls of the guard that failed (retried at the next pass).",
            registry=self.registry,
        )
        # The GPU capacity publisher (gpushift_webhook.capacity_publisher).
        self.capacity_writes = Counter(
            "gpushift_webhook_capacity_writes",
            "Writes of the GPU capacity ConfigMap (content changed, or its time refreshed).",
            registry=self.registry,
        )
        self.capacity_errors = Counter(
            "gpushift_webhook_capacity_errors",
            "Passes of the GPU capacity publisher that failed on an API call (retried at "
            "the next pass).",
            registry=self.registry,
        )
        self.capacity_free = Gauge(
            "gpushift_webhook_capacity_free_gpus",
            "GPUs free per profile on the nodes that could take it, as last published.",
            ["profile"],
            registry=self.registry,
        )

    def reviewed(self, outcome: str, seconds: float) -> None:
        """One review answered: counted by its outcome, and its time observed. Each
        outcome's labelled counter is looked up once: `labels()` costs twice `inc()`,
        on every review."""
        counter = self._reviews_by_outcome.get(outcome)
        if counter is None:
            counter = self._reviews_by_outcome[outcome] = self.reviews.labels(outcome)
        counter.inc()
        self.latency.observe(seconds)
