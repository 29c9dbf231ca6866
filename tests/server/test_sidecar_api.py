"""The real `gpushift-sidecar` process: files, token, API, restarts, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from gpushift_testing.processes import stop_process

from gpushift_core.admin_settings import CheckpointSettings, GpuProfile
from gpushift_webhook.config import WebhookConfig

SIDECAR_SRC = Path(__file__).resolve().parents[2] / "sidecar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sidecar:
    url: str
    port: int
    runtime_dir: Path
    workspace_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text()

    def token(self) -> str:
        return (self.runtime_dir / "api-token").read_text().strip()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def runtime_config(self) -> dict:
        return json.loads((self.runtime_dir / "runtime-config.json").read_text())


def sidecar_environ(tmp: Path, port: int, runtime_dir: Path, workspace_dir: Path,
                    gpu: tuple[str, int] | None = None,
                    checkpoints: CheckpointSettings | None = None) -> dict[str, str]:
    """The env the webhook gives the sidecar (gpushift_webhook.injection)."""
    config = WebhookConfig(profiles=[GpuProfile(name="nvidia-1"),
                                     GpuProfile(name="nvidia-2", count=2)],
                           checkpoints=checkpoints or CheckpointSettings())
    path = os.pathsep.join(p for p in (str(SIDECAR_SRC), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1",
            "GPUSHIFT_POD_NAME": "my-notebook-0", "GPUSHIFT_POD_NAMESPACE": "kubeflow-user",
            "GPUSHIFT_POD_UID": "uid-1", "GPUSHIFT_NODE_NAME": "node-a",
            "GPUSHIFT_NOTEBOOK_NAME": "my-notebook", "GPUSHIFT_NOTEBOOK_CONTAINER": "my-notebook",
            "GPUSHIFT_GPU_RESOURCE": gpu[0] if gpu else "",
            "GPUSHIFT_GPU_COUNT": str(gpu[1] if gpu else 0),
            "GPUSHIFT_RUNTIME_DIR": str(runtime_dir),
            "GPUSHIFT_WORKSPACE_DIR": str(workspace_dir), "GPUSHIFT_API_PORT": str(port),
            "GPUSHIFT_SETTINGS": config.sidecar_settings_json, "TMPDIR": str(tmp)}


def sidecar_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpushift_sidecar.cli", *args]


def start_sidecar(tmp: Path, *, runtime_dir: Path | None = None,
                  workspace_dir: Path | None = None, port: int | None = None,
                  gpu: tuple[str, int] | None = None, wait_ready: bool = True,
                  checkpoints: CheckpointSettings | None = None) -> Sidecar:
    port = port or free_port()
    runtime_dir = runtime_dir or tmp / "run"
    workspace_dir = workspace_dir or tmp / "ws"
    workspace_dir.mkdir(exist_ok=True)
    env = sidecar_environ(tmp, port, runtime_dir, workspace_dir, gpu, checkpoints)
    log = tmp / f"sidecar-{port}-{time.monotonic_ns()}.log"
    process = subprocess.Popen(sidecar_command("serve"), stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, env=env)
    sidecar = Sidecar(f"http://127.0.0.1:{port}", port, runtime_dir, workspace_dir, env,
                      process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sidecar exited {process.returncode}:\n{sidecar.logs()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"sidecar did not listen:\n{sidecar.logs()}")
    if wait_ready:
        assert wait_for_health(sidecar, 200), sidecar.logs()
    return sidecar


def health(sidecar: Sidecar) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(sidecar.url + "/healthz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for_health(sidecar: Sidecar, status: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health(sidecar)[0] == status:
            return True
        time.sleep(0.05)
    return False


def wait_for_phase(sidecar: Sidecar, phase: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (sidecar.runtime_config().get("migration") or {}).get("phase") == phase:
            return True
        time.sleep(0.05)
    return False


def stop(sidecar: Sidecar) -> int:
    return stop_process(sidecar.process)


@pytest.fixture
def sidecar(tmp_path):
    running = start_sidecar(tmp_path)
    yield running
    assert stop(running) == 0  # SIGTERM: a graceful stop
    assert "Traceback" not in running.logs()


def migration_body(sidecar: Sidecar, **extra) -> dict:
    nb = str(sidecar.workspace_dir / "train.ipynb")
    return {"target": "gpu", "reason": "auto",
            "checkpoint": {"notebook_path": nb, "commit_id": "c-1"},
            "pending_cell": {"notebook_path": nb, "cell_id": "c7", "code": "x.cuda()"},
            **extra}


async def test_runtime_files_and_runtime_config(sidecar):
    mode = stat.S_IMODE((sidecar.runtime_dir / "api-token").stat().st_mode)
    assert mode == 0o600
    assert len(sidecar.token()) == 43
    doc = sidecar.runtime_config()
    assert doc["usingGPU"] is False and doc["PodName"] == "my-notebook-0"
    assert doc["PodNamespace"] == "kubeflow-user" and doc["notebook"] == "my-notebook"
    assert doc["gpu"] is None and doc["profile"] is None and doc["migration"] is None
    async with aiohttp.ClientSession(headers=sidecar.auth()) as s:
        async with s.get(sidecar.url + "/runtime-config") as r:
            assert r.status == 200 and await r.json() == doc
    lines = [json.loads(line) for line in sidecar.logs().splitlines()]
    assert any(line["msg"] == "runtime-config.json written" for line in lines)
    assert sidecar.token() not in sidecar.logs()


async def test_gpu_pod_runtime_config(tmp_path):
    running = start_sidecar(tmp_path, gpu=("nvidia.com/gpu", 2))
    try:
        doc = running.runtime_config()
        assert doc["usingGPU"] is True and doc["profile"] == "nvidia-2"
        assert doc["gpu"] == {"resource": "nvidia.com/gpu", "count": 2}
    finally:
        assert stop(running) == 0


async def test_healthz_is_ready_only_once_the_file_is_written(tmp_path):
    """Started with its runtime dir under a regular file (unwritable even for root): it
    stays up, unready, says why; once the dir can be made, it writes and is ready."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    running = start_sidecar(tmp_path, runtime_dir=blocker / "run", wait_ready=False)
    try:
        status, body = health(running)
        assert status == 503 and body["status"] == "not ready"
        assert str(blocker / "run") in body["detail"]
        time.sleep(1.5)  # several retries later: still alive, still unready
        assert running.process.poll() is None
        assert health(running)[0] == 503
        errors = [json.loads(line) for line in running.logs().splitlines()
                  if '"level":"error"' in line]
        assert errors and errors[0]["msg"] == "runtime files not written; retrying"
        assert str(blocker / "run") in errors[0]["why"]
        blocker.unlink()
        assert wait_for_health(running, 200, timeout=10), running.logs()
        assert running.runtime_config()["PodName"] == "my-notebook-0"
    finally:
        assert stop(running) == 0
    assert "Traceback" not in running.logs()


async def test_token_is_required(sidecar):
    async with aiohttp.ClientSession() as s:
        for method, path in [("GET", "/runtime-config"), ("POST", "/migrations"),
                             ("GET", "/migrations/current"), ("POST", "/activity"),
                             ("GET", "/metrics"), ("GET", "/nowhere")]:
            async with s.request(method, sidecar.url + path, json={}) as r:
                assert r.status == 401, path
                assert (await r.json())["error"] == "unauthorized"
            for header in ("Bearer wrong", f"Bearer {sidecar.token()[:-1]}"):
                async with s.request(method, sidecar.url + path, json={},
                                     headers={"Authorization": header}) as r:
                    assert r.status == 403, path
                    assert (await r.json())["error"] == "forbidden"
            async with s.request(method, sidecar.url + path, json={},
                                 headers={"Authorization": f"Basic {sidecar.token()}"}) as r:
                assert r.status == 401
        async with s.get(sidecar.url + "/healthz") as r:
            assert r.status == 200


@pytest.mark.parametrize(("method", "path", "data", "status", "error"), [
    ("POST", "/migrations", b"not json", 400, "invalid_json"),
    ("POST", "/migrations", b"\xff\xfe", 400, "invalid_json"),
    ("POST", "/migrations", b"[1]", 400, "invalid_body"),
    ("POST", "/migrations", b"", 400, "invalid_json"),
    ("POST", "/migrations", json.dumps({"target": "tpu", "reason": "auto"}).encode(), 400,
     "unknown_target"),
    ("POST", "/migrations", json.dumps({"target": "gpu", "reason": "x"}).encode(), 400,
     "unknown_reason"),
    ("POST", "/migrations", json.dumps({"target": "gpu", "reason": "auto",
                                        "profile": "a100"}).encode(), 400, "unknown_profile"),
    ("POST", "/migrations", json.dumps({"target": "cpu", "reason": "manual"}).encode(), 409,
     "already_on_target"),
    ("POST", "/migrations", b'{"target": "gpu", "reason": "auto", "pending_cell": {"code": "'
     + b"x" * (100 * 1024) + b'"}}', 413, "request_too_large"),
    ("POST", "/activity", b'{"kernel_id": "k"}', 400, "invalid_field"),
    ("GET", "/migrations/current", None, 404, "no_migration"),
    ("GET", "/nowhere", None, 404, "not_found"),
    ("DELETE", "/migrations", None, 405, "method_not_allowed"),
    ("PUT", "/runtime-config", None, 405, "method_not_allowed"),
])
async def test_bad_requests_answer_json_and_the_sidecar_carries_on(sidecar, method, path,
                                                                   data, status, error):
    async with aiohttp.ClientSession(headers=sidecar.auth()) as s:
        async with s.request(method, sidecar.url + path, data=data) as r:
            body = await r.json()
            assert r.status == status, body
            assert body["error"] == error and body["detail"]
        async with s.get(sidecar.url + "/runtime-config") as r:
            assert r.status == 200


async def test_two_concurrent_migrations_one_wins(sidecar):
    async with aiohttp.ClientSession(headers=sidecar.auth()) as s:
        async def post():
            async with s.post(sidecar.url + "/migrations", json=migration_body(sidecar)) as r:
                return r.status, await r.json()

        answers = await asyncio.gather(post(), post())
        assert sorted(status for status, _ in answers) == [202, 409]
        accepted = next(body for status, body in answers if status == 202)
        refused = next(body for status, body in answers if status == 409)
        assert refused["error"] == "migration_in_flight"
        assert refused["migration"]["id"] == accepted["id"]
        # The runner goes on at once and waits for the checkpoint (there is none here).
        assert wait_for_phase(sidecar, "checkpointing"), sidecar.logs()
        async with s.post(sidecar.url + "/activity",
                          json={"gpu_cell_running": False, "kernel_id": "k1"}) as r:
            assert r.status == 204
        async with s.get(sidecar.url + "/metrics") as r:
            text = await r.text()
    assert sidecar.runtime_config()["migration"]["id"] == accepted["id"]
    assert 'gpushift_sidecar_api_requests_total{route="/migrations",status="409"} 1.0' in text
    assert 'gpushift_sidecar_api_requests_total{route="/activity",status="204"} 1.0' in text
    assert 'gpushift_sidecar_migration_phase{phase="checkpointing"} 1.0' in text
    assert 'gpushift_sidecar_migration_phase{phase="requested"} 0.0' in text


async def test_a_killed_sidecar_resumes_its_migration(tmp_path):
    first = start_sidecar(tmp_path)
    async with aiohttp.ClientSession(headers=first.auth()) as s:
        async with s.post(first.url + "/migrations", json=migration_body(first)) as r:
            assert r.status == 202
            created = await r.json()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    state = tmp_path / "ws" / ".gpushift" / "migration-my-notebook.json"
    assert json.loads(state.read_text())["id"] == created["id"]
    # The new pod: same workspace volume, a fresh runtime emptyDir.
    second = start_sidecar(tmp_path, runtime_dir=tmp_path / "run-2")
    try:
        async with aiohttp.ClientSession(headers=second.auth()) as s:
            async with s.get(second.url + "/migrations/current") as r:
                assert r.status == 200
                resumed = await r.json()
            assert resumed["id"] == created["id"]
            assert resumed["history"][0] == created["history"][0]
            async with s.post(second.url + "/migrations", json=migration_body(second)) as r:
                assert r.status == 409  # still in flight after the restart
        # Resumed where it was: waiting for the checkpoint (none exists here).
        summary = second.runtime_config()["migration"]
        assert summary["id"] == created["id"] and summary["phase"] == "checkpointing"
        assert "resuming migration" in second.logs()
    finally:
        assert stop(second) == 0


async def test_a_corrupt_state_file_is_kept(tmp_path):
    state = tmp_path / "ws" / ".gpushift" / "migration-my-notebook.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"schema": 1, "id": "trunc')
    running = start_sidecar(tmp_path)
    try:
        async with aiohttp.ClientSession(headers=running.auth()) as s:
            async with s.get(running.url + "/migrations/current") as r:
                assert r.status == 404
        kept = list(state.parent.glob("migration-my-notebook.json.corrupt-*"))
        assert [k.read_text() for k in kept] == ['{"schema": 1, "id": "trunc']
        assert "set aside" in running.logs()
    finally:
        assert stop(running) == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "localhost", "::"])
def test_a_non_loopback_host_is_refused(tmp_path, host):
    env = sidecar_environ(tmp_path, free_port(), tmp_path / "run", tmp_path / "ws")
    result = subprocess.run(sidecar_command("serve", "--host", host), env=env,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert f"--host {host!r} is not a loopback address" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_variable_is_named_with_exit_2(tmp_path):
    env = sidecar_environ(tmp_path, free_port(), tmp_path / "run", tmp_path / "ws")
    del env["GPUSHIFT_NOTEBOOK_NAME"]
    result = subprocess.run(sidecar_command("serve"), env=env, capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    assert "GPUSHIFT_NOTEBOOK_NAME: not set" in result.stderr


def probe(port: int, *extra: str, runtime_dir: Path | None = None) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(SIDECAR_SRC)}
    if runtime_dir is not None:  # as injected: the sidecar container has it
        env["GPUSHIFT_RUNTIME_DIR"] = str(runtime_dir)
    started = time.monotonic()
    result = subprocess.run(sidecar_command("probe", "--port", str(port), *extra), env=env,
                            capture_output=True, timeout=20)
    return result.returncode, time.monotonic() - started


def test_probe_fails_until_ready_then_passes(tmp_path):
    port = free_port()
    assert probe(port)[0] == 1  # nothing listens
    # Something listens but never answers: the probe gives up within about a second.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", port))
        silent.listen()
        code, seconds = probe(port)
        assert code == 1 and seconds < 3
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    running = start_sidecar(tmp_path, port=port, runtime_dir=blocker / "run", wait_ready=False)
    try:
        assert probe(port)[0] == 1  # listening, not ready
        blocker.unlink()
        assert wait_for_health(running, 200)
        code, seconds = probe(port)
        assert code == 0 and seconds < 3
    finally:
        assert stop(running) == 0


def test_the_runtime_files_come_first_and_the_probe_passes_on_them(tmp_path):
    """The sidecar writes runtime-config.json (and its token) before its server's
    imports, so the notebook container starts while they run: the probe passes on the
    file. Shown with a sidecar that can never serve (its port taken): the files are
    written all the same, and the probe passes with nothing answering."""
    port = free_port()
    runtime_dir = tmp_path / "run"
    assert probe(port, runtime_dir=runtime_dir)[0] == 1  # no file, nothing listens
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = sidecar_environ(tmp_path, port, runtime_dir, tmp_path / "ws", None, None)
        (tmp_path / "ws").mkdir()
        served = subprocess.run(sidecar_command("serve"), env=env, capture_output=True,
                                timeout=60)
        assert served.returncode == 1, served.stderr.decode()
        assert b"cannot listen" in served.stdout + served.stderr
        document = json.loads((runtime_dir / "runtime-config.json").read_text())
        assert document["PodName"] == "my-notebook-0"
        assert (runtime_dir / "api-token").stat().st_mode & 0o777 == 0o600
        code, seconds = probe(port, "--timeout", "0.5", "--wait", "1",
                              runtime_dir=runtime_dir)
        assert code == 0 and seconds < 3  # on the file: the silent port is not asked


def test_a_waiting_probe_passes_as_soon_as_the_sidecar_is_ready(tmp_path):
    """The injected probe (`--wait 1`): started with the sidecar, it passes when the
    sidecar becomes ready, within its wait, instead of failing and waiting a period."""
    port = free_port()
    code, seconds = probe(port, "--timeout", "0.5", "--wait", "0.4")
    assert code == 1 and 0.35 < seconds < 3  # nothing listens: it asked until its wait ran out
    env = {**os.environ, "PYTHONPATH": str(SIDECAR_SRC)}
    waiting = subprocess.Popen(sidecar_command("probe", "--port", str(port), "--timeout",
                                               "0.5", "--wait", "20"), env=env)
    running = start_sidecar(tmp_path, port=port, wait_ready=False)
    try:
        assert waiting.wait(timeout=25) == 0
        assert health(running)[0] == 200
    finally:
        waiting.kill()
        assert stop(running) == 0


def test_the_probe_imports_the_standard_library_only(tmp_path):
    """A probe is a process of its own each time, and a move's new notebook container
    waits for it: it loads none of the server's modules (asyncio, aiohttp, the
    Kubernetes client, gpushift's core but its version), nor http.client when the file
    is there."""
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir()
    (runtime_dir / "runtime-config.json").write_text("{}")
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom gpushift_sidecar import cli\n"
         "try:\n    cli.main(['probe', '--port', '1'])\n"
         "finally:\n    print(' '.join(sorted(sys.modules)))"],
        env={**os.environ, "PYTHONPATH": str(SIDECAR_SRC),
             "GPUSHIFT_RUNTIME_DIR": str(runtime_dir)},
        capture_output=True, text=True, timeout=30, check=True).stdout.split()
    heavy = {"asyncio", "aiohttp", "uvloop", "kubernetes", "gpushift_core.kube",
             "gpushift_core.jsonlog", "http.client", "gpushift_sidecar.serve",
             "gpushift_sidecar.env"}
    assert heavy.isdisjoint(loaded), heavy & set(loaded)
