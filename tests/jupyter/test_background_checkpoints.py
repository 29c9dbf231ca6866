"""Background checkpoints through the real in-process Jupyter server, the real sidecar
process, real kernels and kishu: after a cell, once the kernel is idle, the server
checkpoints it on its own (no browser); a restarted kernel is offered exactly that
state; a cell run during one starts at once; a move's checkpoint never waits on one;
a state over the bound is skipped, saying why."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures, in this module only (see test_server_extension).
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_checkpoint_files import open_with_state
from test_server_extension import (  # the fixtures too, shared with that module
    call,
    call_api,
    kishu_root,
    on_server_loop,
    run_cell,
    server_config,
    sidecar_base,
    value_of,
)

from gpushift_core.admin_settings import CheckpointSettings

__all__ = ["kishu_root"]


@pytest.fixture
def sidecar(tmp_path: Path, jp_root_dir: Path) -> Any:
    """The real sidecar, with the admin's background interval at its lowest (1 s)."""
    running = sidecar_base.start_sidecar(
        tmp_path, workspace_dir=jp_root_dir,
        checkpoints=CheckpointSettings(background_interval_seconds=1))
    yield running
    assert sidecar_base.stop(running) == 0
    assert "Traceback" not in running.logs()


@pytest.fixture
def jp_server_config(sidecar: Any, kishu_root: Path) -> dict[str, Any]:
    return server_config(sidecar, activity_interval=0, restore_interval=0,
                         background_interval=0.5, background_quiet=0.3,
                         background_max_state_mib=512)


async def attached(jp_fetch: Any, jp_serverapp: Any, root: Path, path: str,
                   code: str) -> str:
    """A notebook session (kishu attached, as a tab does) whose kernel ran `code`."""
    session = await open_with_state(jp_fetch, jp_serverapp, root, path, "pass")
    kernel_id = str(session["kernel"]["id"])
    status, answer = await call(jp_fetch, "POST", "attach", {"kernel_id": kernel_id})
    assert status == 200, answer
    await run_cell(jp_serverapp, kernel_id, code)
    return kernel_id


async def report_until(jp_fetch: Any, kernel_id: str, states: set[str],
                       timeout: float = 60, not_commit: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, report = await call(jp_fetch, "GET", "background",
                                    params={"kernel_id": kernel_id})
        assert status == 200, report
        if report["state"] in states and (not_commit is None
                                          or report.get("commit_id") != not_commit):
            return dict(report)
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.1)


@on_server_loop
async def test_the_state_is_saved_in_the_background_and_a_restarted_kernel_resumes_it(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    kernel_id = await attached(jp_fetch, jp_serverapp, jp_root_dir, "work/a.ipynb",
                               "x = 41\nnames = ['a', 'b']")
    first = await report_until(jp_fetch, kernel_id, {"saved"})
    assert first["variables"] >= 2 and first["fork_ms"] < 1000, first
    # Another cell: another background checkpoint, with the new state.
    await run_cell(jp_serverapp, kernel_id, "x = 42")
    second = await report_until(jp_fetch, kernel_id, {"saved"},
                                not_commit=first["commit_id"])
    # Nothing new: no more background checkpoints.
    await asyncio.sleep(1.5)
    _, same = await call(jp_fetch, "GET", "background", params={"kernel_id": kernel_id})
    assert same["commit_id"] == second["commit_id"], same

    # The kernel dies and restarts: offered the last background checkpoint.
    await call_api(jp_fetch, "POST", ["api", "kernels", kernel_id, "restart"], {})
    status, offer = await call(jp_fetch, "GET", "resume",
                               params={"kernel_id": kernel_id, "path": "work/a.ipynb"})
    assert status == 200 and offer["offer"] is True, offer["why"]
    assert offer["commit_id"] == second["commit_id"]
    status, resumed = await call(jp_fetch, "POST", "resume", {
        "kernel_id": kernel_id, "path": "work/a.ipynb", "commit_id": offer["commit_id"]})
    assert status == 200 and resumed["ok"], resumed
    assert await value_of(jp_serverapp, kernel_id, "(x, names)") == "(42, ['a', 'b'])"


@on_server_loop
async def test_a_cell_during_a_background_checkpoint_starts_at_once_and_a_move_does_not_wait(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    kernel_id = await attached(
        jp_fetch, jp_serverapp, jp_root_dir, "work/big.ipynb",
        "import numpy as np\n"
        "arrays = [np.random.default_rng(i).random(2**21) for i in range(24)]  # 384 MiB")
    running = await report_until(jp_fetch, kernel_id, {"running"})
    started = time.perf_counter()
    await run_cell(jp_serverapp, kernel_id, "t = 1")
    cell_ms = (time.perf_counter() - started) * 1000
    _, still = await call(jp_fetch, "GET", "background", params={"kernel_id": kernel_id})
    print(f"\na cell run during a background checkpoint of "
          f"{running['state_bytes'] / 2**20:.0f} MiB took {cell_ms:.0f} ms (the fork "
          f"{running['fork_ms']:.1f} ms); the checkpoint was {still['state']} after it")
    assert still["state"] == "running", still  # the cell did not wait for it
    # A move's checkpoint now: the background one is stopped, not waited for.
    started = time.perf_counter()
    status, saved = await call(jp_fetch, "POST", "checkpoint", {"kernel_id": kernel_id})
    assert status == 200, saved
    _, after = await call(jp_fetch, "GET", "background", params={"kernel_id": kernel_id})
    assert after["state"] == "cancelled", after
    print(f"the move's checkpoint took {time.perf_counter() - started:.1f} s")
    assert await value_of(jp_serverapp, kernel_id, "t") == "1"


@on_server_loop
async def test_a_state_over_the_bound_is_not_checkpointed_in_the_background(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    kernel_id = await attached(jp_fetch, jp_serverapp, jp_root_dir, "work/huge.ipynb",
                               "import numpy as np\nhuge = np.zeros(2**27)  # 1 GiB")
    skipped = await report_until(jp_fetch, kernel_id, {"skipped"})
    assert "1024 MiB" in skipped["why"] and "512 MiB" in skipped["why"], skipped
    assert skipped["max_state_mib"] == 512
    status, bad = await call(jp_fetch, "GET", "background", params={"kernel_id": "nope"})
    assert status == 404, bad

    # The user's own setting: off for them; never more often than the admin allows.
    status, applied = await call(jp_fetch, "PUT", "background", {"interval_seconds": 0})
    assert status == 200 and applied["interval_s"] == 0, applied
    _, off = await call(jp_fetch, "GET", "background", params={"kernel_id": kernel_id})
    assert off["state"] == "off" and "you turned" in off["why"], off
    status, applied = await call(jp_fetch, "PUT", "background", {"interval_seconds": 0.1})
    assert status == 200 and applied["interval_s"] == 1, applied  # the admin's 1 s
    status, applied = await call(jp_fetch, "PUT", "background", {"interval_seconds": None})
    assert status == 200 and applied["user_interval_s"] is None, applied
    for body in ({"interval_seconds": -1}, {"interval_seconds": "x"}, {"interval": 5},
                 {"interval_seconds": True}):
        status, answer = await call(jp_fetch, "PUT", "background", body)
        assert status == 400 and answer["error"] in ("invalid_field", "unknown_field"), \
            (body, answer)
