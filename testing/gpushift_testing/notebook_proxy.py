"""One stable local URL per notebook, as Kubeflow's route gives one (TEST HARNESS).

``http://127.0.0.1:<port>/notebook/<namespace>/<name>/...`` is proxied (HTTP, streamed
both ways, and WebSocket) to the JupyterLab of the notebook's current pod, wherever the
local pod runner started it. While the notebook has no running pod -- it is being
recreated on another node -- the answer is 503 JSON with ``Retry-After``, which the
front end polls through, as it would through Kubeflow's gateway. The Host header is
passed on, so Jupyter's origin checks see the address the browser used.

It also answers what `kubectl proxy` serves on 127.0.0.1:8001 for a Service:
``/api/v1/namespaces/<namespace>/services/<name>[:<port>]/proxy/<path>`` is ``/<path>``
on the pod of notebook ``<namespace>/<name>`` (Kubeflow's notebook-controller names the
Service after the Notebook, port `http-<name>`). Kubeflow's culler with `DEV=true` reads
kernels there (``.../proxy/notebook/<ns>/<name>/api/kernels``), so a proxy started on
port 8001 lets the real culler see the real kernels of the local pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

PREFIX = re.compile(r"^/notebook/([^/]+)/([^/]+)(?:/|$)")
SERVICE_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/:]+)(?::[^/]*)?/proxy"
                           r"(/.*)?$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade"}
WS_HEADERS = ("Cookie", "Authorization", "Origin", "Host", "User-Agent", "X-XSRFToken")
SESSION = web.AppKey("session", aiohttp.ClientSession)


@dataclass(frozen=True)
class Route:
    port: int
    pod_uid: str


class Routes:
    """notebook (namespace, name) -> the local port of its current pod (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Route] = {}

    def set(self, namespace: str, name: str, port: int, pod_uid: str) -> None:
        with self._lock:
            self._routes[namespace, name] = Route(port, pod_uid)

    def clear(self, namespace: str, name: str, pod_uid: str | None = None) -> None:
        """Forget the route; with `pod_uid`, only if it still leads to that pod."""
        with self._lock:
            route = self._routes.get((namespace, name))
            if route is not None and pod_uid in (None, route.pod_uid):
                del self._routes[namespace, name]

    def get(self, namespace: str, name: str) -> Route | None:
        with self._lock:
            return self._routes.get((namespace, name))


def _error(status: int, error: str, detail: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else {}
    return web.json_response({"error": error, "detail": detail}, status=status,
                             headers=headers)


def make_app(routes: Routes) -> web.Application:
    """The proxy as an aiohttp application (one client session, no cookie jar)."""
    app = web.Application()
    session_key = SESSION

    async def open_session(app: web.Application) -> Any:
        app[session_key] = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            skip_auto_headers=("User-Agent", "Accept-Encoding"))
        yield
        await app[session_key].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        path_qs = request.rel_url.raw_path_qs
        match = PREFIX.match(raw)
        service = SERVICE_PROXY.match(raw)
        if service is not None:  # as `kubectl proxy` answers: the rest, on the pod
            match = service
            path_qs = (service.group(3) or "/") + path_qs[len(raw):]
        if match is None:
            return _error(404, "not_found", f"{raw} is not under /notebook/<namespace>/<name>/"
                          " nor /api/v1/namespaces/<namespace>/services/<name>/proxy/")
        namespace, name = match.group(1), match.group(2)
        route = routes.get(namespace, name)
        if route is None:
            return _error(503, "notebook_unavailable",
                          f"notebook {namespace}/{name} has no running pod now (it may be "
                          "moving to another node); retry shortly")
        target = URL(f"http://127.0.0.1:{route.port}{path_qs}", encoded=True)
        session = request.app[session_key]
        try:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await _websocket(session, request, target)
            return await _http(session, request, target)
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as e:
            return _error(503, "notebook_starting",
                          f"the notebook server of {namespace}/{name} does not answer yet "
                          f"({type(e).__name__}); retry shortly")

    app.cleanup_ctx.append(open_session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _forward_headers(request: web.Request) -> CIMultiDict[str]:
    headers = CIMultiDict((k, v) for k, v in request.headers.items()
                          if k.lower() not in HOP_BY_HOP)
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


async def _http(session: aiohttp.ClientSession, request: web.Request,
                target: URL) -> web.StreamResponse:
    body = request.content if request.body_exists else None
    async with session.request(request.method, target, headers=_forward_headers(request),
                               data=body, allow_redirects=False) as upstream:
        headers = CIMultiDict((k, v) for k, v in upstream.headers.items()
                              if k.lower() not in HOP_BY_HOP)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=headers)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _websocket(session: aiohttp.ClientSession, request: web.Request,
                     target: URL) -> web.StreamResponse:
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                 if p.strip()]
    headers = {k: request.headers[k] for k in WS_HEADERS if k in request.headers}
    try:
        upstream = await session.ws_connect(target.with_scheme("ws"), headers=headers,
                                            protocols=protocols, max_msg_size=0)
    except aiohttp.WSServerHandshakeError as e:
        return _error(e.status if 400 <= e.status < 600 else 502, "websocket_refused",
                      f"the notebook server refused the WebSocket: {e.message}")
    client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                   max_msg_size=0)
    await client.prepare(request)

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break

    tasks = [asyncio.ensure_future(pump(client, upstream)),
             asyncio.ensure_future(pump(upstream, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()
        await client.close()
    return client


class NotebookProxy:
    """The proxy on 127.0.0.1:`port` (0: a free one) in a thread with its own event loop."""

    def __init__(self, routes: Routes, port: int = 0) -> None:
        self.routes = routes
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="notebook-proxy",
                                        daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, namespace: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/notebook/{namespace}/{name}/"

    def start(self) -> NotebookProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(make_app(self.routes), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        for address in self._runner.addresses:  # the port picked when 0 was asked
            self.port = int(address[1])

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
