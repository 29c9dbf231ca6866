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
from test_server_extension import call, on_server_loop


@pytest.fixture
def sidecar(tmp_path: Path, jp_root_dir: Path) -> Any:
    running = sidecar_base.start_sidecar(tmp_path, workspace_dir=jp_root_dir,
                                         gpu=("nvidia.com/gpu", 1))
    yield running
    assert sidecar_base.stop(running) == 0
    assert "Traceback" not in running.logs()


@pytest.fixture
def jp_server_config(sidecar: Any) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"gpushift_jupyter": True}},
            "GpushiftExtension": {"runtime_dir": str(sidecar.runtime_dir),
                                  "sidecar_url": sidecar.url,
                                  "utilization_interval": 0.2, "idle_watch_interval": 0}}


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
