"""The notebook proxy of the local pod runner: HTTP, streaming, WebSocket, 503 while a
notebook has no pod. The upstream is a real aiohttp server on 127.0.0.1 (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gpushift_testing.notebook_proxy import NotebookProxy, Routes

PREFIX = "/notebook/team-a/alice"


def upstream_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "path": request.rel_url.raw_path_qs, "method": request.method,
            "host": request.host, "cookie": request.headers.get("Cookie"),
            "body": body.decode()}, headers={"Set-Cookie": "a=1"})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(3):
            await response.write(f"chunk {i}\n".encode())
            await asyncio.sleep(0.2)
        await response.write_eof()
        return response

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("v1.kernel.websocket.jupyter.org",))
        await ws.prepare(request)
        await ws.send_str(f"origin={request.headers.get('Origin')} host={request.host}")
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo " + message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get(PREFIX + "/stream", stream)
    app.router.add_get(PREFIX + "/ws", socket)
    app.router.add_route("*", PREFIX + "/{tail:.*}", echo)
    return app


@pytest.fixture
def proxy() -> Iterator[NotebookProxy]:
    p = NotebookProxy(Routes()).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    server = TestServer(upstream_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_http_is_proxied_with_host_cookies_and_body(proxy, upstream):
    proxy.routes.set("team-a", "alice", upstream.port, "uid-1")
    base = f"http://127.0.0.1:{proxy.port}{PREFIX}"
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/api/x%2Fy?a=1&b=2", data=b"hello",
                          headers={"Cookie": "token=t"}) as r:
            assert r.status == 200
            got = await r.json()
            assert r.headers.getall("Set-Cookie") == ["a=1"]
    assert got == {"path": PREFIX + "/api/x%2Fy?a=1&b=2", "method": "POST",
                   "host": f"127.0.0.1:{proxy.port}", "cookie": "token=t", "body": "hello"}


async def test_the_culler_url_of_kubectl_proxy_reaches_the_pod(proxy, upstream):
    """Kubeflow's culler with DEV=true asks kubectl proxy's Service path; the proxy
    answers it as kubectl proxy would: the rest of the path, on the notebook's pod."""
    proxy.routes.set("team-a", "alice", upstream.port, "uid-1")
    service = "/api/v1/namespaces/team-a/services/alice:http-alice/proxy"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{proxy.port}{service}{PREFIX}/api/kernels?x=1") as r:
            assert r.status == 200
            assert (await r.json())["path"] == PREFIX + "/api/kernels?x=1"
        # Another notebook's Service has no pod here: 503 naming it, as for /notebook/.
        other = "/api/v1/namespaces/team-a/services/bob:http-bob/proxy/notebook/team-a/bob/"
        async with s.get(f"http://127.0.0.1:{proxy.port}{other}") as r:
            assert r.status == 503 and "team-a/bob" in (await r.json())["detail"]


async def test_a_streamed_response_arrives_in_chunks(proxy, upstream):
    proxy.routes.set("team-a", "alice", upstream.port, "uid-1")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{proxy.port}{PREFIX}/stream") as r:
            arrivals = []
            async for line in r.content:
                arrivals.append((loop.time(), line.decode()))
    assert [a[1] for a in arrivals] == ["chunk 0\n", "chunk 1\n", "chunk 2\n"]
    # The first chunk came before the upstream had written the last one (not buffered).
    assert arrivals[-1][0] - arrivals[0][0] > 0.3


async def test_websocket_text_binary_and_subprotocol(proxy, upstream):
    proxy.routes.set("team-a", "alice", upstream.port, "uid-1")
    url = f"ws://127.0.0.1:{proxy.port}{PREFIX}/ws"
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, protocols=("v1.kernel.websocket.jupyter.org",),
                                origin=f"http://127.0.0.1:{proxy.port}") as ws:
            assert ws.protocol == "v1.kernel.websocket.jupyter.org"
            hello = await ws.receive_str(timeout=5)
            assert hello == (f"origin=http://127.0.0.1:{proxy.port} "
                             f"host=127.0.0.1:{proxy.port}")
            await ws.send_str("ping")
            assert await ws.receive_str(timeout=5) == "echo ping"
            await ws.send_bytes(b"\x00\x01\x02")
            assert await ws.receive_bytes(timeout=5) == b"\x02\x01\x00"


async def test_503_json_without_a_pod_and_while_the_server_is_down(proxy, upstream):
    base = f"http://127.0.0.1:{proxy.port}{PREFIX}/api/status"
    async with aiohttp.ClientSession() as s:
        async with s.get(base) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            body = await r.json()
            assert body["error"] == "notebook_unavailable"
            assert "team-a/alice" in body["detail"]
        # A route to a port where nothing listens (the server is starting): 503 too.
        from gpushift_testing.common import free_port

        proxy.routes.set("team-a", "alice", free_port(), "uid-2")
        async with s.get(base) as r:
            assert r.status == 503
            assert (await r.json())["error"] == "notebook_starting"
        # A route cleared with another pod's uid stays; with its own, it goes.
        proxy.routes.clear("team-a", "alice", "uid-1")
        assert proxy.routes.get("team-a", "alice") is not None
        proxy.routes.clear("team-a", "alice", "uid-2")
        assert proxy.routes.get("team-a", "alice") is None
        async with s.get(f"http://127.0.0.1:{proxy.port}/elsewhere") as r:
            assert r.status == 404
            assert (await r.json())["error"] == "not_found"
