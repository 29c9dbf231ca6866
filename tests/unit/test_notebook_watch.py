"""Following the Notebooks (gpushift_webhook.notebook_watch): the store after a list and
the watch's events, a watch that ends and resumes from the last version without a list,
410 Gone (as an ERROR event and as the answer) listing again, a forbidden watch falling
back to lists, other failures marking the store unsynced; against a scripted source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from gpushift_core.kube import KubeError, Unreachable
from gpushift_webhook.notebook_watch import NotebookStore, WatchSettings, follow


def nb(name: str, version: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version,
                         "annotations": annotations}}


def ev(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


GONE = ev("ERROR", {"kind": "Status", "code": 410, "reason": "Expired",
                    "message": "too old resource version"})


class Source:
    """Lists and watches played from scripts; an Exception in a script is raised."""

    def __init__(self) -> None:
        self.lists: list[Any] = []
        self.watches: list[Any] = []
        self.calls: list[tuple[str, str]] = []
        self.idle = asyncio.Event()

    async def list_notebooks_with_version(self) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", ""))
        if not self.lists:  # the script is played: the test looks at what it left
            self.idle.set()
            await asyncio.Event().wait()
        item = self.lists.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def watch_notebooks(self, resource_version: str, timeout_seconds: float = 60
                              ) -> AsyncGenerator[dict[str, Any], None]:
        self.calls.append(("watch", resource_version))
        if not self.watches:
            self.idle.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item


async def run_until_idle(source: Source, store: NotebookStore, **settings: float) -> int:
    passes = 0

    def passed() -> None:
        nonlocal passes
        passes += 1

    task = asyncio.create_task(follow(source, store, WatchSettings(
        retry_seconds=0.01, poll_seconds=0.01, **settings), on_pass=passed))
    await asyncio.wait_for(source.idle.wait(), 5)
    task.cancel()
    return passes


async def test_list_then_events_then_a_new_watch_from_the_last_version():
    source, store = Source(), NotebookStore()
    source.lists = [([nb("a", "1"), nb("b", "2")], "10")]
    source.watches = [
        [ev("ADDED", nb("c", "11")), ev("MODIFIED", nb("a", "12", x="y")),
         ev("DELETED", nb("b", "13")), ev("BOOKMARK", {"metadata": {"resourceVersion": "15"}})],
        [ev("MODIFIED", nb("c", "16"))],
    ]
    passes = await run_until_idle(source, store)
    assert source.calls == [("list", ""), ("watch", "10"), ("watch", "15"), ("watch", "16")]
    assert sorted(store.items) == [("ns", "a"), ("ns", "c")]
    assert store.items[("ns", "a")]["metadata"]["annotations"] == {"x": "y"}
    assert store.synced and store.resource_version == "16"
    assert passes == 1 + 4 + 1 + 1 + 1  # the list, each event, each watch's end
    snap = store.snapshot()
    snap[0]["metadata"]["name"] = "changed"
    assert store.items[("ns", "a")]["metadata"]["name"] == "a"


@pytest.mark.parametrize("gone", [[GONE], KubeError(410, "Expired", "too old")])
async def test_410_gone_lists_again(gone):
    source, store = Source(), NotebookStore()
    source.lists = [([nb("a", "1")], "10"), ([nb("b", "30")], "30")]
    source.watches = [gone]
    await run_until_idle(source, store)
    assert source.calls == [("list", ""), ("watch", "10"), ("list", ""), ("watch", "30")]
    assert list(store.items) == [("ns", "b")] and store.synced


async def test_a_forbidden_watch_falls_back_to_lists():
    source, store = Source(), NotebookStore()
    forbidden = KubeError(403, "Forbidden", "cannot watch notebooks")
    source.lists = [([nb("a", "1")], "10"), ([nb("a", "1"), nb("b", "2")], "11")]
    source.watches = [forbidden]
    await run_until_idle(source, store)
    # No second watch: the lists that follow the 403 are the only way to stay current.
    assert [c for c, _ in source.calls] == ["list", "watch", "list", "list"]
    assert sorted(store.items) == [("ns", "a"), ("ns", "b")] and store.synced


async def test_other_failures_unsync_the_store_and_list_again():
    source, store = Source(), NotebookStore()
    source.lists = [([nb("a", "1")], "10"), Unreachable("down"), ([nb("a", "1")], "20")]
    source.watches = [[ev("ADDED", nb("b", "11")), Unreachable("connection dropped")]]
    states: list[bool] = []
    original = source.list_notebooks_with_version

    async def listing() -> tuple[list[dict[str, Any]], str]:
        states.append(store.synced)
        return await original()

    source.list_notebooks_with_version = listing  # type: ignore[method-assign]
    await run_until_idle(source, store)
    assert source.calls == [("list", ""), ("watch", "10"), ("list", ""), ("list", ""),
                            ("watch", "20")]
    # Readers list for themselves while the store is not following.
    assert states == [False, False, False] and store.synced


async def test_an_error_event_other_than_gone_is_a_failure():
    source, store = Source(), NotebookStore()
    source.lists = [([], "10"), ([], "11")]
    source.watches = [[ev("ERROR", {"code": 500, "reason": "InternalError",
                                    "message": "etcd"})]]
    await run_until_idle(source, store)
    assert source.calls == [("list", ""), ("watch", "10"), ("list", ""), ("watch", "11")]
