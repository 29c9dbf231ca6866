"""A watch through gpushift_core.kube (`KubeApi.watch_notebooks`, `transport.stream`)
against the real local HTTP server of test_kube_transport_sockets: events split across
reads, the API server ending the watch, a refusal, a connection dropped or gone silent
-- each a KubeError within the timeouts, the event loop free meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from test_kube_transport_sockets import QUICK, api_for, server  # noqa: F401

from gpushift_core.kube import KubeError, Unreachable


def event(kind: str, name: str, version: str) -> bytes:
    return json.dumps({"type": kind, "object": {"metadata": {
        "name": name, "namespace": "ns", "resourceVersion": version}}}).encode() + b"\n"


async def collect(api, version="5", timeout=2.0) -> list[dict]:
    return [e async for e in api.watch_notebooks(version, timeout_seconds=timeout)]


async def test_events_split_across_reads_arrive_whole_until_the_server_ends_the_watch(
        server):  # noqa: F811
    stream = event("ADDED", "a", "6") + event("MODIFIED", "a", "7") + event("DELETED", "a", "8")
    server.modes = [("chunks", {"chunks": [stream[:10], stream[10:70], stream[70:]],
                                "pause": 0.05})]
    events = await collect(api_for(server.url, QUICK))
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("ADDED", "6"), ("MODIFIED", "7"), ("DELETED", "8")]
    query = parse_qs(urlsplit(server.requests[0]).query)
    assert query == {"watch": ["true"], "resourceVersion": ["5"],
                     "allowWatchBookmarks": ["true"], "timeoutSeconds": ["2"]}


async def test_a_refused_watch_is_a_kube_error_with_its_status(server):  # noqa: F811
    server.modes = [("status", {"code": 403, "body": {
        "kind": "Status", "reason": "Forbidden", "message": "cannot watch", "code": 403}})]
    with pytest.raises(KubeError) as err:
        await collect(api_for(server.url, QUICK))
    assert (err.value.status, err.value.reason) == (403, "Forbidden")


async def test_a_watch_dropped_midway_is_unreachable_after_its_events(server):  # noqa: F811
    server.modes = [("chunks", {"chunks": [event("ADDED", "a", "6"), b'{"type": "MOD']})]
    seen = []
    with pytest.raises(Unreachable):
        async for e in api_for(server.url, QUICK).watch_notebooks("5", timeout_seconds=2):
            seen.append(e["type"])
    assert seen == ["ADDED"]


async def test_a_silent_watch_ends_by_its_read_timeout_without_blocking_the_loop(
        server):  # noqa: F811
    # The API server would end it after 1 s; it says nothing, not even the end.
    server.modes = [("chunks", {"chunks": [event("ADDED", "a", "6")], "hang": True})]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"ReadTimeoutError|timed out"):
        await collect(api_for(server.url, QUICK), timeout=1)
    took = time.monotonic() - started
    task.cancel()
    # timeout (1 s) + the read timeout of a call (0.4 s)
    assert 1.3 < took < 3 and ticks >= 30


async def test_leaving_a_watch_early_closes_it(server):  # noqa: F811
    server.modes = [("chunks", {"chunks": [event("ADDED", "a", "6")], "hang": True})]
    api = api_for(server.url, QUICK)
    started = time.monotonic()
    events = api.watch_notebooks("5", timeout_seconds=30)
    async for e in events:
        assert e["type"] == "ADDED"
        break
    await events.aclose()
    assert time.monotonic() - started < 2
