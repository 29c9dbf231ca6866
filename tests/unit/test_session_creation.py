"""`serialize_session_creation`: one new session per notebook at a time. The manager here
is a small in-memory stand-in for jupyter_server's (its `create_session` takes as long as
a kernel's start and can fail); the real server's race is in
`tests/jupyter/test_server_restore.py`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpushift_jupyter.session_creation import serialize_session_creation


class InMemorySessions:
    def __init__(self, fail_first: bool = False) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.fail_first = fail_first

    async def create_session(self, path: str | None = None, name: str | None = None,
                             type: str | None = None, kernel_name: str | None = None,
                             kernel_id: str | None = None) -> dict[str, Any]:
        self.created += 1
        number = self.created
        await asyncio.sleep(0.05)  # the kernel's start: the session is not findable yet
        if self.fail_first and number == 1:
            raise RuntimeError("the kernel would not start")
        model = {"id": f"s{number}", "path": path,
                 "kernel": {"id": kernel_id or f"k{number}"}}
        if path is not None:
            self.sessions[path] = model
        return model

    async def session_exists(self, path: str) -> bool:
        return path in self.sessions

    async def get_session(self, path: str) -> dict[str, Any]:
        return self.sessions[path]


def test_requests_for_one_notebook_at_once_share_one_new_session() -> None:
    async def scenario() -> None:
        manager = InMemorySessions()
        serialize_session_creation(manager)
        serialize_session_creation(manager)  # twice changes nothing
        a, b, other = await asyncio.gather(
            manager.create_session(path="a.ipynb", type="notebook"),
            manager.create_session(path="a.ipynb", type="notebook"),
            manager.create_session(path="b.ipynb", type="notebook"))
        assert a == b and a["kernel"]["id"] == "k1"
        assert other["path"] == "b.ipynb"
        assert manager.created == 2  # one per notebook; the other notebook did not wait

    asyncio.run(scenario())


def test_a_creation_that_fails_lets_the_waiting_request_create_its_own() -> None:
    async def scenario() -> None:
        manager = InMemorySessions(fail_first=True)
        serialize_session_creation(manager)
        first, second = await asyncio.gather(
            manager.create_session(path="a.ipynb"), manager.create_session(path="a.ipynb"),
            return_exceptions=True)
        assert isinstance(first, RuntimeError)
        assert isinstance(second, dict) and second["kernel"]["id"] == "k2"

    asyncio.run(scenario())


@pytest.mark.parametrize("kwargs", [{"path": None}, {"path": "a.ipynb", "kernel_id": "k9"}])
def test_no_path_or_an_existing_kernel_goes_straight_through(kwargs: dict[str, Any]) -> None:
    async def scenario() -> None:
        manager = InMemorySessions()
        serialize_session_creation(manager)
        await asyncio.gather(*(manager.create_session(**kwargs) for _ in range(2)))
        assert manager.created == 2

    asyncio.run(scenario())
