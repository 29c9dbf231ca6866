"""Only what gpushift can see, in the real `gpushift-sidecar serve` process: the idle
timer of a GPU pod waits for the notebook side to register, and a move to GPU of an
image with no CUDA pair is refused at once (409) before anything is checkpointed.

No GPU and no Kubernetes configuration here: the sidecar gets a GPU pod's env (NVML
finds no GPU, so only the API's reports count), as in test_sidecar_idle_api.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import aiohttp
import test_sidecar_api as base
import test_sidecar_idle_api as idle_api

from gpushift_core.admin_settings import GpuProfile, IdleSettings, ImagePair
from gpushift_webhook.config import WebhookConfig

CPU, CUDA = "gpushift/gpushift-notebook:0.1.0-cpu", "gpushift/gpushift-notebook:0.1.0-cuda"
SETTINGS = WebhookConfig(
    profiles=[GpuProfile(name="nvidia-1")], default_profile="nvidia-1",
    image_map=[ImagePair(cpu=CPU, cuda=CUDA)], unmapped_image="refuse",
    idle=IdleSettings(timeout_seconds=3, min_seconds=3, max_seconds=10, warning_seconds=1))


def start(tmp: Path, image: str, gpu: tuple[str, int] | None) -> base.Sidecar:
    return idle_api.start(tmp, gpu, settings=SETTINGS,
                          extra_env={"GPUSHIFT_NOTEBOOK_IMAGE": image})


async def test_a_move_to_gpu_of_an_unmapped_image_is_refused_at_once(tmp_path):
    sc = start(tmp_path, "kubeflownotebookswg/jupyter-scipy:v1.9.2", gpu=None)
    try:
        async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
            started = time.monotonic()
            async with s.post("/migrations", json={"target": "gpu", "reason": "manual"}) as r:
                answer: dict[str, Any] = await r.json()
                assert r.status == 409, answer
            assert time.monotonic() - started < 2
            assert answer["error"] == "image_unmapped" and answer["keep_allowed"] is False
            assert answer["image"] == "kubeflownotebookswg/jupyter-scipy:v1.9.2"
            assert answer["setting"] == "unmapped_image"
            assert "jupyter-scipy:v1.9.2 has no CUDA image" in answer["detail"]
            assert "unmapped_image: refuse" in answer["detail"]
            # Nothing started: no migration, nothing in runtime-config.json.
            async with s.get("/migrations/current") as r:
                assert r.status == 404
        assert sc.runtime_config()["migration"] is None
    finally:
        assert base.stop(sc) == 0
    assert "Traceback" not in sc.logs()


async def test_under_ask_the_user_may_move_an_unmapped_image_keeping_it(tmp_path):
    """`unmapped_image: ask` (the default): 409 with keep_allowed, nothing started; the
    same request with keep_image starts the move, and the migration records the choice."""
    settings = dataclasses.replace(SETTINGS, unmapped_image="ask")
    sc = idle_api.start(tmp_path, None, settings=settings, extra_env={
        "GPUSHIFT_NOTEBOOK_IMAGE": "kubeflownotebookswg/jupyter-scipy:v1.9.2"})
    try:
        async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
            body = {"target": "gpu", "reason": "manual"}
            async with s.post("/migrations", json=body) as r:
                answer: dict[str, Any] = await r.json()
                assert r.status == 409, answer
            assert (answer["error"], answer["keep_allowed"], answer["profile"]) == (
                "image_unmapped", True, "nvidia-1")
            assert "Move anyway, keeping this image" in answer["detail"]
            async with s.get("/migrations/current") as r:
                assert r.status == 404
            async with s.post("/migrations", json={**body, "keep_image": True}) as r:
                started: dict[str, Any] = await r.json()
                assert r.status in (201, 202), started
            assert started["keep_image"] is True and started["target"] == "gpu"
    finally:
        base.stop(sc)
    assert "Traceback" not in sc.logs()


async def test_the_idle_timer_waits_for_the_notebook_side(tmp_path):
    sc = start(tmp_path, CUDA, gpu=("nvidia.com/gpu", 1))
    try:
        async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
            async def idle() -> dict[str, Any]:
                async with s.get("/idle") as r:
                    assert r.status == 200
                    return dict(await r.json())

            first = await idle()
            assert first["state"] == "inert" and first["notebook_side_registered"] is False
            assert first["reason"].startswith("notebook side not registered")
            time.sleep(3 * 1.5)  # past the 3 s timeout: nothing happens, reads change nothing
            still = await idle()
            assert still["state"] == "inert" and still["notebook_side_registered"] is False
            async with s.get("/migrations/current") as r:
                assert r.status == 404
            assert sc.runtime_config()["idle"]["state"] == "inert"
            # The server extension's first report: the timer starts from then.
            async with s.post("/activity", json={"kernel_id": "k1",
                                                 "gpu_cell_running": False}) as r:
                assert r.status == 204
            registered = await idle()
            assert registered["state"] == "active"
            assert registered["notebook_side_registered"] is True
            assert registered["idle_for"] < 1
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                async with s.get("/migrations/current") as r:
                    if r.status == 200:
                        moved = await r.json()
                        break
                time.sleep(0.1)
            else:
                raise AssertionError(sc.logs()[-3000:])
            assert (moved["reason"], moved["target"]) == ("idle", "cpu")
    finally:
        assert base.stop(sc) == 0
    assert "Traceback" not in sc.logs()


async def test_a_profile_whose_memory_request_is_above_the_notebooks_limit_is_refused_at_once(
        tmp_path):
    """A profile that raises the memory request past the CPU pod's own limit: 409
    `profile_over_limit` from the container as the webhook saw it, nothing started; a
    profile that sets the limit too moves."""
    greedy = GpuProfile(name="greedy", resources={"requests": {"memory": "4Gi"}})
    fitting = GpuProfile(name="fitting", resources={"requests": {"memory": "4Gi"},
                                                    "limits": {"memory": "8Gi"}})
    settings = dataclasses.replace(SETTINGS, profiles=[greedy, fitting],
                                   default_profile="greedy")
    resources = '{"limits": {"memory": "2Gi"}, "requests": {"memory": "1Gi"}}'
    sc = idle_api.start(tmp_path, None, settings=settings, extra_env={
        "GPUSHIFT_NOTEBOOK_IMAGE": CPU, "GPUSHIFT_NOTEBOOK_RESOURCES": resources})
    try:
        async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
            answer = await _refused(s, {"target": "gpu", "reason": "manual"})
            assert (answer["error"], answer["profile"]) == ("profile_over_limit", "greedy")
            assert "memory request (4Gi) would be above its limit (2Gi)" in answer["detail"]
            body = {"target": "gpu", "reason": "manual", "profile": "fitting"}
            async with s.post("/migrations", json=body) as r:
                started: dict[str, Any] = await r.json()
                assert r.status in (201, 202), started
    finally:
        base.stop(sc)
    assert "Traceback" not in sc.logs()


async def _refused(session: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    """POST /migrations answered 409, and nothing started."""
    async with session.post("/migrations", json=body) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status == 409, answer
    async with session.get("/migrations/current") as r:
        assert r.status == 404
    return answer
