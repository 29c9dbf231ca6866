"""Resume where you left off, through the real in-process Jupyter server, the real sidecar
process, real kernels and kishu: a restarted kernel, and one killed as the OOM killer
kills (then restarted by Jupyter), are offered their notebook's newest checkpoint and
get their variables back on accept; a kernel that ran a cell never is."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures, in this module only (see test_server_extension).
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_checkpoint_files import checkpointed
from test_server_extension import (  # the fixtures too, shared with that module
    call,
    call_api,
    jp_server_config,
    kishu_root,
    on_server_loop,
    run_cell,
    sidecar,
    value_of,
)

from gpushift_jupyter.kernel_state import KernelHistory
from gpushift_jupyter.resume import resume_verdict

__all__ = ["jp_server_config", "kishu_root", "sidecar"]

STATE = "x = 41\nnames = ['a', 'b']\nsquares = (i * i for i in range(3))"


async def offer(jp_fetch: Any, kernel_id: str, path: str) -> dict[str, Any]:
    status, answer = await call(jp_fetch, "GET", "resume",
                                params={"kernel_id": kernel_id, "path": path})
    assert status == 200, answer
    return dict(answer)


async def until_restarted(jp_serverapp: Any, kernel_id: str, old_pid: int) -> None:
    """Until Jupyter's restarter brought the kernel back in a new process, ready."""
    manager = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    deadline = time.monotonic() + 60
    while True:
        process = getattr(manager.provisioner, "process", None)
        if process is not None and process.pid != old_pid and await manager.is_alive():
            break
        assert time.monotonic() < deadline, "the kernel was not restarted"
        await asyncio.sleep(0.2)
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
    finally:
        client.stop_channels()


@on_server_loop
async def test_a_restarted_kernel_is_offered_the_checkpoint_and_gets_it_back(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    before = time.time()
    path = "work/train.ipynb"
    kernel_id, saved = await checkpointed(jp_fetch, jp_serverapp, jp_root_dir, path, STATE)
    ran = await offer(jp_fetch, kernel_id, path)
    assert ran["offer"] is False and "has run cells" in ran["why"], ran
    assert ran["commit_id"] == saved["commit_id"]  # what there is, even when not offered

    await call_api(jp_fetch, "POST", ["api", "kernels", kernel_id, "restart"], {})
    fresh = await offer(jp_fetch, kernel_id, path)
    assert fresh["offer"] is True and fresh["why"] == "", fresh
    assert fresh["commit_id"] == saved["commit_id"] and fresh["path"] == path
    assert before - 1 <= fresh["saved_at"] <= time.time()
    assert {"x", "names"} <= set(fresh["variables"])
    assert [n["name"] for n in fresh["not_saved"]] == ["squares"]
    assert "generator" in fresh["not_saved"][0]["reason"]

    status, resumed = await call(jp_fetch, "POST", "resume", {
        "kernel_id": kernel_id, "path": path, "commit_id": fresh["commit_id"]})
    assert status == 200 and resumed["ok"] is True, resumed
    assert {"x", "names"} <= set(resumed["restored"])
    assert await value_of(jp_serverapp, kernel_id, "(x, names)") == "(41, ['a', 'b'])"
    # Restored once: not offered again to this kernel process.
    again = await offer(jp_fetch, kernel_id, path)
    assert again["offer"] is False and "restored into this kernel" in again["why"], again
    status, twice = await call(jp_fetch, "POST", "resume", {
        "kernel_id": kernel_id, "path": path, "commit_id": fresh["commit_id"]})
    assert status == 409 and twice["error"] == "kernel_ran_cells", twice


@on_server_loop
async def test_a_kernel_killed_like_the_oom_killer_does_is_offered_the_resume(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    path = "work/big.ipynb"
    kernel_id, saved = await checkpointed(jp_fetch, jp_serverapp, jp_root_dir, path, STATE)
    await run_cell(jp_serverapp, kernel_id, "x = 1000  # after the checkpoint: lost")
    pid = jp_serverapp.kernel_manager.get_kernel(kernel_id).provisioner.process.pid
    os.kill(pid, signal.SIGKILL)  # what the kernel's cgroup OOM killer sends
    await until_restarted(jp_serverapp, kernel_id, pid)

    fresh = await offer(jp_fetch, kernel_id, path)
    assert fresh["offer"] is True and fresh["commit_id"] == saved["commit_id"], fresh
    status, resumed = await call(jp_fetch, "POST", "resume", {
        "kernel_id": kernel_id, "path": path, "commit_id": fresh["commit_id"]})
    assert status == 200 and resumed["ok"] is True, resumed
    assert await value_of(jp_serverapp, kernel_id, "x") == "41"


@on_server_loop
async def test_a_kernel_that_ran_a_cell_is_never_restored_into(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    path = "work/t.ipynb"
    kernel_id, saved = await checkpointed(jp_fetch, jp_serverapp, jp_root_dir, path, STATE)
    await call_api(jp_fetch, "POST", ["api", "kernels", kernel_id, "restart"], {})
    assert (await offer(jp_fetch, kernel_id, path))["offer"] is True
    await run_cell(jp_serverapp, kernel_id, "x = 'mine'")  # before the user accepted
    status, refused = await call(jp_fetch, "POST", "resume", {
        "kernel_id": kernel_id, "path": path, "commit_id": saved["commit_id"]})
    assert status == 409 and refused["error"] == "kernel_ran_cells", refused
    assert await value_of(jp_serverapp, kernel_id, "x") == "'mine'"
    assert await value_of(jp_serverapp, kernel_id, "'names' in globals()") == "False"

    for params, code in (({"path": path}, 400), ({"kernel_id": "", "path": path}, 400),
                         ({"kernel_id": "nope", "path": path}, 404)):
        status, answer = await call(jp_fetch, "GET", "resume", params=params)
        assert status == code, (params, answer)
    status, answer = await call(jp_fetch, "POST", "resume", {"kernel_id": kernel_id})
    assert status == 400 and "commit_id" in answer["detail"], answer


NOTEBOOK = Path("/home/jovyan/work/train.ipynb")


@pytest.mark.parametrize(("history", "migration", "recovered", "why"), [
    (KernelHistory(0, None), None, False, ""),
    (KernelHistory(0, None), {"phase": "done", "checkpoint": None}, False, ""),
    (KernelHistory(1, None), None, False, "has run cells"),
    (KernelHistory(0, "c1"), None, False, "restored into this kernel"),
    (KernelHistory(0, None), {"phase": "checkpointing"}, False, "move is under way"),
    (KernelHistory(0, None), {"phase": "restoring"}, False, "move is under way"),
    (KernelHistory(0, None), {
        "phase": "failed", "checkpoint": {"notebook_path": str(NOTEBOOK), "commit_id": "c"},
        "history": [{"phase": "recreating"}]}, False, "recovery restores"),
    (KernelHistory(0, None), {
        "phase": "failed", "checkpoint": {"notebook_path": str(NOTEBOOK), "commit_id": "c"},
        "history": [{"phase": "recreating"}]}, True, ""),
])
def test_when_a_resume_is_offered(history: KernelHistory, migration: dict[str, Any] | None,
                                  recovered: bool, why: str) -> None:
    verdict = resume_verdict(history, migration, NOTEBOOK, recovered)
    assert verdict.offer is (why == "")
    assert why in verdict.why
