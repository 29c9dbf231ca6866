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
