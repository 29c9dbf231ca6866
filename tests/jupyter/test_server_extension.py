"""The server extension through the real in-process Jupyter server (`jp_fetch`), with
the real `gpushift-sidecar` process behind it and real kernels with real kishu.

The sidecar gets the env of a CPU pod whose workspace is the server's root, and no
Kubernetes configuration: a move it starts fails at the patch step, after the
extension's checkpoint was verified — which is what these tests look at. The whole
move, on a real control plane, is the end-to-end suite's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
import test_sidecar_api as sidecar_base  # the real sidecar process, as its own tests

# pytest-jupyter's fixtures, here only: as a plugin its hooks would run every async test
# of the suite on its own loop (pytest-asyncio's tests included). These tests are plain
# functions that run their coroutine on the server's loop (`io_loop`).
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403

from gpushift_jupyter.runtime_info import OPTIMIZER_OFF_ENV


@pytest.fixture
def kishu_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "kishu-root"
    monkeypatch.setenv("KISHU_PATH_ROOT", str(root))
    return root


@pytest.fixture
def sidecar(tmp_path: Path, jp_root_dir: Path) -> Any:
    running = sidecar_base.start_sidecar(tmp_path, workspace_dir=jp_root_dir)
    yield running
    assert sidecar_base.stop(running) == 0
    assert "Traceback" not in running.logs()


def server_config(sidecar: Any, **extension: Any) -> dict[str, Any]:
    """The Jupyter server's config: the extension on, wired to `sidecar`. Background
    checkpoints are off unless asked for (test_background_checkpoints.py): the other
    tests count checkpoints."""
    return {"ServerApp": {"jpserver_extensions": {"gpushift_jupyter": True}},
            "GpushiftExtension": {"runtime_dir": str(sidecar.runtime_dir),
                                  "sidecar_url": sidecar.url, "background_interval": 0,
                                  **extension}}


@pytest.fixture
def jp_server_config(sidecar: Any, kishu_root: Path) -> dict[str, Any]:
    # The browser restores here (the server's own restore: test_server_restore.py).
    return server_config(sidecar, activity_interval=0, restore_interval=0)


def on_server_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """The async test as a plain one that runs it on the in-process server's loop
    (pytest-jupyter's `io_loop`, added to the test's fixtures)."""
    signature = inspect.signature(test)

    def run(*args: Any, io_loop: Any, **kwargs: Any) -> None:
        io_loop.asyncio_loop.run_until_complete(test(*args, **kwargs))

    run.__signature__ = signature.replace(parameters=[  # type: ignore[attr-defined]
        *signature.parameters.values(),
        inspect.Parameter("io_loop", inspect.Parameter.KEYWORD_ONLY)])
    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


async def call(jp_fetch: Any, method: str, path: str = "", body: Any = None,
               **kwargs: Any) -> tuple[int, Any]:
    parts = ["api_extension", *[p for p in path.split("/") if p]]
    try:
        response = await jp_fetch(*parts, method=method,
                                  body=None if body is None else json.dumps(body), **kwargs)
    except tornado.httpclient.HTTPClientError as exc:
        assert exc.response is not None
        answer = json.loads(exc.response.body)
        assert "Traceback" not in exc.response.body.decode()
        assert {"error", "detail"} <= set(answer), answer
        return exc.code, answer
    raw = response.body
    return response.code, json.loads(raw) if raw else None


@on_server_loop
async def test_runtime_config_is_the_sidecars_with_the_optimizer_on(jp_fetch, sidecar):
    status, doc = await call(jp_fetch, "GET")
    assert status == 200
    assert doc["optimizer"] == {"state": "on", "reason": None}
    assert doc["usingGPU"] is False and doc["PodName"] == "my-notebook-0"
    assert doc["PodNamespace"] == "kubeflow-user" and doc["notebook"] == "my-notebook"
    assert doc["profiles"] == ["nvidia-1", "nvidia-2"]
    assert doc["idleBounds"]["min_seconds"] <= doc["idleBounds"]["max_seconds"]


@on_server_loop
async def test_missing_and_broken_runtime_config_is_optimizer_off_not_500(jp_fetch, sidecar):
    config = sidecar.runtime_dir / "runtime-config.json"
    saved = config.read_bytes()
    try:
        for content, words in [(b"{not json", "not JSON"), (b"[]", "not a JSON object"),
                               (b'{"usingGPU": "yes"}', "lacks"), (None, "does not exist")]:
            if content is None:
                config.unlink()
            else:
                config.write_bytes(content)
            status, doc = await call(jp_fetch, "GET")
            assert status == 200 and doc["optimizer"]["state"] == "off", doc
            assert words in doc["optimizer"]["reason"]
            assert doc["usingGPU"] is False and "PodName" in doc  # the seed's keys stay
            status, answer = await call(jp_fetch, "POST", "migrate",
                                        {"target": "gpu", "reason": "manual"})
            assert status == 503 and answer["error"] == "optimizer_off"
    finally:
        config.write_bytes(saved)


@on_server_loop
async def test_the_sidecar_can_say_the_optimizer_is_off(jp_fetch, sidecar):
    """An inert sidecar (a server type the admin keeps off) writes `optimizerOff`."""
    config = sidecar.runtime_dir / "runtime-config.json"
    saved = config.read_bytes()
    reason = "the GPU optimizer is off for server type 'group-one' (in server_types.inert)"
    try:
        config.write_text(json.dumps({**json.loads(saved), "optimizerOff": reason}))
        status, doc = await call(jp_fetch, "GET")
        assert status == 200 and doc["optimizer"] == {"state": "off", "reason": reason}
        assert doc["PodName"] == "my-notebook-0"  # the sidecar's document, kept
        status, answer = await call(jp_fetch, "POST", "migrate",
                                    {"target": "gpu", "reason": "manual"})
        assert status == 503 and answer["error"] == "optimizer_off"
        assert answer["detail"] == reason
    finally:
        config.write_bytes(saved)


@on_server_loop
async def test_classify_is_stateful_per_kernel(jp_fetch, sidecar):
    status, kernel = await call_api(jp_fetch, "POST", ["api", "kernels"], {})
    kernel_id = kernel["id"]
    try:
        status, verdict = await call(jp_fetch, "POST", "classify",
                                     {"code": "import torch\nx = torch.ones(3).cuda()",
                                      "kernel_id": kernel_id})
        assert status == 200 and verdict["needs_gpu"] is True
        assert verdict["reasons"][0]["line"] == 2 and verdict["elapsed_ms"] >= 0
        await call(jp_fetch, "POST", "classify",
                              {"code": "device = torch.device('cuda:0')", "kernel_id": kernel_id})
        _, later = await call(jp_fetch, "POST", "classify",
                              {"code": "model.to(device)", "kernel_id": kernel_id})
        assert later["needs_gpu"] is True
        _, elsewhere = await call(jp_fetch, "POST", "classify", {"code": "model.to(device)"})
        assert elsewhere["needs_gpu"] is False  # no kernel: no earlier cells
        # A preview (a user paused typing) walks the cell without running it; the run is
        # then a lookup. The preview bound nothing: `xp` is still unknown to the kernel.
        cell = "import cupy as xp"
        _, ahead = await call(jp_fetch, "POST", "classify",
                              {"code": cell, "kernel_id": kernel_id, "preview": True})
        _, unbound = await call(jp_fetch, "POST", "classify",
                                {"code": "xp.ones(2)", "kernel_id": kernel_id, "preview": True})
        assert ahead["needs_gpu"] is True and ahead["cached"] is False
        assert unbound["needs_gpu"] is False
        _, ran = await call(jp_fetch, "POST", "classify", {"code": cell, "kernel_id": kernel_id})
        assert ran["cached"] is True and ran["reasons"] == ahead["reasons"]
        # A restarted kernel lost `xp` with its variables: the classifier forgets it too.
        _, used = await call(jp_fetch, "POST", "classify",
                             {"code": "xp.ones(2)", "kernel_id": kernel_id})
        assert used["needs_gpu"] is True
        await call_api(jp_fetch, "POST", ["api", "kernels", kernel_id, "restart"], {})
        for _ in range(50):  # the event's listener runs as its own task
            _, after = await call(jp_fetch, "POST", "classify",
                                  {"code": "xp.ones(2)", "kernel_id": kernel_id})
            if not after["needs_gpu"]:
                break
            await asyncio.sleep(0.1)
        assert after["needs_gpu"] is False, after
        for body, error in [({"code": 3}, "invalid_field"), ({"cell": "x"}, "unknown_field"),
                            ({"code": "x", "preview": "yes"}, "invalid_field"),
                            ({"code": "x", "kernel_id": "nope"}, "no_such_kernel")]:
            status, answer = await call(jp_fetch, "POST", "classify", body)
            assert status in (400, 404) and answer["error"] == error, answer
    finally:
        await call_api(jp_fetch, "DELETE", ["api", "kernels", kernel_id], None)


@on_server_loop
async def test_classify_first_hit_answers_at_the_first_gpu_statement(jp_fetch, jp_serverapp,
                                                                     sidecar):
    """`first_hit` (a move without asking, the GPU pod's activity report): the answer has
    the first GPU statement's reasons; the server walks the rest once it has answered, so
    the kernel's memory holds what the later statements bound."""
    status, kernel = await call_api(jp_fetch, "POST", ["api", "kernels"], {})
    kernel_id = kernel["id"]
    classifier = jp_serverapp.web_app.settings["gpushift_services"].kernels.classifier(
        kernel_id)
    try:
        cell = "import cupy as cp\nx = cp.ones(3)\ndevice = torch.device('cuda:0')\n"
        status, fast = await call(jp_fetch, "POST", "classify",
                                  {"code": cell, "kernel_id": kernel_id, "first_hit": True})
        assert status == 200 and fast["needs_gpu"] is True
        assert [reason["line"] for reason in fast["reasons"]] == [1], fast
        for _ in range(100):  # the rest is walked on the server's loop, after the answer
            if classifier.settled:
                break
            await asyncio.sleep(0.01)
        assert classifier.settled
        _, later = await call(jp_fetch, "POST", "classify",
                              {"code": "model.to(device)", "kernel_id": kernel_id})
        assert later["needs_gpu"] is True  # `device`, bound on line 3, was remembered
        for body in ({"code": "x", "first_hit": "yes"},
                     {"code": "x", "preview": True, "first_hit": True}):
            status, answer = await call(jp_fetch, "POST", "classify", body)
            assert status == 400 and answer["error"] == "invalid_field", answer
    finally:
        await call_api(jp_fetch, "DELETE", ["api", "kernels", kernel_id], None)


@on_server_loop
async def test_bad_bodies_are_json_4xx(jp_fetch, sidecar):
    for path, body, error in [
            ("migrate", {"target": "moon", "reason": "manual"}, "unknown_target"),
            ("migrate", {"target": "gpu", "reason": "manual", "pending_cell": {"cell_id": "c"}},
             "invalid_field"),
            ("attach", {"kernel_id": "k", "path": "../../etc/passwd.ipynb"}, "invalid_field"),
            ("activity", {"kernel_id": "k"}, "invalid_field"),
            ("checkpoint", {}, "invalid_field")]:
        status, answer = await call(jp_fetch, "POST", path, body)
        assert 400 <= status < 500 and answer["error"] == error, (path, answer)
    status, answer = await call(jp_fetch, "POST", "classify", None, allow_nonstandard_methods=True)
    assert status == 400
    status, answer = await call(jp_fetch, "PUT", "idle/timeout", {"seconds": "soon"})
    assert status == 400 and answer["error"] == "invalid_field"


@on_server_loop
async def test_without_a_token_nothing_answers(jp_fetch, sidecar, jp_base_url, jp_http_port):
    client = tornado.httpclient.AsyncHTTPClient()
    url = f"http://localhost:{jp_http_port}{jp_base_url}api_extension"
    for method, body in [("GET", None), ("POST", "{}")]:
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await client.fetch(url + ("/classify" if body else ""), method=method, body=body)
        assert caught.value.code == 403


@on_server_loop
async def test_idle_through_the_extension_on_a_cpu_pod(jp_fetch, sidecar):
    status, snap = await call(jp_fetch, "GET", "idle")
    assert status == 200 and snap["state"] == "inert"
    status, answer = await call(jp_fetch, "POST", "idle/stay", {})
    assert status == 409 and answer["error"] == "not_warning"
    status, answer = await call(jp_fetch, "POST", "activity",
                                {"kernel_id": "nope", "gpu_cell_running": True})
    assert status == 404 and answer["error"] == "no_such_kernel"
    status, answer = await call(jp_fetch, "GET", "migration")
    assert status == 200 and answer == {"migration": None}
    status, answer = await call(jp_fetch, "POST", "migrate", {"target": "cpu", "reason": "manual"})
    assert status == 409 and answer["error"] == "already_on_target"


async def call_api(jp_fetch: Any, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
    response = await jp_fetch(*parts, method=method,
                              body=None if body is None else json.dumps(body))
    return response.code, json.loads(response.body) if response.body else None


def arrive_on_a_new_pod(sidecar: Any, jp_root_dir: Path, tmp_path: Path) -> Any:
    """The pod restart, simulated: the sidecar's move failed at the patch (no
    Kubernetes here); it comes back as in the new pod, finding the migration
    `restoring` (the real path runs in the end-to-end suite). The revived sidecar."""
    from gpushift_sidecar.state import Phase
    from gpushift_sidecar.state_file import MigrationStore

    assert sidecar_base.stop(sidecar) == 0
    store = MigrationStore(jp_root_dir / ".gpushift" / "migration-my-notebook.json")
    saved = store.load()
    assert saved is not None
    # Its patch "succeeded" this time: patching → recreating → restoring.
    patched = dataclasses.replace(saved, phase=Phase.PATCHING, error=None,
                                  history=saved.history[:-1])
    now = dt.datetime.now(dt.UTC)
    store.save(patched.advance(Phase.RECREATING, now=now).advance(Phase.RESTORING, now=now))
    return sidecar_base.start_sidecar(tmp_path, runtime_dir=sidecar.runtime_dir,
                                      workspace_dir=jp_root_dir, port=sidecar.port)


async def wait_for_phase(jp_fetch: Any, phases: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        _, answer = await call(jp_fetch, "GET", "migration")
        migration = answer["migration"]
        if migration is not None and migration["phase"] in phases:
            return dict(migration)
        assert asyncio.get_running_loop().time() < deadline, migration
        await asyncio.sleep(0.1)








NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


async def run_cell(jp_serverapp: Any, kernel_id: str, code: str) -> None:
    from gpushift_jupyter.kernel_state import ClientKernel

    client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        result = await ClientKernel(client).run(code, timeout=60, record=True)
        assert result.status == "ok", result.error
    finally:
        client.stop_channels()


async def value_of(jp_serverapp: Any, kernel_id: str, expression: str) -> str:
    from gpushift_jupyter.kernel_state import ClientKernel

    client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        result = await ClientKernel(client).run("", timeout=60, record=False,
                                                expressions={"v": expression})
        return result.expressions["v"]
    finally:
        client.stop_channels()


@dataclasses.dataclass
class MovedState:
    notebook: Path
    before: bytes
    """The notebook's bytes before the move."""
    session: dict[str, Any]
    kernel_id: str
    commit: str


async def state_then_a_move(jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> MovedState:
    """A notebook session whose kernel holds some state, moved to GPU with a held cell:
    checkpointed and verified, then failed at the patch (no Kubernetes here)."""
    notebook = jp_root_dir / "work" / "train.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(json.dumps(NOTEBOOK))
    before = notebook.read_bytes()
    _, session = await call_api(jp_fetch, "POST", ["api", "sessions"], {
        "path": "work/train.ipynb", "type": "notebook", "name": "train.ipynb",
        "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    status, attached = await call(jp_fetch, "POST", "attach", {"kernel_id": kernel_id})
    assert status == 200 and attached["path"] == "work/train.ipynb", attached
    await run_cell(jp_serverapp, kernel_id, "import numpy as np\nxs = np.arange(1000)\n"
                   "greeting = 'hello'\nclass Point:\n    def __init__(self, x): self.x = x\n"
                   "p = Point(7)")
    status, moved = await call(jp_fetch, "POST", "migrate", {
        "target": "gpu", "reason": "auto", "kernel_id": kernel_id,
        "path": "work/train.ipynb",
        "pending_cell": {"cell_id": "cell-7", "code": "print(xs.sum())"}})
    # Answered at once: the move waits while the server saves the notebook.
    assert status == 202, moved
    assert moved["saving"] == ["work/train.ipynb"] and moved["will_stop"] == []
    assert moved["migration"]["checkpoint"] is None
    assert moved["migration"]["checkpoints_to_come"] is True
    # The server named the checkpoint, the sidecar verified it, then failed at the patch:
    # no Kubernetes here.
    failed = await wait_for_phase(jp_fetch, {"failed"})
    assert [h["phase"] for h in failed["history"]][:4] == [
        "requested", "checkpointing", "checkpointed", "patching"], failed["history"]
    assert failed["checkpoint"]["notebook_path"] == str(notebook)
    commit = failed["checkpoint"]["commit_id"]
    return MovedState(notebook, before, session, kernel_id, commit)


@on_server_loop
async def test_migrate_then_restore_after_a_simulated_pod_restart(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path, sidecar: Any,
        tmp_path: Path) -> None:
    moved = await state_then_a_move(jp_fetch, jp_serverapp, jp_root_dir)
    notebook, before, session, kernel_id, commit = (
        moved.notebook, moved.before, moved.session, moved.kernel_id, moved.commit)
    # The session names the notebook; another path for its kernel is refused.
    status, answer = await call(jp_fetch, "POST", "checkpoint",
                                {"kernel_id": kernel_id, "path": "other.ipynb"})
    assert status == 400 and answer["error"] == "wrong_notebook"
    _, current = await call(jp_fetch, "GET", "migration")
    assert current["migration"]["checkpoint"]["path"] == "work/train.ipynb"
    assert current["migration"]["pending_cell"]["path"] == "work/train.ipynb"
    status, answer = await call(jp_fetch, "POST", "restore", {"kernel_id": kernel_id})
    assert status == 409 and answer["error"] == "nothing_to_restore"

    revived = arrive_on_a_new_pod(sidecar, jp_root_dir, tmp_path)
    try:
        await call_api(jp_fetch, "DELETE", ["api", "sessions", session["id"]], None)
        _, session = await call_api(jp_fetch, "POST", ["api", "sessions"], {
            "path": "work/train.ipynb", "type": "notebook", "name": "train.ipynb",
            "kernel": {"name": "python3"}})
        fresh = session["kernel"]["id"]
        assert fresh != kernel_id
        # Two tabs ask at once: one restores, the other waits for it and gets its
        # answer (not a 409 to ask again about); the state goes into the kernel once,
        # and the held cell to one tab only.
        answers = await asyncio.gather(*(call(jp_fetch, "POST", "restore",
                                              {"kernel_id": fresh}) for _ in range(2)))
        assert [a[0] for a in answers] == [200, 200], (answers, revived.logs()[-3000:])
        [(status, restored)] = [a for a in answers if a[1]["pending_cell"] is not None]
        [(_, other)] = [a for a in answers if a[1]["pending_cell"] is None]
        assert other["restored"] == restored["restored"]
        assert other["restored_at"] == restored["restored_at"]  # one restore, not two
        assert other["kernel_id"] == restored["kernel_id"] == fresh
        assert restored["ok"] is True and restored["commit_id"] == commit
        assert {"xs", "greeting", "p", "Point"} <= set(restored["restored"]), restored
        assert restored["pending_cell"] == {"cell_id": "cell-7", "code": "print(xs.sum())",
                                            "path": "work/train.ipynb"}
        assert restored["migration"]["phase"] == "done"
        assert await value_of(jp_serverapp, fresh, "int(xs.sum())") == "499500"
        assert await value_of(jp_serverapp, fresh, "(greeting, p.x)") == "('hello', 7)"
        assert notebook.read_bytes() == before  # the user's notebook was never rewritten
    finally:
        sidecar_base.stop(revived)
    assert "Traceback" not in revived.logs()


@on_server_loop
async def test_the_guard_can_say_the_optimizer_is_off(jp_fetch, sidecar, monkeypatch):
    """A pod the guard recreated without the sidecar (it could not start) carries the
    reason in GPUSHIFT_OPTIMIZER_OFF on the notebook container: shown as the reason."""
    reason = ("the gpushift sidecar could not start (ImagePullBackOff: Back-off pulling "
              "image \"registry.invalid/gpushift/sidecar:0.1.0\"), so the notebook was "
              "started without it")
    monkeypatch.setenv(OPTIMIZER_OFF_ENV, reason)
    status, doc = await call(jp_fetch, "GET")
    assert status == 200 and doc["optimizer"] == {"state": "off", "reason": reason}
    status, answer = await call(jp_fetch, "POST", "migrate",
                                {"target": "gpu", "reason": "manual"})
    assert status == 503 and answer["error"] == "optimizer_off"
    assert answer["detail"] == reason
