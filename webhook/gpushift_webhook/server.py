"""The HTTP adapter: aiohttp routes around the pure `review()`.

Errors are JSON `{"error", "detail"}`: a malformed review gets 400; a route or method
that does not exist gets aiohttp's 404/405, as JSON; nothing answers with a traceback.

`/healthz` (the liveness probe) fails while a supervised background loop (guard, Lease,
certificates, server types; `gpushift_webhook.supervisor`) has not completed a pass
within its deadline: restarting the replica is the remedy for a wedged loop. `/readyz`
(the readiness probe) says only whether this replica can answer reviews -- a valid
serving certificate is loaded --, since a stalled guard does not make its admission
answers wrong, and taking every replica out of the Service would make the API server
admit pods without gpushift (fail-open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpushift_certs.reloading import CertificateInfo, ReloadingCertificate
from gpushift_core import jsonlog
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.injection import Outcome
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.review import BadRequest, review
from gpushift_webhook.server_types import ServerTypeCache
from gpushift_webhook.supervisor import Supervisor

log = logging.getLogger("gpushift.webhook")

# A Pod is at most ~1.5 MiB (etcd's object limit); a CREATE review carries it once.
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024

CONFIG = web.AppKey("config", WebhookConfig)
METRICS = web.AppKey("metrics", WebhookMetrics)
CERT = web.AppKey("cert", ReloadingCertificate)
MAX_BODY = web.AppKey("max_body_bytes", int)
SERVER_TYPES = web.AppKey("server_types", ServerTypeCache)
LOOPS = web.AppKey("loops", Supervisor)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "see the webhook's log")


def make_app(config: WebhookConfig, cert: ReloadingCertificate,
             metrics: WebhookMetrics | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, *,
             server_types: ServerTypeCache | None = None,
             loops: Supervisor | None = None) -> web.Application:
    """`server_types`: the Notebooks' server types, kept by the caller (empty: every
    lookup misses, and every notebook pod is injected; the sidecar decides). `loops`:
    the supervisor of the background loops that `/healthz` reports on (none: healthy)."""
    app = web.Application(middlewares=[json_errors], client_max_size=max_body_bytes)
    app[MAX_BODY] = max_body_bytes
    app[SERVER_TYPES] = server_types if server_types is not None else ServerTypeCache()
    app[CONFIG] = config
    app[METRICS] = metrics or WebhookMetrics()
    app[CERT] = cert
    app[LOOPS] = loops if loops is not None else Supervisor()
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    if cert.info is not None:
        record_certificate(app[METRICS], cert.info)
    return app


def record_certificate(metrics: WebhookMetrics, info: CertificateInfo) -> None:
    metrics.cert_expiry.set(info.not_after.timestamp())
    metrics.cert_reloads.inc()


async def mutate(request: web.Request) -> web.Response:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _bad(metrics, "request_too_large",
                    f"the body is larger than {request.app[MAX_BODY]} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _bad(metrics, "invalid_json", f"the body is not JSON: {exc}")
    try:
        answer, decision = review(body, request.app[CONFIG], request.app[SERVER_TYPES])
    except BadRequest as exc:
        return _bad(metrics, exc.error, exc.detail)
    elapsed = time.perf_counter() - started
    metrics.reviewed(decision.outcome.value, elapsed)
    # Every field from what review() validated: the raw body may hold anything.
    jsonlog.info_batched(log, "admission", {
        "uid": answer["response"]["uid"],
        "namespace": decision.namespace,
        "pod": decision.pod,
        "notebook": decision.notebook,
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "warnings": len(decision.warnings),
        "duration_ms": round(elapsed * 1000, 3),
    })
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _bad(metrics: WebhookMetrics, error: str, detail: str) -> web.Response:
    metrics.reviews.labels(Outcome.BAD_REQUEST.value).inc()
    log.warning("bad admission request", extra={"error": error, "detail": detail[:300]})
    return error_response(400, error, detail)


async def healthz(request: web.Request) -> web.Response:
    loops = request.app[LOOPS]
    stalled = loops.stalled()
    if stalled:
        detail = "; ".join(f"loop {s.loop}: no completed pass for {s.seconds_since_pass:g} s "
                           f"(deadline {s.deadline_seconds:g} s)" for s in stalled)
        return web.json_response({
            "status": "stalled", "detail": detail,
            "stalled": [{"loop": s.loop, "seconds_since_pass": s.seconds_since_pass,
                         "deadline_seconds": s.deadline_seconds, "restarts": s.restarts,
                         "last_error": s.last_error or None} for s in stalled]},
            status=503)
    now = loops.now()
    return web.json_response({"status": "ok", "loops": {
        name: {"seconds_since_pass": round(now - h.last_pass, 1), "passes": h.passes,
               "restarts": h.restarts}
        for name, h in sorted(loops.loops.items())}})


async def readyz(request: web.Request) -> web.Response:
    cert = request.app[CERT]
    if cert.ready():
        assert cert.info is not None
        return web.json_response({"status": "ready",
                                  "certificate_expires": cert.info.not_after.isoformat()})
    detail = cert.last_error or "no valid serving certificate loaded"
    return web.json_response({"status": "not ready", "detail": detail}, status=503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
