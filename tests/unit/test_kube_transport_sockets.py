"""gpushift_core.kube against a real local HTTP server that misbehaves as an API server
does in an outage -- refuses, drops or resets connections, never answers, cuts a body,
answers 503 or garbage -- with the real connection and urllib3 underneath (no
mocks of the client): every failure is a `KubeError` (`Unreachable` for a read,
`MaybeSent` for a write that may have landed), within the call's timeouts, and the
event loop keeps running meanwhile. Also the paged Notebook list from the watch cache."""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gpushift_core.kube import KubeApi, KubeError, MaybeSent, Retry, Unreachable
from gpushift_core.kube.connection import ClusterAccess, Connection

QUICK = Retry(deadline_seconds=0, connect_timeout_seconds=1, read_timeout_seconds=0.4)
"""One try, short timeouts (as the webhook's loops call)."""
PATIENT = Retry(deadline_seconds=5, initial_seconds=0.01, max_seconds=0.05,
                connect_timeout_seconds=1, read_timeout_seconds=0.4)

LEASE = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": "l", "namespace": "ns"}, "spec": {"holderIdentity": "a"}}


class ApiServer(socketserver.ThreadingTCPServer):
    """Answers each connection by the next of `modes` (the last one repeats)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.modes: list[tuple[str, Any]] = [("ok", {})]
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_mode(self) -> tuple[str, Any]:
        with self.lock:
            return self.modes.pop(0) if len(self.modes) > 1 else self.modes[0]


class Handler(socketserver.StreamRequestHandler):
    server: ApiServer

    def handle(self) -> None:
        line = self.rfile.readline().decode()
        length = 0
        while (header := self.rfile.readline()) not in (b"\r\n", b""):
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
        self.rfile.read(length)
        self.server.requests.append(line.split(" ")[1] if " " in line else line)
        mode, arg = self.server.next_mode()
        if mode == "hang":
            self.server.stopping.wait()
        elif mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        elif mode in ("ok", "status", "garbage"):
            code = arg.get("code", 200) if mode == "status" else 200
            body = b"<html>bad gateway</html>" if mode == "garbage" else json.dumps(
                arg.get("body", arg)).encode()
            self.wfile.write(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                             .encode() + body)
        elif mode == "chunks":  # a streamed answer (a watch): read until the close
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\n\r\n")
            for chunk in arg["chunks"]:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(arg.get("pause", 0))
            if arg.get("hang"):
                self.server.stopping.wait()
        elif mode in ("cut", "stall_body"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{\"kind\": ")
            self.wfile.flush()
            if mode == "stall_body":
                self.server.stopping.wait()
        # "drop" and the rest: close without an answer.


@pytest.fixture
def server() -> Iterator[ApiServer]:
    srv = ApiServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stopping.set()
    srv.shutdown()
    srv.server_close()


def api_for(url: str, retry: Retry, **kwargs: Any) -> KubeApi:
    return KubeApi(Connection(ClusterAccess(server=url)), retry=retry, **kwargs)


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_connection_refused_is_unreachable_for_reads_and_writes():
    api = api_for(closed_port(), QUICK)
    with pytest.raises(Unreachable, match=r"NewConnectionError|ConnectionRefused"):
        await api.get_pod("ns", "p")
    # A refused connection surely sent nothing: not MaybeSent.
    with pytest.raises(Unreachable):
        await api.create_lease("ns", LEASE)


@pytest.mark.parametrize("mode", ["drop", "reset"])
async def test_a_dropped_or_reset_connection_is_unreachable_for_a_read(server, mode):
    server.modes = [(mode, None)]
    api = api_for(server.url, QUICK)
    with pytest.raises(Unreachable) as err:
        await api.get_notebook("ns", "nb")
    assert err.value.status == 0
    # urllib3's ProtocolError ("Connection aborted."), never the raw exception.
    assert err.value.message.startswith("ProtocolError"), err.value.message


async def test_a_read_is_retried_until_the_server_answers(server):
    server.modes = [("drop", None), ("reset", None), ("status", {"code": 503}),
                    ("ok", {"metadata": {"name": "nb"}})]
    api = api_for(server.url, PATIENT)
    assert (await api.get_notebook("ns", "nb"))["metadata"]["name"] == "nb"
    assert len(server.requests) == 4


@pytest.mark.parametrize("mode", ["drop", "hang", "cut"])
async def test_a_write_whose_answer_is_lost_is_maybe_sent_and_not_repeated(server, mode):
    server.modes = [(mode, None)]
    api = api_for(server.url, PATIENT)
    with pytest.raises(MaybeSent):
        await api.create_lease("ns", LEASE)
    assert len(server.requests) == 1


async def test_a_server_that_never_answers_times_out_without_blocking_the_loop(server):
    server.modes = [("hang", None)]
    api = api_for(server.url, QUICK)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"ReadTimeoutError|timed out"):
        await api.get_notebook("ns", "nb")
    took = time.monotonic() - started
    task.cancel()
    assert 0.3 < took < 2 and ticks >= 10


@pytest.mark.parametrize("mode", ["cut", "stall_body"])
async def test_a_body_cut_or_stalled_midway_is_unreachable_within_the_timeout(server, mode):
    # read_json reads the body itself (_preload_content=False): inside the worker thread
    # and the timeouts, as a transport error.
    server.modes = [(mode, None)]
    api = api_for(server.url, QUICK)
    started = time.monotonic()
    with pytest.raises(Unreachable):
        await api.get_pod("ns", "p")
    assert time.monotonic() - started < 2


async def test_garbage_and_refusals(server):
    server.modes = [("garbage", None)]
    api = api_for(server.url, QUICK)
    with pytest.raises(Unreachable, match="not a JSON object"):
        await api.get_pod("ns", "p")
    with pytest.raises(MaybeSent, match="not a JSON object"):
        await api.create_lease("ns", LEASE)
    server.modes = [("status", {"code": 403, "body": {
        "kind": "Status", "reason": "Forbidden", "message": "no", "code": 403}})]
    with pytest.raises(KubeError) as err:
        await api.get_pod("ns", "p")
    assert (err.value.status, err.value.reason) == (403, "Forbidden")
    server.modes = [("status", {"code": 503})]
    with pytest.raises(KubeError) as err:
        await api_for(server.url, Retry(deadline_seconds=0.3, initial_seconds=0.05,
                                        max_seconds=0.05)).get_pod("ns", "p")
    assert err.value.status == 503 and len(server.requests) > 3


def notebook(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}}


async def test_notebooks_are_listed_from_the_watch_cache_in_pages(server):
    server.modes = [
        ("ok", {"items": [notebook("a"), notebook("b")], "metadata": {"continue": "t1"}}),
        ("ok", {"items": [notebook("c")], "metadata": {}}),
    ]
    api = api_for(server.url, QUICK, list_from_cache=True, page_size=2)
    listed = await api.list_notebooks()
    assert [nb["metadata"]["name"] for nb in listed] == ["a", "b", "c"]
    first, second = (parse_qs(urlsplit(r).query) for r in server.requests)
    assert urlsplit(server.requests[0]).path == "/apis/kubeflow.org/v1/notebooks"
    assert first == {"limit": ["2"], "resourceVersion": ["0"],
                     "resourceVersionMatch": ["NotOlderThan"]}
    assert second == {"limit": ["2"], "continue": ["t1"]}


async def test_an_expired_continue_token_starts_the_list_again_once(server):
    gone = ("status", {"code": 410, "body": {"kind": "Status", "reason": "Expired",
                                             "message": "too old", "code": 410}})
    server.modes = [
        ("ok", {"items": [notebook("a")], "metadata": {"continue": "t1"}}), gone,
        ("ok", {"items": [notebook("a")], "metadata": {"continue": "t2"}}),
        ("ok", {"items": [notebook("b")], "metadata": {}}),
    ]
    api = api_for(server.url, QUICK, page_size=1)
    assert [nb["metadata"]["name"] for nb in await api.list_notebooks()] == ["a", "b"]
    # Without the cache flag: a consistent read, no resourceVersion.
    assert parse_qs(urlsplit(server.requests[0]).query) == {"limit": ["1"]}
    server.modes = [("ok", {"items": [], "metadata": {"continue": "t1"}}), gone]
    with pytest.raises(KubeError) as err:
        await api.list_notebooks()
    assert err.value.status == 410
