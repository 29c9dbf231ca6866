"""`GET /<base_url>/api_extension/profiles` through the real in-process Jupyter server
(`jp_fetch`) and the real `gpushift-sidecar` process of a GPU pod behind it: the sidecar's
answer passed through in the UI's contract. This sidecar has no Kubernetes API and its
settings name no capacity ConfigMap, so what is free is unknown (null, with the
`capacityNote`) and no quota is known; the published numbers, the quota and
`no_free_gpu` are the cluster test's (tests/cluster/test_capacity_cluster.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
import test_sidecar_api as sidecar_base  # the real sidecar process, as its own tests
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_server_extension import call, on_server_loop, server_config

KEYS = {"name", "resource", "count", "gpuType", "free", "largestFree", "nodes", "quotaLeft",
        "current", "available", "why"}


@pytest.fixture
def sidecar(tmp_path: Path, jp_root_dir: Path) -> Any:
    running = sidecar_base.start_sidecar(tmp_path, workspace_dir=jp_root_dir,
                                         gpu=("nvidia.com/gpu", 1))
    yield running
    sidecar_base.stop(running)
    assert "Traceback" not in running.logs()


@pytest.fixture
def jp_server_config(sidecar: Any) -> dict[str, Any]:
    return server_config(sidecar, activity_interval=60, idle_watch_interval=0)


@on_server_loop
async def test_profiles_in_the_pickers_contract(jp_fetch, sidecar):
    status, doc = await call(jp_fetch, "GET", "profiles")
    assert status == 200, doc
    assert set(doc) == {"default", "current", "capacityAt", "capacityNote", "profiles"}
    assert doc["default"] == "nvidia-1" and doc["current"] == "nvidia-1"
    assert doc["capacityAt"] is None
    assert "not published" in doc["capacityNote"]
    one, two = doc["profiles"]
    assert set(one) == set(two) == KEYS
    assert one == {"name": "nvidia-1", "resource": "nvidia.com/gpu", "count": 1,
                   "gpuType": None, "free": None, "largestFree": None, "nodes": None,
                   "quotaLeft": None, "current": True, "available": False,
                   "why": "This notebook runs on nvidia-1 already."}
    assert two["name"] == "nvidia-2" and two["count"] == 2 and two["current"] is False
    assert two["available"] is True and two["why"] is None and two["free"] is None


@on_server_loop
async def test_a_sidecar_that_does_not_answer_is_a_json_503(jp_fetch, sidecar):
    sidecar_base.stop(sidecar)
    status, answer = await call(jp_fetch, "GET", "profiles")
    assert status == 503 and answer["error"] == "sidecar_unavailable", answer
