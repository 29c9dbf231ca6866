"""The idle timer and the checkpoint registry of the real `gpushift-sidecar` process.

There is no GPU here: the sidecar gets the env of a GPU pod (GPUSHIFT_GPU_RESOURCE
nvidia.com/gpu, count 1) from a fake webhook, and NVML finds no GPU (the sample is None,
so only the activity reports count). The admin's idle settings are short (timeout 4 s,
bounds [3 s, 10 s], warning 2 s) and the timer ticks every 0.1 s. No Kubernetes
configuration: the idle move starts, and fails at the patch.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import test_sidecar_api as base

from gpushift_core.admin_settings import GpuProfile, IdleSettings
from gpushift_webhook.config import WebhookConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "sidecar"))
from test_checkpoint_database import add_commit, make_db  # kishu's db layout, as the unit tests

IDLE = IdleSettings(timeout_seconds=4, min_seconds=3, max_seconds=10, warning_seconds=2)
SETTINGS = WebhookConfig(profiles=[GpuProfile(name="nvidia-1")], default_profile="nvidia-1",
                         idle=IDLE)
TICK = 0.1


def start(tmp: Path, gpu: tuple[str, int] | None = ("nvidia.com/gpu", 1), *,
          settings: WebhookConfig = SETTINGS,
          extra_env: dict[str, str] | None = None) -> base.Sidecar:
    """A real `gpushift-sidecar serve` with a fast idle tick, once it answers /healthz."""
    port = base.free_port()
    runtime_dir, workspace_dir = tmp / "run", tmp / "ws"
    workspace_dir.mkdir(parents=True, exist_ok=True)
    env = base.sidecar_environ(tmp, port, runtime_dir, workspace_dir, gpu)
    env["GPUSHIFT_SETTINGS"] = settings.sidecar_settings_json
    env["KUBECONFIG"] = str(tmp / "no-kubeconfig")  # never the machine's own cluster
    env.update(extra_env or {})
    log = tmp / f"sidecar-{port}.log"
    process = subprocess.Popen(base.sidecar_command("serve", "--idle-tick", str(TICK)),
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    sidecar = base.Sidecar(f"http://127.0.0.1:{port}", port, runtime_dir, workspace_dir, env,
                           process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    if process.poll() is not None or not base.wait_for_health(sidecar, 200, timeout=20):
        base.stop(sidecar)
        raise AssertionError(sidecar.logs())
    return sidecar


@pytest.fixture
def gpu_sidecar(tmp_path: Path) -> Iterator[base.Sidecar]:
    running = start(tmp_path)
    yield running
    assert base.stop(running) == 0
    assert "Traceback" not in running.logs()


async def wait_until(what: str, check: Any, timeout: float, sidecar: base.Sidecar) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s:\n{sidecar.logs()[-3000:]}")


async def test_idle_warns_stays_and_moves_to_cpu_on_a_fake_gpu_env(gpu_sidecar, tmp_path):
    sc = gpu_sidecar
    async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
        async def idle() -> dict[str, Any]:
            async with s.get("/idle") as r:
                assert r.status == 200
                return dict(await r.json())

        async def activity(**body: Any) -> None:
            async with s.post("/activity", json={"kernel_id": "k1", **body}) as r:
                assert r.status == 204, await r.text()

        # -- a notebook with kishu attached: its latest commit is known
        train = sc.workspace_dir / "work" / "train.ipynb"
        db = make_db(train)
        add_commit(db, "c-1")
        async with s.post("/notebooks", json={"path": str(train)}) as r:
            assert r.status == 200, await r.text()
            registered = await r.json()
        assert registered["checkpoint"]["commit_id"] == "c-1"
        assert registered["watch"] in ("inotify", "polling")
        assert sc.runtime_config()["lastCheckpoint"]["commitId"] == "c-1"
        add_commit(db, "c-2")  # the next cell: the watcher sees it land

        async def on_disk_c2() -> bool:
            last = sc.runtime_config()["lastCheckpoint"]
            return bool(last["commitId"] == "c-2" and last["notebookPath"] == str(train)
                        and last["verifiedAt"].endswith("Z"))

        await wait_until("lastCheckpoint c-2", on_disk_c2, 5, sc)
        async with s.get("/checkpoints") as r:
            listing = await r.json()
        assert listing["latest"]["commit_id"] == "c-2"
        assert [n["notebook_path"] for n in listing["notebooks"]] == [str(train)]

        # -- a running GPU cell holds the GPU past the warning's start
        first = await idle()
        assert first["state"] == "active" and first["timeout"] == 4
        assert first["timeout_source"] == "default" and first["warning_seconds"] == 2
        await activity(gpu_cell_running=True)
        time.sleep(2.5)
        held = await idle()
        assert held["state"] == "active" and held["gpu_cells_running"] == 1
        assert held["idle_for"] == 0
        finished = time.time()
        await activity(gpu_cell_running=False, gpu_cell_finished_at=finished)

        # -- idle: the warning shows 2 s before the move, in the API and the file
        async def warning() -> dict[str, Any] | None:
            snap = await idle()
            return snap if snap["state"] == "warning" else None

        warned = await wait_until("warning", warning, 4, sc)
        assert 1.9 <= time.time() - finished < 3.5
        assert warned["warning_until"] == pytest.approx(finished + 4, abs=0.01)
        assert sc.runtime_config()["idle"]["state"] == "warning"

        # -- "stay on GPU": a fresh timeout; a second stay has no warning to answer
        async with s.post("/idle/stay") as r:
            assert r.status == 204
        stayed = await idle()
        assert stayed["state"] == "active" and stayed["idle_for"] < 0.5
        assert "stay" in stayed["reason"]
        assert sc.runtime_config()["idle"]["state"] == "active"
        async with s.post("/idle/stay") as r:
            assert r.status == 409
            body = await r.json()
            assert body["error"] == "not_warning" and body["idle"]["state"] == "active"

        # -- utilisation measured by the server extension: over the threshold is work
        time.sleep(1.0)
        await activity(gpu_cell_running=False, gpu_utilization_percent=60)
        busy = await idle()
        assert busy["idle_for"] < 0.5
        assert busy["gpu_utilization"]["source"] == "server-extension"
        await activity(gpu_cell_running=False, gpu_utilization_percent=1)  # under 5 %
        time.sleep(0.5)
        assert (await idle())["idle_for"] >= 0.5
        last_work = time.time() - (await idle())["idle_for"]

        # -- nobody acts: warning, then the move to CPU with the newest checkpoint
        await wait_until("second warning", warning, 4, sc)

        async def idle_migration() -> dict[str, Any] | None:
            async with s.get("/migrations/current") as r:
                return dict(await r.json()) if r.status == 200 else None

        moved = await wait_until("idle migration", idle_migration, 4, sc)
        assert time.time() - last_work >= 4
        assert moved["reason"] == "idle" and moved["target"] == "cpu"
        assert moved["checkpoint"] == {"notebook_path": str(train), "commit_id": "c-2"}
        assert moved["pending_cell"] is None and moved["profile"] is None
        assert "no GPU work for 4s on 1 GPU(s) (nvidia.com/gpu)" in moved["notes"][0]

        async def failed() -> dict[str, Any] | None:
            m = await idle_migration()
            return m if m and m["phase"] == "failed" else None

        ended = await wait_until("failed at the patch", failed, 5, sc)
        assert [h["phase"] for h in ended["history"]] == [
            "requested", "checkpointing", "checkpointed", "patching", "failed"]
        assert "cannot patch the Notebook: no Kubernetes API configuration" in ended["error"]

        # -- the failed move starts the timer over (a later timeout tries again)
        async def restarted() -> dict[str, Any] | None:
            snap = await idle()
            return snap if snap["state"] == "active" and "idle move ended" in (
                snap["reason"] or "") else None

        again = await wait_until("timer restarted", restarted, 3, sc)
        assert again["migration"] is None
        async with s.get("/metrics") as r:
            metrics = await r.text()
    assert ('gpushift_sidecar_migrations_requested_total{reason="idle",target="cpu"} 1.0'
            in metrics)
    assert 'gpushift_sidecar_idle_state{state="active"} 1.0' in metrics
    assert 'gpushift_sidecar_idle_state{state="warning"} 0.0' in metrics
    lines = [json.loads(line) for line in sc.logs().splitlines()]
    messages = [line["msg"] for line in lines]
    assert "idle warning" in messages[:messages.index("idle move started")]


async def test_registration_and_idle_answers_on_a_cpu_pod(tmp_path):
    sc = start(tmp_path, gpu=None)
    try:
        async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
            async with s.get("/idle") as r:
                snap = await r.json()
                assert r.status == 200 and snap["state"] == "inert"
                assert "not a GPU pod" in snap["reason"]
            async with s.post("/idle/stay") as r:
                assert r.status == 409 and (await r.json())["error"] == "not_warning"
            for body, error in [
                    ({"path": "/etc/passwd.ipynb"}, "invalid_field"),
                    ({"path": "work/train.ipynb"}, "invalid_field"),
                    ({"path": str(sc.workspace_dir / ".." / "x.ipynb")}, "invalid_field"),
                    ({"notebook": "x"}, "unknown_field"),
                    ({}, "invalid_field")]:
                async with s.post("/notebooks", json=body) as r:
                    answer = await r.json()
                    assert r.status == 400 and answer["error"] == error, (body, answer)
            async with s.post("/activity", json={"kernel_id": "k", "gpu_cell_running": False,
                                                 "gpu_utilization_percent": 150}) as r:
                assert r.status == 400
            # A notebook without a kishu database yet: watched, no checkpoint.
            nb = sc.workspace_dir / "fresh.ipynb"
            nb.write_text("{}")
            async with s.post("/notebooks", json={"path": str(nb)}) as r:
                assert r.status == 200
                assert (await r.json())["checkpoint"] is None
            async with s.get("/checkpoints") as r:
                listing = await r.json()
                assert listing["latest"] is None
                assert listing["notebooks"][0]["notebook_path"] == str(nb)
        async with aiohttp.ClientSession(base_url=sc.url) as s:
            for method, path in [("GET", "/idle"), ("POST", "/idle/stay"),
                                 ("POST", "/notebooks"), ("GET", "/checkpoints")]:
                async with s.request(method, path, json={}) as r:
                    assert r.status == 401, path
        assert "idle" not in sc.runtime_config()  # no idle timer on a CPU pod
    finally:
        assert base.stop(sc) == 0
    assert "Traceback" not in sc.logs()


async def test_user_idle_timeout_is_clamped_into_the_admins_bounds(gpu_sidecar):
    sc = gpu_sidecar
    assert sc.runtime_config()["idleBounds"] == {
        "timeout_seconds": 4, "min_seconds": 3, "max_seconds": 10, "warning_seconds": 2}
    async with aiohttp.ClientSession(base_url=sc.url, headers=sc.auth()) as s:
        async def put(body: Any) -> tuple[int, dict[str, Any]]:
            async with s.put("/idle/timeout", json=body) as r:
                return r.status, dict(await r.json())

        status, snap = await put({"seconds": 8})
        assert status == 200 and snap["timeout"] == 8 and snap["timeout_source"] == "user"
        assert sc.runtime_config()["idle"]["timeout"] == 8
        status, snap = await put({"seconds": 600})  # over the admin's max: clamped
        assert status == 200 and snap["timeout"] == 10
        assert "outside the admin's bounds" in snap["reason"]
        status, snap = await put({"seconds": None})  # back to the admin's default
        assert status == 200 and snap["timeout"] == 4 and snap["timeout_source"] == "default"
        for body in [{}, {"seconds": "5m"}, {"seconds": 0}, {"seconds": True},
                     {"seconds": 5, "extra": 1}]:
            status, answer = await put(body)
            assert status == 400 and answer["error"] in ("invalid_field", "unknown_field"), body
        status, snap = await put({"seconds": None})
        assert snap["timeout"] == 4  # a refused request changed nothing
