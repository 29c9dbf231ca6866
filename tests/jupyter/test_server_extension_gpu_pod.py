"""The server extension on a GPU pod: it reports to the sidecar by itself, so the
sidecar's idle timer (which runs only once the notebook side has registered) starts
without any kernel or browser. No GPU here: NVML gives no sample, and the report says
so (null) — it still registers the extension."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
import test_sidecar_api as sidecar_base  # the real sidecar process, as its own tests
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_server_extension import call, call_api, on_server_loop, server_config


@pytest.fixture
def sidecar(tmp_path: Path, jp_root_dir: Path) -> Any:
    running = sidecar_base.start_sidecar(tmp_path, workspace_dir=jp_root_dir,
                                         gpu=("nvidia.com/gpu", 1))
    yield running
    assert sidecar_base.stop(running) == 0
    assert "Traceback" not in running.logs()


@pytest.fixture
def jp_server_config(sidecar: Any) -> dict[str, Any]:
    # A heartbeat longer than any test here: every report they see is one the extension
    # sent because what it saw changed (a kernel went busy or idle, a GPU cell ended).
    return server_config(sidecar, activity_interval=60, idle_watch_interval=0)


def sidecar_idle(sidecar: Any) -> dict[str, Any]:
    request = urllib.request.Request(sidecar.url + "/idle", headers=sidecar.auth())
    with urllib.request.urlopen(request, timeout=5) as answer:
        return dict(json.loads(answer.read()))


@on_server_loop
async def test_the_extension_registers_with_the_sidecar_of_a_gpu_pod(jp_fetch, sidecar):
    status, doc = await call(jp_fetch, "GET")  # the server, and the extension, are up
    assert status == 200 and doc["usingGPU"] is True and doc["optimizer"]["state"] == "on"
    deadline = time.monotonic() + 10
    snap = await asyncio.to_thread(sidecar_idle, sidecar)
    while not snap["notebook_side_registered"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # on the server's loop: the extension's report runs
        snap = await asyncio.to_thread(sidecar_idle, sidecar)
    assert snap["notebook_side_registered"] is True, sidecar.logs()[-2000:]
    assert snap["state"] == "active"
    assert snap["gpu_utilization"] is None  # NVML measured nothing: nothing was claimed


async def idle_when(sidecar: Any, check: Any, timeout: float) -> dict[str, Any]:
    """The sidecar's `GET /idle` once `check` holds (on the server's loop, so the
    extension's reports go on meanwhile)."""
    deadline = time.monotonic() + timeout
    snap = await asyncio.to_thread(sidecar_idle, sidecar)
    while not check(snap) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        snap = await asyncio.to_thread(sidecar_idle, sidecar)
    assert check(snap), (snap, sidecar.logs()[-2000:])
    return snap


@on_server_loop
async def test_a_busy_kernel_holds_the_idle_timer_with_no_browser(jp_fetch, jp_serverapp,
                                                                  sidecar):
    """A long non-GPU cell in a real kernel, no browser and no tab's report: the
    extension's view (the kernel's own execution state) tells the sidecar the kernel is
    busy, and its idle timer does not run; when the cell ends, the timer starts over."""
    _, kernel = await call_api(jp_fetch, "POST", ["api", "kernels"], {})
    client = jp_serverapp.kernel_manager.get_kernel(kernel["id"]).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        client.execute("import time\ntime.sleep(4)")
        snap = await idle_when(sidecar, lambda s: s["kernels_busy"] == 1, 15)
        assert snap["state"] == "active" and snap["idle_for"] == 0.0
        assert "no idle move while a kernel is busy" in snap["reason"]
        reply = await client.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "ok"
        ended = time.time()
        snap = await idle_when(sidecar, lambda s: s["kernels_busy"] == 0, 15)
        assert snap["state"] == "active" and snap["gpu_cells_running"] == 0
        # The timer started over when the kernel went idle, reported at once (not a
        # heartbeat later): the change is looked for every 0.5 s.
        assert ended - 0.1 <= snap["idle_since"] <= ended + 1.5, snap
    finally:
        client.stop_channels()
        await call_api(jp_fetch, "DELETE", ["api", "kernels", kernel["id"]], None)


@on_server_loop
async def test_a_closed_tabs_gpu_cell_ends_when_its_kernel_is_idle(jp_fetch, sidecar,
                                                                   monkeypatch):
    """A tab said its GPU cell was running, then closed before saying it ended: the
    kernel is idle, so after the grace the extension's view ends the cell and the GPU is
    no longer held by it."""
    from gpushift_jupyter import kernels

    monkeypatch.setattr(kernels, "GPU_REPORT_GRACE_SECONDS", 1.0)
    _, kernel = await call_api(jp_fetch, "POST", ["api", "kernels"], {})
    try:
        status, _ = await call(jp_fetch, "POST", "activity",
                               {"kernel_id": kernel["id"], "gpu_cell_running": True})
        assert status == 204
        snap = await idle_when(sidecar, lambda s: s["gpu_cells_running"] == 1, 10)
        assert snap["state"] == "active"
        snap = await idle_when(sidecar, lambda s: s["gpu_cells_running"] == 0, 15)
        assert snap["state"] == "active" and snap["reason"].endswith("a GPU cell finished")
    finally:
        await call_api(jp_fetch, "DELETE", ["api", "kernels", kernel["id"]], None)
