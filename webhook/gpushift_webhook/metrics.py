"""Prometheus metrics of the webhook, in a registry of its own per server instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reviews = Counter(
            "gpushift_webhook_reviews", "AdmissionReviews answered, by outcome.",
            ["outcome"], registry=self.registry,
        )
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
