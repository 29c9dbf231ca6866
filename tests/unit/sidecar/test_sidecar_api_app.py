"""The API in process (aiohttp's test client), with a runner that records what it got."""

import asyncio
import json

import pytest
from sidecar_environ import environ_factory

from gpushift_sidecar.api import MAX_KERNELS, make_app
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.service import Sidecar
from gpushift_sidecar.state import Migration, Phase
from gpushift_sidecar.token import TOKEN_FILE


@pytest.fixture
def environ(tmp_path):
    return environ_factory(tmp_path)


class RecordingRunner:
    """Stands in for the migration steps: remembers what it was handed."""

    def __init__(self, fail: bool = False) -> None:
        self.started: list[Migration] = []
        self.fail = fail

    async def start(self, migration: Migration) -> None:
        await asyncio.sleep(0)  # a real runner awaits; concurrent requests interleave here
        self.started.append(migration)
        if self.fail:
            raise RuntimeError("no kube API")


@pytest.fixture
def make_client(aiohttp_client, environ):
    async def make(runner=None, **env_kwargs):
        env = SidecarEnv.from_environ(environ(**env_kwargs))
        sidecar = Sidecar.create(env, runner or RecordingRunner())
        assert sidecar.files.write_now()
        client = await aiohttp_client(make_app(sidecar))
        token = (env.runtime_dir / TOKEN_FILE).read_text().strip()
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client, sidecar

    return make


def move(env, target="gpu", **extra):
    nb = f"{env.workspace_dir or '/home/jovyan'}/work/train.ipynb"
    return {"target": target, "reason": "auto",
            "checkpoint": {"notebook_path": nb, "commit_id": "c-42"},
            "pending_cell": {"notebook_path": nb, "cell_id": "c7", "code": "x.cuda()"},
            **extra}


async def test_a_migration_is_persisted_then_handed_to_the_runner(make_client):
    client, sidecar = await make_client()
    r = await client.post("/migrations", json=move(sidecar.env))
    assert r.status == 202 and r.headers["Location"] == "/migrations/current"
    body = await r.json()
    assert body["phase"] == "requested" and body["profile"] == "nvidia-1"
    assert body["pending_cell"]["code"] == "x.cuda()"
    runner = sidecar.runner
    assert [m.id for m in runner.started] == [body["id"]]
    on_disk = json.loads(sidecar.tracker.store.path.read_text())
    assert on_disk["id"] == body["id"] and on_disk["phase"] == "requested"
    r = await client.get("/migrations/current")
    assert (await r.json()) == body
    config = await (await client.get("/runtime-config")).json()
    assert config["migration"]["id"] == body["id"] and config["migration"]["active"]
    assert config["lastCheckpoint"] == {"notebookPath": body["checkpoint"]["notebook_path"],
                                        "commitId": "c-42"}
    assert json.loads((sidecar.env.runtime_dir / "runtime-config.json").read_text()) == config


async def test_every_notebook_of_the_pod_has_its_checkpoint_in_the_move(make_client):
    client, sidecar = await make_client()
    workspace = sidecar.env.workspace_dir
    others = [{"notebook_path": f"{workspace}/work/{name}.ipynb", "commit_id": f"c-{name}"}
              for name in ("b", "c")]
    r = await client.post("/migrations", json=move(sidecar.env, other_checkpoints=others))
    body = await r.json()
    assert r.status == 202, body
    assert body["other_checkpoints"] == others
    [started] = sidecar.runner.started
    assert [ref.commit_id for ref in started.checkpoints] == ["c-42", "c-b", "c-c"]
    on_disk = json.loads(sidecar.tracker.store.path.read_text())
    assert on_disk["other_checkpoints"] == others


async def test_concurrent_requests_start_one_migration(make_client):
    client, sidecar = await make_client()
    answers = await asyncio.gather(*[client.post("/migrations", json=move(sidecar.env))
                                     for _ in range(8)])
    assert sorted(r.status for r in answers) == [202] + [409] * 7
    assert len(sidecar.runner.started) == 1
    conflict = await next(r for r in answers if r.status == 409).json()
    assert conflict["error"] == "migration_in_flight"
    assert conflict["migration"]["id"] == sidecar.runner.started[0].id


async def test_the_profile_defaults_and_same_kind_moves_are_409(make_client):
    client, sidecar = await make_client(gpu=("nvidia.com/gpu", 1))
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-1"))
    assert r.status == 409 and (await r.json())["error"] == "already_on_target"
    r = await client.post("/migrations", json=move(sidecar.env))  # default: nvidia-1
    assert r.status == 409
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-2"))
    assert r.status == 202 and (await r.json())["profile"] == "nvidia-2"


async def test_cpu_pod_cannot_move_to_cpu(make_client):
    client, sidecar = await make_client()
    r = await client.post("/migrations", json=move(sidecar.env, target="cpu"))
    assert r.status == 409 and (await r.json())["error"] == "already_on_target"
    assert sidecar.tracker.current is None


async def test_gpu_pod_moves_to_cpu_without_profile(make_client):
    client, sidecar = await make_client(gpu=("nvidia.com/gpu", 2))
    r = await client.post("/migrations", json=move(sidecar.env, target="cpu", reason="idle"))
    body = await r.json()
    assert r.status == 202 and body["profile"] is None and body["reason"] == "idle"


@pytest.mark.parametrize(("change", "error", "detail"), [
    ({"target": "tpu"}, "unknown_target", "'tpu' is not one of gpu, cpu"),
    ({"target": None}, "unknown_target", "None"),
    ({"reason": "because"}, "unknown_reason", "auto, manual, idle"),
    ({"profile": "a100"}, "unknown_profile", "nvidia-1, nvidia-2"),
    ({"profile": 1}, "invalid_field", "profile"),
    ({"pendingCell": None}, "unknown_field", "pendingCell"),
    ({"checkpoint": "c-42"}, "invalid_field", "checkpoint: must be an object"),
    ({"checkpoint": {"notebook_path": "train.ipynb", "commit_id": "c"}},
     "invalid_field", "not an absolute path"),
    ({"checkpoint": {"notebook_path": "/etc/passwd", "commit_id": "c"}},
     "invalid_field", "not under the workspace"),
    ({"checkpoint": {"notebook_path": "/WS/../../etc/x.ipynb", "commit_id": "c"}},
     "invalid_field", "not under the workspace"),
    ({"checkpoint": {"notebook_path": "/WS/a.ipynb", "commit_id": ""}},
     "invalid_field", "checkpoint.commit_id"),
    ({"checkpoint": {"notebook_path": "/WS/a.ipynb"}}, "invalid_field", "commit_id"),
    ({"checkpoint": {"notebook_path": "/WS/a.ipynb", "commit_id": "c", "x": 1}},
     "unknown_field", "checkpoint.x"),
    ({"pending_cell": {"notebook_path": "/WS/a.ipynb", "cell_id": "c"}},
     "invalid_field", "pending_cell.code"),
    ({"other_checkpoints": {"notebook_path": "/WS/b.ipynb", "commit_id": "c"}},
     "invalid_field", "other_checkpoints: must be a list"),
    ({"other_checkpoints": [{"notebook_path": "/WS/b.ipynb", "commit_id": "c"}] * 65},
     "invalid_field", "at most 64"),
    ({"other_checkpoints": ["c"]}, "invalid_field", "other_checkpoints[0]: must be an object"),
    ({"other_checkpoints": [{"notebook_path": "/etc/b.ipynb", "commit_id": "c"}]},
     "invalid_field", "other_checkpoints[0].notebook_path"),
    ({"other_checkpoints": [{"notebook_path": "/WS/b.ipynb", "commit_id": "c", "x": 1}]},
     "unknown_field", "other_checkpoints[0].x"),
    ({"other_checkpoints": [{"notebook_path": "/WS/work/train.ipynb", "commit_id": "c"}]},
     "invalid_field", "has a checkpoint in this move already"),
    ({"checkpoints_to_come": "yes"}, "invalid_field", "checkpoints_to_come: must be true"),
    ({"checkpoints_to_come": True}, "invalid_field", "name none now"),
    ({"other_checkpoints": [{"notebook_path": "/WS/b.ipynb", "commit_id": "c"},
                            {"notebook_path": "/WS/b.ipynb", "commit_id": "d"}]},
     "invalid_field", "other_checkpoints[1]"),
])
async def test_bad_migration_requests_are_400_and_change_nothing(make_client, change, error,
                                                                 detail):
    client, sidecar = await make_client()
    body = json.loads(json.dumps(move(sidecar.env, **change))
                      .replace("/WS", str(sidecar.env.workspace_dir)))
    r = await client.post("/migrations", json=body)
    answer = await r.json()
    assert r.status == 400, answer
    assert answer["error"] == error and detail in answer["detail"]
    assert sidecar.tracker.current is None and not sidecar.runner.started


async def test_a_checkpoint_needs_a_workspace(make_client):
    client, sidecar = await make_client(workspace=False)
    body = move(sidecar.env)
    r = await client.post("/migrations", json=body)
    assert r.status == 400 and (await r.json())["error"] == "no_workspace"
    r = await client.post("/migrations", json={**body, "checkpoint": None})
    assert r.status == 202


async def test_a_runner_that_cannot_start_fails_the_migration(make_client):
    client, sidecar = await make_client(runner=RecordingRunner(fail=True))
    r = await client.post("/migrations", json=move(sidecar.env))
    body = await r.json()
    assert r.status == 500 and body["error"] == "runner_failed"
    assert "no kube API" in body["detail"]
    assert sidecar.tracker.current.phase is Phase.FAILED
    assert (await client.post("/migrations", json=move(sidecar.env))).status != 409


async def test_resume_hands_an_unfinished_migration_back(make_client, environ):
    client, sidecar = await make_client()
    assert (await client.post("/migrations", json=move(sidecar.env))).status == 202
    restarted = Sidecar.create(SidecarEnv.from_environ(environ()), RecordingRunner())
    await restarted.resume()
    assert [m.id for m in restarted.runner.started] == [sidecar.tracker.current.id]
    restarted.tracker.advance(restarted.tracker.current.id, Phase.FAILED, error="x")
    again = Sidecar.create(SidecarEnv.from_environ(environ()), RecordingRunner())
    await again.resume()
    assert again.runner.started == []  # an ended migration is not resumed


async def test_activity_is_recorded_per_kernel(make_client):
    client, sidecar = await make_client()
    r = await client.post("/activity", json={"gpu_cell_running": True, "kernel_id": "k1"})
    assert r.status == 204
    r = await client.post("/activity", json={"gpu_cell_running": False, "kernel_id": "k1",
                                             "gpu_cell_finished_at": 1700000000})
    assert r.status == 204
    report = sidecar.activity["k1"]
    assert report.gpu_cell_running is False and report.gpu_cell_finished_at == 1.7e9
    for i in range(MAX_KERNELS + 5):
        await client.post("/activity", json={"gpu_cell_running": False, "kernel_id": f"n{i}"})
    assert len(sidecar.activity) == MAX_KERNELS and "k1" not in sidecar.activity


async def test_the_servers_view_of_its_kernels_holds_the_idle_timer(make_client):
    """The server extension's periodic report names the busy kernels: no idle move
    while one runs a cell, whatever the tabs said."""
    client, sidecar = await make_client()
    r = await client.post("/activity", json={
        "gpu_cell_running": False, "kernel_id": "gpushift-server-extension",
        "busy_kernels": ["k1"], "gpu_cells_running": []})
    assert r.status == 204
    report = sidecar.activity["gpushift-server-extension"]
    assert report.busy_kernels == frozenset({"k1"}) and report.gpu_cells_running == frozenset()


@pytest.mark.parametrize("body", [
    {"kernel_id": "k"},
    {"gpu_cell_running": "yes", "kernel_id": "k"},
    {"gpu_cell_running": True},
    {"gpu_cell_running": True, "kernel_id": ""},
    {"gpu_cell_running": True, "kernel_id": "k", "gpu_cell_finished_at": "now"},
    {"gpu_cell_running": True, "kernel_id": "k", "gpu_cell_finished_at": True},
    {"gpu_cell_running": True, "kernel_id": "k", "busy": True},
    {"gpu_cell_running": False, "kernel_id": "k", "busy_kernels": ["a"]},
    {"gpu_cell_running": False, "kernel_id": "k", "busy_kernels": "a",
     "gpu_cells_running": []},
    {"gpu_cell_running": False, "kernel_id": "k", "busy_kernels": [""],
     "gpu_cells_running": []},
    {"gpu_cell_running": False, "kernel_id": "k", "busy_kernels": [],
     "gpu_cells_running": [7]},
    {"gpu_cell_running": False, "kernel_id": "k", "busy_kernels": ["k"] * 257,
     "gpu_cells_running": []},
])
async def test_bad_activity_is_400(make_client, body):
    client, sidecar = await make_client()
    r = await client.post("/activity", json=body)
    assert r.status == 400 and (await r.json())["detail"]
    assert sidecar.activity == {}


async def test_metrics_count_requests_migrations_and_writes(make_client):
    client, sidecar = await make_client()
    await client.post("/migrations", json=move(sidecar.env))
    await client.post("/migrations", json=move(sidecar.env))
    migration = sidecar.tracker.current
    for phase in (Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING):
        sidecar.tracker.advance(migration.id, phase)
    sidecar.tracker.advance(migration.id, Phase.ROLLED_BACK, error="no GPU")
    await client.get("/runtime-config", headers={"Authorization": "Bearer wrong"})
    text = await (await client.get("/metrics")).text()
    lines = set(text.splitlines())
    assert ('gpushift_sidecar_migrations_requested_total{reason="auto",target="gpu"} 1.0'
            in lines)
    assert ('gpushift_sidecar_migrations_total{outcome="rolled_back",reason="auto",'
            'target="gpu"} 1.0' in lines)
    assert 'gpushift_sidecar_migration_phase{phase="rolled_back"} 1.0' in lines
    assert 'gpushift_sidecar_migration_phase{phase="requested"} 0.0' in lines
    assert ('gpushift_sidecar_migration_phase_duration_seconds_count{phase="checkpointing"} 1.0'
            in lines)
    assert 'gpushift_sidecar_api_requests_total{route="/migrations",status="202"} 1.0' in lines
    assert 'gpushift_sidecar_api_requests_total{route="/migrations",status="409"} 1.0' in lines
    assert ('gpushift_sidecar_api_requests_total{route="/runtime-config",status="403"} 1.0'
            in lines)
    writes = next(line for line in lines
                  if line.startswith('gpushift_sidecar_runtime_config_writes_total{outcome="ok"}'))
    assert float(writes.split()[1]) >= 6  # start, new migration, four phase changes


async def test_a_server_type_kept_off_refuses_moves_and_says_so(make_client):
    client, sidecar = await make_client()
    idle = sidecar.idle
    idle.apply_server_type("group-one", idle.clock())  # VSCode: not in server_types.inject
    r = await client.post("/migrations", json=move(sidecar.env))
    body = await r.json()
    assert r.status == 409 and body["error"] == "optimizer_off", body
    assert "'group-one'" in body["detail"] and body["server_type"] == "group-one"
    assert not sidecar.runner.started
    config = await (await client.get("/runtime-config")).json()
    assert config["optimizerOff"] == body["detail"]
    idle.apply_server_type("jupyter", idle.clock())
    assert "optimizerOff" not in await (await client.get("/runtime-config")).json()
    assert (await client.post("/migrations", json=move(sidecar.env))).status == 202


async def test_only_an_authenticated_write_registers_the_notebook_side(make_client):
    client, _ = await make_client(gpu=("nvidia.com/gpu", 1))

    async def registered() -> bool:
        snap = await (await client.get("/idle")).json()
        return bool(snap["notebook_side_registered"])

    assert not await registered()
    assert (await client.get("/checkpoints")).status == 200  # reads register nothing
    r = await client.post("/activity", json={"kernel_id": "k", "gpu_cell_running": False},
                          headers={"Authorization": "Bearer wrong"})
    assert r.status == 403
    assert not await registered()
    r = await client.post("/activity", json={"kernel_id": "k", "gpu_cell_running": False})
    assert r.status == 204
    assert await registered()
    assert (await (await client.get("/idle")).json())["state"] == "active"
