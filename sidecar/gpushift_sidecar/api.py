"""The sidecar's loopback HTTP API (aiohttp), used by the notebook's server extension.

Routes: `GET /healthz`, `GET /runtime-config`, `POST /migrations`, `GET /migrations/current`,
`POST /migrations/current/checkpoints` (the server extension names the checkpoints of a
move created with `checkpoints_to_come`, or says it could not save: the move fails; 409
unless the current move waits for them), `POST /migrations/current/restore` (the server
extension's restore report: the migration
in `restoring` ends `done`, or `failed` when `ok` is false; 409 when none is restoring),
`POST /activity` (feeds the idle timer), `GET /profiles` (the admin's GPU profiles with
what is free now, the quota left and whether a move can start: `profiles_view`),
`GET /idle`, `POST /idle/stay` (the idle
timer; stay is 409 when no warning shows) and `PUT /idle/timeout` (the user's timeout,
clamped into the admin's bounds), `POST /notebooks` (a notebook kishu is attached
to: its checkpoints are watched) and `GET /checkpoints`, `GET /metrics`.

Every request except `GET /healthz` needs the pod's token (`Authorization: Bearer`):
none is 401, a wrong one 403. Errors are JSON `{"error", "detail"}`: bad input 400, a
body over the limit 413, a migration in the way, a stopped Notebook or a move to GPU
over a ResourceQuota (`quota_gate`) or to a profile with no GPU free now
(`capacity_gate`: `no_free_gpu`) 409, unknown routes and methods 404 and
405; nothing answers with a traceback. Request parsing lives in `api_requests` (pure); what
the routes serve is the `Sidecar` of `service`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpushift_sidecar import notebooks
from gpushift_sidecar.api_requests import (
    ApiError,
    parse_activity,
    parse_idle_timeout,
    parse_migration_request,
    parse_named_checkpoints,
    parse_notebook_registration,
    parse_restore_report,
)
from gpushift_sidecar.capacity_gate import NoFreeGpuRefused
from gpushift_sidecar.profiles_view import profiles_document
from gpushift_sidecar.quota_gate import QuotaRefused
from gpushift_sidecar.service import RunnerStartFailed, Sidecar
from gpushift_sidecar.state import Migration, Phase
from gpushift_sidecar.token import TOKEN_FILE
from gpushift_sidecar.tracker import MigrationInFlight, NotebookStopped

log = logging.getLogger("gpushift.sidecar")

# The server extension sends a pending cell's source; 64 KiB is a long cell.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# More kernels than one person runs at once in one notebook server.
MAX_KERNELS = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SIDECAR = web.AppKey("sidecar", Sidecar)
MAX_BODY = web.AppKey("max_body_bytes", int)


def error_response(status: int, error: str, detail: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "detail": detail, **extra}, status=status,
                             headers=headers)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)  # json_errors, inside, turns errors into answers
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[SIDECAR].metrics.api_requests.labels(route, str(response.status)).inc()
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.error, exc.detail, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return error_response(413, "request_too_large",
                                  f"the body is larger than {request.app[MAX_BODY]} bytes")
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason,
                              headers={k: v for k, v in exc.headers.items()
                                       if k.lower() == "allow"})
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "see the sidecar's log")


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/healthz":  # the startup probe has no token
        return await handler(request)
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return error_response(
            401, "unauthorized",
            f"send this pod's API token (the file {TOKEN_FILE} in the runtime dir) as "
            "'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    sidecar = request.app[SIDECAR]
    if not sidecar.token.matches(credentials.strip()):
        return error_response(403, "forbidden", "the API token does not match this pod's")
    if request.method not in ("GET", "HEAD"):
        # Only a process that can read this pod's token writes: gpushift's server
        # extension in the notebook container. Its first word starts the idle timer.
        sidecar.idle.notebook_side_seen()
    return await handler(request)


def make_app(sidecar: Sidecar, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> web.Application:
    app = web.Application(middlewares=[count_requests, json_errors, require_token],
                          client_max_size=max_body_bytes)
    app[SIDECAR] = sidecar
    app[MAX_BODY] = max_body_bytes
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/runtime-config", runtime_config)
    app.router.add_post("/migrations", create_migration)
    app.router.add_get("/migrations/current", current_migration)
    app.router.add_post("/migrations/current/checkpoints", name_checkpoints)
    app.router.add_post("/migrations/current/restore", confirm_restore)
    app.router.add_post("/activity", record_activity)
    app.router.add_get("/idle", idle_state)
    app.router.add_post("/idle/stay", idle_stay)
    app.router.add_put("/idle/timeout", idle_timeout)
    app.router.add_post("/notebooks", register_notebook)
    app.router.add_get("/checkpoints", list_checkpoints)
    app.router.add_get("/profiles", list_profiles)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def healthz(request: web.Request) -> web.Response:
    files = request.app[SIDECAR].files
    if not files.ready:
        return web.json_response({"status": "not ready", "detail": files.problem},
                                 status=503)
    body: dict[str, Any] = {"status": "ready"}
    if files.problem is not None:  # written once; a later change is not on disk yet
        body["warning"] = files.problem
    return web.json_response(body)


async def runtime_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIDECAR].files.document())


async def create_migration(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    wanted = parse_migration_request(await read_json(request), sidecar.env)
    if sidecar.idle.optimizer_off is not None:
        return error_response(409, "optimizer_off", sidecar.idle.optimizer_off,
                              server_type=sidecar.idle.server_type)
    migration = Migration.new(sidecar.env, target=wanted.target, reason=wanted.reason,
                              profile=wanted.profile, checkpoint=wanted.checkpoint,
                              pending_cell=wanted.pending_cell, now=dt.datetime.now(dt.UTC),
                              keep_image=wanted.keep_image,
                              other_checkpoints=wanted.other_checkpoints,
                              checkpoints_to_come=wanted.checkpoints_to_come)
    try:
        await sidecar.start_migration(migration)
    except NotebookStopped as exc:
        return error_response(409, "notebook_stopped", str(exc))
    except MigrationInFlight as exc:
        return error_response(409, "migration_in_flight",
                              f"migration {exc.current.id} is {exc.current.phase}; one "
                              "at a time per notebook", migration=exc.current.to_dict())
    except QuotaRefused as exc:
        return error_response(409, "quota_exceeded", exc.refusal.message,
                              quota=exc.refusal.to_json())
    except NoFreeGpuRefused as exc:
        return error_response(409, "no_free_gpu", exc.refusal.message,
                              capacity=exc.refusal.to_json())
    except OSError as exc:
        log.error("migration state not written", extra={
            "path": str(sidecar.tracker.store.path), "why": exc.strerror})
        return error_response(503, "state_unwritable",
                              f"cannot write the migration state: {exc.strerror}")
    except RunnerStartFailed as exc:
        failed = exc.migration
        return error_response(500, "runner_failed", failed.error or "", migration=failed.to_dict())
    return web.json_response(migration.to_dict(), status=202,
                             headers={"Location": "/migrations/current"})


async def current_migration(request: web.Request) -> web.Response:
    current = request.app[SIDECAR].tracker.current
    if current is None:
        return error_response(404, "no_migration", "this notebook has no migration on record")
    return web.json_response(current.to_dict())


async def name_checkpoints(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    named = parse_named_checkpoints(await read_json(request), sidecar.env)
    current = sidecar.tracker.current
    if (current is None or current.id != named.migration_id
            or current.phase is not Phase.CHECKPOINTING or not current.checkpoints_to_come):
        detail = (f"migration {named.migration_id} is not waiting for its checkpoints"
                  + ("" if current is None else
                     f" (the current one, {current.id}, is {current.phase})"))
        extra = {} if current is None else {"migration": current.to_dict()}
        return error_response(409, "not_waiting_for_checkpoints", detail, **extra)
    try:
        updated = await sidecar.runner.checkpoints_named(current, named)
    except OSError as exc:
        log.error("migration state not written", extra={
            "path": str(sidecar.tracker.store.path), "why": exc.strerror})
        return error_response(503, "state_unwritable",
                              f"cannot write the migration state: {exc.strerror}")
    return web.json_response(updated.to_dict())


async def confirm_restore(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    report = parse_restore_report(await read_json(request))
    # No await between this check and the runner's write (see MigrationRunner.restored).
    current = sidecar.tracker.current
    if current is None or current.phase is not Phase.RESTORING:
        detail = ("this notebook has no migration on record" if current is None else
                  f"migration {current.id} is {current.phase}, not restoring")
        extra = {} if current is None else {"migration": current.to_dict()}
        return error_response(409, "not_restoring", detail, **extra)
    try:
        ended = await sidecar.runner.restored(current, report)
    except OSError as exc:
        log.error("migration state not written", extra={
            "path": str(sidecar.tracker.store.path), "why": exc.strerror})
        return error_response(503, "state_unwritable",
                              f"cannot write the migration state: {exc.strerror}")
    return web.json_response(ended.to_dict())


async def record_activity(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    report = parse_activity(await read_json(request), sidecar.idle.clock())
    activity = sidecar.activity
    activity.pop(report.kernel_id, None)  # re-inserted last: the dict stays oldest-first
    activity[report.kernel_id] = report
    sidecar.idle.report(report)
    while len(activity) > MAX_KERNELS:  # kernels come and go; forget the longest silent
        gone = next(iter(activity))
        del activity[gone]
        sidecar.idle.forget_kernel(gone, report.received_at)
    return web.Response(status=204)


async def idle_state(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIDECAR].idle.current())


async def idle_stay(request: web.Request) -> web.Response:
    idle = request.app[SIDECAR].idle
    if not idle.stay():
        snapshot = idle.current()
        return error_response(409, "not_warning",
                              f"the idle timer is {snapshot['state']}: there is no move to "
                              "stay away from", idle=snapshot)
    return web.Response(status=204)


async def idle_timeout(request: web.Request) -> web.Response:
    idle = request.app[SIDECAR].idle
    idle.set_user_timeout(parse_idle_timeout(await read_json(request)))
    return web.json_response(idle.current())


async def register_notebook(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    path = parse_notebook_registration(await read_json(request), sidecar.env)
    watcher = sidecar.watcher
    watched = watcher.watched()
    if path not in watched and len(watched) >= notebooks.MAX_NOTEBOOKS:
        raise ApiError(409, "too_many_notebooks",
                       f"{len(watched)} notebooks are registered already, the most one "
                       "sidecar watches")
    watcher.start()  # here, on the event loop: its callbacks come back to this loop
    try:
        # Adds a watch and reads the database: blocking, so off the event loop.
        info = await asyncio.to_thread(watcher.watch_notebook, path)
    except ValueError as exc:
        raise ApiError(400, "invalid_field", f"path: {exc}") from None
    sidecar.refresh_last_checkpoint()
    return web.json_response({"notebook_path": path, "watch": watcher.watched().get(path),
                              "checkpoint": None if info is None else notebooks.api_json(info)})


async def list_checkpoints(request: web.Request) -> web.Response:
    return web.json_response(notebooks.listing(request.app[SIDECAR].watcher))


async def list_profiles(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    capacity, quotas = await asyncio.gather(sidecar.capacity.read(),
                                            sidecar.quotas.read_quotas())
    return web.json_response(profiles_document(sidecar.capacity, capacity, quotas))


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SIDECAR].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 413 over the limit (from aiohttp), 400 otherwise."""
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return body
