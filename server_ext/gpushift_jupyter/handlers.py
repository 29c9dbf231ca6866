"""The HTTP handlers of `/<base_url>/api_extension` (tornado, thin: parse, call, answer).

Every handler is behind Jupyter's own authentication and authorization
(`@tornado.web.authenticated` + `@authorized`, resource "gpushift"); XSRF is checked by
jupyter_server for every non-GET request. Errors are `{"error", "detail"}` (plus
`message`, which JupyterLab's ServerConnection shows) and never carry a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin

from gpushift_jupyter import api_requests
from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.services import Services

AUTH_RESOURCE = "gpushift"
# A cell of a few thousand lines is long; the classifier's cost grows with it.
MAX_CLASSIFY_BYTES = 1024 * 1024




def answers_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """ApiError → its JSON answer; anything else → 500 JSON, logged, no traceback."""
    async def inner(self: GpushiftHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except ApiError as exc:
            self.answer_error(exc)
        except tornado.web.HTTPError:
            raise
        except Exception:
            self.log.exception("gpushift: unhandled error in %s %s", self.request.method,
                               self.request.path)
            self.answer_error(ApiError(500, "internal_error",
                                       "see the Jupyter server's log"))
    inner.__name__, inner.__doc__ = method.__name__, method.__doc__
    return inner


class GpushiftHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def services(self) -> Services:
        services: Services = self.settings["gpushift_services"]
        return services

    def body(self, limit: int = 64 * 1024) -> dict[str, Any]:
        raw = self.request.body or b""
        if len(raw) > limit:
            raise ApiError(413, "request_too_large", f"the body is larger than {limit} bytes")
        return api_requests.parse_body(raw)

    def answer(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        if status == 204:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(tornado.escape.json_encode(document))

    def answer_error(self, exc: ApiError) -> None:
        self.answer({**exc.to_json(), "message": exc.detail}, exc.status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """tornado's own errors (403 from the authorizer, 405...) as our JSON."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(exc, "reason", None) or self._reason
        detail = getattr(exc, "log_message", None) or reason
        self.set_header("Content-Type", "application/json")
        self.finish(tornado.escape.json_encode({
            "error": str(reason).lower().replace(" ", "_"), "detail": detail,
            "message": detail}))


class RuntimeHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        """The runtime config, with `optimizer` on or off (never a 500)."""
        self.answer(self.services.runtime_document())


class PodHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        """What a move would do now: the notebooks it saves (`notebooks`) and what it
        stops without saving (`will_stop`), for the confirmation and the idle warning;
        `?variables=1` adds the variables it would not bring back (`unsaved`)."""
        variables = api_requests.parse_flag("variables", self.get_query_argument(
            "variables", "0"))
        mover = self.services.mover
        self.answer((await mover.sessions(variables=variables)).to_json(mover.kernels))


class ClassifyHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        request = api_requests.parse_classify(self.body(MAX_CLASSIFY_BYTES))
        classifier = self.services.kernels.classifier(request.kernel_id)
        if request.preview:
            verdict = classifier.preview(request.code)
        else:
            verdict = classifier.classify(request.code, first_hit=request.first_hit)
        self.answer(verdict.to_json())
        if request.first_hit:
            # The rest of the cell's walk, once the answer is on its way.
            asyncio.get_running_loop().call_soon(classifier.settle)


class AttachHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        kernel_id, path = api_requests.parse_kernel_and_path(self.body())
        services = self.services
        services.require_optimizer()
        notebook = await services.mover.attach(kernel_id, path)
        self.answer({"kernel_id": kernel_id, "path": services.kernels.relative(notebook),
                     "attached": True})


class ActivityHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        kernel_id, running = api_requests.parse_activity(self.body())
        await self.services.report_activity(kernel_id, running)
        self.answer(None, 204)


class MigrateHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        request = api_requests.parse_migrate(self.body())
        self.services.require_optimizer()
        self.answer(await self.services.mover.migrate(request), 202)


class MigrationHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        self.services.require_optimizer()
        self.answer({"migration": await self.services.restorer.current_for_browser()})


class CheckpointHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        kernel_id, path = api_requests.parse_kernel_and_path(self.body())
        self.services.require_optimizer()
        mover = self.services.mover
        notebook, saved = await mover.checkpoint(kernel_id, path)
        self.answer({"path": mover.kernels.relative(notebook), "commit_id": saved.commit_id,
                     "verified": True, "elapsed_ms": saved.elapsed_ms,
                     "database_bytes": saved.database_bytes})


class RestoreHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        kernel_id, path = api_requests.parse_kernel_and_path(self.body())
        restorer = self.services.restorer
        if not self.services.runtime().optimizer_on:
            self.answer(await restorer.restore_latest(kernel_id, path))
            return
        self.answer(await restorer.restore(kernel_id, path))


class IdleHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        self.services.require_optimizer()
        self.answer(await self.services.sidecar.get("/idle"))


class IdleStayHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        api_requests.known_keys(self.body(), set())
        self.services.require_optimizer()
        await self.services.sidecar.post("/idle/stay", {})
        self.answer(None, 204)


class IdleTimeoutHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def put(self) -> None:
        body = api_requests.parse_idle_timeout(self.body())
        self.services.require_optimizer()
        self.answer(await self.services.sidecar.put("/idle/timeout", body))


class ProfilesHandler(GpushiftHandler):
    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        """The "Move to GPU…" picker's list: the admin's GPU profiles with what is free
        now, the namespace's quota left and whether a move can start, as the sidecar
        answers it (`GET /profiles`)."""
        self.services.require_optimizer()
        self.answer(await self.services.sidecar.get("/profiles"))


class CheckpointFilesHandler(GpushiftHandler):
    """The checkpoints kept for a deleted notebook (or folder), `?path=` relative to the
    server root: JupyterLab offers to delete them when the user deletes the notebook."""

    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        self.answer(self.services.files.describe(self.get_query_argument("path", "")))

    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def delete(self) -> None:
        self.answer(await self.services.files.delete(self.get_query_argument("path", "")))


class ResumeHandler(GpushiftHandler):
    """"Resume where you left off": the offer for a fresh kernel's notebook (`GET
    ?kernel_id=&path=`), and its restore on accept (`POST {"kernel_id", "path",
    "commit_id"}`); see `resume`."""

    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        kernel_id = api_requests.parse_kernel_id(self.get_query_argument("kernel_id", ""))
        path = self.get_query_argument("path", None)
        self.answer(await self.services.resume.offer(kernel_id, path))

    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def post(self) -> None:
        kernel_id, path, commit_id = api_requests.parse_resume(self.body())
        self.answer(await self.services.resume.resume(kernel_id, path, commit_id))


class BackgroundHandler(GpushiftHandler):
    """The kernel's last background checkpoint (`?kernel_id=`): saved, running,
    skipped (with why: a state too large, CUDA, a full volume), failed, off; and the
    user's own interval (`PUT`)."""

    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def get(self) -> None:
        kernel_id = api_requests.parse_kernel_id(self.get_query_argument("kernel_id", ""))
        self.services.kernels.facts(kernel_id)  # 404 for a kernel that is not running
        self.answer(self.services.background.report(kernel_id))

    @tornado.web.authenticated
    @authorized
    @answers_errors
    async def put(self) -> None:
        """The user's setting: `{"interval_seconds": n}` (0: off for them; null: as the
        administrator and the server say); the settings that apply come back."""
        background = self.services.background
        background.user_interval = api_requests.parse_user_interval(self.body())
        settings = background.settings
        self.answer({"interval_s": settings.interval, "max_state_mib": settings.max_state_mib,
                     "user_interval_s": background.user_interval})


ROUTES: list[tuple[str, type[GpushiftHandler]]] = [
    ("", RuntimeHandler),
    ("/pod", PodHandler),
    ("/classify", ClassifyHandler),
    ("/attach", AttachHandler),
    ("/activity", ActivityHandler),
    ("/migrate", MigrateHandler),
    ("/migration", MigrationHandler),
    ("/checkpoint", CheckpointHandler),
    ("/restore", RestoreHandler),
    ("/idle", IdleHandler),
    ("/idle/stay", IdleStayHandler),
    ("/idle/timeout", IdleTimeoutHandler),
    ("/profiles", ProfilesHandler),
    ("/checkpoints", CheckpointFilesHandler),
    ("/resume", ResumeHandler),
    ("/background", BackgroundHandler),
]


