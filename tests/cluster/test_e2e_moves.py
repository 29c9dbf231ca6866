"""The whole move, end to end, on the local control plane: the chart and the webhook
(with its guard), the Notebook and its pod run by the local pod runner (real sidecar,
real JupyterLab with gpushift's server extension, real kernels and kishu), the notebook
proxy as Kubeflow's route — and the test as the user, through the proxy, doing what the
front end does (the browser itself is driven by server_ext/ui-tests/e2e).

No GPU here: the GPU node is kwok's fake `kwok-gpu-0`; the runner marks pods there with
GPUSHIFT_FAKE_GPU, which the server extension reads as a GPU (test names: fake_gpu).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpushift_testing import e2e
from gpushift_testing.jupyter_user import JupyterUser
from gpushift_testing.kube import wait_for, wait_for_pod
from gpushift_testing.webhook_process import LocalWebhook
from gpushift_testing.workloads import node_kind

STATE_CELL = """
import numpy as np, pandas as pd, hashlib
big = np.random.default_rng(7).random(50 * 2**20 // 8)          # 50 MiB
frame = pd.DataFrame({"a": np.arange(1000), "b": np.arange(1000) * 0.5})
class Model:
    def __init__(self, width): self.width = width
    def describe(self): return f"model of width {self.width}"
model = Model(3)
digest = hashlib.sha256(big.tobytes()).hexdigest()
"""
# Needs a GPU for the classifier (it binds a CUDA device); runs anywhere.
GPU_CELL = """
import os
device = "cuda"
print("on", os.environ.get("GPUSHIFT_FAKE_GPU"), round(float(big.sum()), 3), model.describe())
"""
CHECK = ("(hashlib.sha256(big.tobytes()).hexdigest() == digest, int(frame['a'].sum()), "
         "model.describe())")
CHECK_ANSWER = "(True, 499500, 'model of width 3')"


@pytest.fixture(scope="module")
def webhook(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    hook = e2e.start_webhook(control_plane, tmp_path_factory.mktemp("e2e-webhook"))
    try:
        yield hook
    finally:
        hook.stop()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def start_session(nb: e2e.NotebookUnderTest, user: JupyterUser) -> str:
    await user.wait_until_up(180)
    await user.ok("PUT", "api/contents/work.ipynb",
                  {"type": "notebook", "format": "json",
                   "content": __import__("json").loads(e2e.empty_notebook())})
    kernel = await user.open_notebook("work.ipynb")
    status, attached = await user.gpushift("POST", "attach", {"kernel_id": kernel,
                                                              "path": "work.ipynb"})
    assert status == 200, attached
    return kernel


async def session_with_state(nb: e2e.NotebookUnderTest, user: JupyterUser) -> str:
    """A notebook session whose kernel ran STATE_CELL; its kernel id."""
    kernel = await start_session(nb, user)
    done = await user.execute(kernel, STATE_CELL)
    assert done.status == "ok", done.error
    return kernel


# The move arrived on the new pod: `restoring`, or already `done` when the new pod's
# server restored it by itself (server_restore) before the test looked.
ARRIVED = frozenset({"restoring", "done"})
ARRIVED_OR_ENDED = ARRIVED | {"failed", "rolled_back"}


async def reopen_and_restore(nb: e2e.NotebookUnderTest, user: JupyterUser,
                             timeout: float = 180) -> tuple[str, dict[str, Any]]:
    """What the front end does once the server answers again: the notebook's session
    (the one the server opened to restore the move, if it did), then `POST /restore` —
    which, while the server restores, answers 409 already_restoring until it is done,
    then what it restored."""
    await user.wait_until_up(timeout)
    kernel = await user.open_notebook("work.ipynb")
    status, restored = await e2e.restore_state(user, kernel, "work.ipynb", timeout)
    assert status == 200, (restored, nb.logs())
    return kernel, restored


def pod_facts(admin: Any, nb: e2e.NotebookUnderTest) -> tuple[str, str, str | None]:
    pod = admin.core.read_namespaced_pod(f"{nb.name}-0", nb.namespace)
    container = pod.spec.containers[0]
    limits = container.resources.limits or {}
    return (node_kind(admin.core, pod.spec.node_name), container.image,
            limits.get(e2e.GPU_RESOURCE))


def test_fake_gpu_automatic_move_to_gpu_keeps_the_state_and_runs_the_held_cell(
        webhook, control_plane, admin, namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        run(_automatic_move(nb, admin))


async def _automatic_move(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        assert pod_facts(admin, nb) == ("cpu", e2e.CPU_IMAGE, None)
        status, doc = await user.gpushift("GET")
        assert doc["optimizer"]["state"] == "on" and doc["usingGPU"] is False

        # The front end asks before the cell runs: it needs a GPU, and has not run.
        status, verdict = await user.gpushift("POST", "classify",
                                              {"code": GPU_CELL, "kernel_id": kernel})
        assert status == 200 and verdict["needs_gpu"], verdict
        assert verdict["reasons"][0]["line"] == 3
        # The user accepts: the move is taken at once; the notebook is saved (verified)
        # before anything changes.
        status, moved = await user.gpushift("POST", "migrate", {
            "target": "gpu", "reason": "auto", "kernel_id": kernel, "path": "work.ipynb",
            "pending_cell": {"cell_id": "held-cell", "code": GPU_CELL}})
        assert status == 202, moved
        assert moved["saving"] == ["work.ipynb"], moved

        restoring = await e2e.wait_for_migration(user, ARRIVED_OR_ENDED,
                                                 180, nb.logs)
        assert restoring["phase"] in ARRIVED, restoring
        commit = restoring["checkpoint"]["commit_id"]
        assert pod_facts(admin, nb) == ("gpu", e2e.CUDA_IMAGE, "1")
        status, doc = await user.gpushift("GET")
        assert doc["usingGPU"] is True and doc["gpu"]["name"].startswith("fake GPU")

        fresh, restored = await reopen_and_restore(nb, user)
        assert fresh != kernel
        assert restored["ok"] and restored["commit_id"] == commit, restored
        assert {"big", "frame", "model", "Model", "digest"} <= set(restored["restored"])
        assert restored["migration"]["phase"] == "done"
        cell = restored["pending_cell"]
        assert cell == {"cell_id": "held-cell", "code": GPU_CELL, "path": "work.ipynb"}
        # The held cell runs on the new pod, with the restored variables.
        ran = await user.execute(fresh, cell["code"])
        assert ran.status == "ok", ran.error
        assert ran.stdout.startswith("on kwok-gpu-0 ") and "model of width 3" in ran.stdout
        check = await user.execute(fresh, CHECK)
        assert check.results == [CHECK_ANSWER], check


async def wait_idle_when(user: JupyterUser, check: Any, timeout: float) -> dict[str, Any]:
    """The idle snapshot once `check` holds."""
    deadline = time.monotonic() + timeout
    while True:
        status, snap = await user.gpushift("GET", "idle", timeout=10)
        if status == 200 and check(snap):
            return dict(snap)
        assert time.monotonic() < deadline, f"not within {timeout}s: {snap}"
        await asyncio.sleep(0.1)


async def wait_idle(user: JupyterUser, state: str, timeout: float) -> dict[str, Any]:
    return await wait_idle_when(user, lambda snap: snap["state"] == state, timeout)


def test_fake_gpu_idle_warns_stays_then_moves_back_to_cpu_with_the_state(
        webhook, control_plane, admin, namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path, gpu=True) as nb:
        run(_idle_move(nb, admin))


async def _idle_move(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        assert pod_facts(admin, nb) == ("gpu", e2e.CUDA_IMAGE, "1")
        # An older checkpoint (as a first move would have left), then work after it: the
        # idle move must bring the latest state, not that checkpoint's.
        status, older = await user.gpushift("POST", "checkpoint",
                                            {"kernel_id": kernel, "path": "work.ipynb"})
        assert status == 200, older
        assert (await user.execute(kernel, "marker = 'after the checkpoint'")).status == "ok"
        # A GPU cell ran (the front end reports it): the timer starts from its end.
        for running in (True, False):
            status, _ = await user.gpushift("POST", "activity",
                                            {"kernel_id": kernel, "gpu_cell_running": running})
            assert status == 204
        warned = await wait_idle(user, "warning", 30)
        assert warned["timeout"] == 10 and warned["warning_seconds"] == 5
        assert 0 < warned["warning_until"] - time.time() <= 5.5
        status, _ = await user.gpushift("POST", "idle/stay", {})
        assert status == 204  # "Stay on GPU": a fresh timeout
        stayed = await wait_idle(user, "active", 5)
        assert "stay" in (stayed["reason"] or "")
        await asyncio.sleep(3)
        status, doc = await user.gpushift("GET")
        assert doc["usingGPU"] is True and doc["migration"] is None  # still on the GPU

        # No browser action from here: the warning again, a checkpoint by the server
        # extension, and the move to CPU by the sidecar.
        await wait_idle(user, "warning", 30)
        restoring = await e2e.wait_for_migration(user, ARRIVED_OR_ENDED,
                                                 180, nb.logs)
        assert restoring["phase"] in ARRIVED, restoring
        assert (restoring["target"], restoring["reason"]) == ("cpu", "idle")
        assert restoring["checkpoint"] is not None
        assert pod_facts(admin, nb) == ("cpu", e2e.CPU_IMAGE, None)
        fresh, restored = await reopen_and_restore(nb, user)
        assert restored["ok"] and {"big", "frame", "model"} <= set(restored["restored"])
        assert restored["pending_cell"] is None
        assert restored["commit_id"] != older["commit_id"]  # the warning's checkpoint
        check = await user.execute(fresh, CHECK)
        assert check.results == [CHECK_ANSWER], check
        latest = await user.execute(fresh, "print(marker)")
        assert latest.stdout.strip() == "after the checkpoint", latest
        status, snap = await user.gpushift("GET", "idle")
        assert snap["state"] == "inert"  # no idle timer on a CPU pod


def test_fake_gpu_no_idle_move_while_a_long_cell_runs(webhook, control_plane, admin,
                                                     namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path, gpu=True) as nb:
        run(_busy_kernel(nb, admin))


async def _busy_kernel(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    """A non-GPU cell that runs 2.5 idle timeouts, with no tab reporting anything: the
    server extension's view of the kernel holds the timer; no warning and no move while
    it runs; after it, the full timeout, the warning, then the idle move."""
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        cell = asyncio.ensure_future(user.execute(kernel, "import time\ntime.sleep(25)",
                                                  timeout=120))
        # The extension reports the kernel busy within half a second of the change (the
        # state cell before it was busy too, so the timer had just started over).
        snap = await wait_idle_when(user, lambda s: s["kernels_busy"] == 1, 5)
        while not cell.done():
            assert snap["state"] == "active", snap
            status, doc = await user.gpushift("GET")
            assert doc["migration"] is None, doc["migration"]
            await asyncio.sleep(0.5)
            status, snap = await user.gpushift("GET", "idle", timeout=10)
            assert status == 200, snap
        done = await cell
        assert done.status == "ok", done.error
        ended = time.time()
        warned = await wait_idle(user, "warning", 30)
        # The timer started over when the kernel went idle: a full timeout from then.
        assert warned["warning_until"] >= ended + warned["timeout"] - 1, (warned, ended)
        restoring = await e2e.wait_for_migration(user, ARRIVED_OR_ENDED,
                                                 180, nb.logs)
        assert restoring["phase"] in ARRIVED, restoring
        assert (restoring["target"], restoring["reason"]) == ("cpu", "idle")
        assert pod_facts(admin, nb) == ("cpu", e2e.CPU_IMAGE, None)


def test_fake_gpu_manual_moves_both_ways(webhook, control_plane, admin, namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        run(_manual_moves(nb, admin))


async def _manual_moves(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        for target, kind in (("gpu", "gpu"), ("cpu", "cpu")):
            status, moved = await user.gpushift("POST", "migrate", {
                "target": target, "reason": "manual", "kernel_id": kernel,
                "path": "work.ipynb", "pending_cell": None})
            assert status == 202, moved
            migration_id = moved["migration"]["id"]
            restoring = await e2e.wait_for_migration(user, ARRIVED_OR_ENDED, 180, nb.logs)
            assert restoring["id"] == migration_id and restoring["phase"] in ARRIVED
            assert pod_facts(admin, nb)[0] == kind
            kernel, restored = await reopen_and_restore(nb, user)
            assert restored["ok"] and restored["migration"]["phase"] == "done", restored
            check = await user.execute(kernel, CHECK)
            assert check.results == [CHECK_ANSWER], check
            # A second move the other way starts from this pod's own state.
            extra = await user.execute(kernel, "moves = globals().get('moves', 0) + 1")
            assert extra.status == "ok"
        final = await user.execute(kernel, "moves")
        assert final.results == ["2"]  # the variable made on the GPU pod came back to CPU


def occupy_the_gpu(admin: Any, namespace: str) -> str:
    """A plain pod that takes the only GPU of the fake GPU node."""
    name = "gpu-hog"
    admin.core.create_namespaced_pod(namespace, {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "hog", "image": "busybox",
                                 "resources": {"limits": {e2e.GPU_RESOURCE: "1"}}}],
                 "tolerations": e2e.E2E_CONFIG["profiles"][0]["tolerations"]}})
    wait_for("the GPU taken", lambda: admin.core.read_namespaced_pod(
        name, namespace).spec.node_name is not None, 60)
    return name


def test_fake_gpu_no_gpu_free_rolls_back_and_the_state_comes_back_on_cpu(
        webhook, control_plane, admin, namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        hog = occupy_the_gpu(admin, namespace)
        try:
            run(_rolled_back(nb, admin))
        finally:
            admin.core.delete_namespaced_pod(hog, namespace, grace_period_seconds=0)


async def _rolled_back(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        status, moved = await user.gpushift("POST", "migrate", {
            "target": "gpu", "reason": "auto", "kernel_id": kernel, "path": "work.ipynb",
            "pending_cell": {"cell_id": "held", "code": GPU_CELL}})
        assert status == 202, moved
        ended = await e2e.wait_for_migration(user, {"rolled_back", "failed", "done"}, 240,
                                             nb.logs)
        assert ended["phase"] == "rolled_back", ended
        assert "nvidia.com/gpu" in (ended["error"] or ""), ended  # the scheduler's reason
        wait_for("the notebook back on a CPU node",
                 lambda: pod_facts(admin, nb) == ("cpu", e2e.CPU_IMAGE, None), 120)
        fresh, restored = await reopen_and_restore(nb, user)
        assert restored["ok"] and restored.get("recovered") is True, restored
        assert restored["pending_cell"] is None  # it asked for a GPU: not run on CPU
        check = await user.execute(fresh, CHECK)
        assert check.results == [CHECK_ANSWER], check
        status, again = await user.gpushift("POST", "restore", {"kernel_id": fresh})
        assert status == 409 and again["error"] == "already_restored"


# --------------------------------------------------------------------------- faults


SECOND = "second.ipynb"


# A variable that takes its time to come back (unpickling sleeps): the new pod's restore
# lasts long enough for a fault to land in it, whatever this machine's speed.
SLOW_TO_RESTORE = """
class SlowToRestore:
    def __init__(self): self.value = 1
    def __setstate__(self, state):
        import time
        time.sleep(10)
        self.__dict__.update(state)
slow = SlowToRestore()
"""


async def second_notebook(user: JupyterUser, *, slow: bool = False) -> None:
    """Another notebook open in the pod, with state of its own: every notebook moves
    (`slow`: with a variable that takes 10 s to restore)."""
    await user.ok("PUT", f"api/contents/{SECOND}",
                  {"type": "notebook", "format": "json",
                   "content": __import__("json").loads(e2e.empty_notebook())})
    kernel = await user.open_notebook(SECOND)
    assert (await user.execute(kernel, "second = 'its own state'")).status == "ok"
    if slow:
        assert (await user.execute(kernel, SLOW_TO_RESTORE)).status == "ok"


async def second_is_back(user: JupyterUser) -> None:
    """The second notebook's kernel on the new pod (the server restored it) has it."""
    kernel = await user.open_notebook(SECOND)
    back = await user.execute(kernel, "print(second)")
    assert back.stdout.strip() == "its own state", back


async def state_then_move(nb: e2e.NotebookUnderTest, user: JupyterUser,
                          before_move: Any = None, *, two: bool = False,
                          slow: bool = False) -> dict[str, Any]:
    """A session with the test's state (and a second notebook with its own, `two`; one
    slow to restore, `slow`), then a manual move to GPU (202); the answer."""
    kernel = await session_with_state(nb, user)
    if two:
        await second_notebook(user, slow=slow)
    if before_move is not None:
        before_move()
    status, moved = await user.gpushift("POST", "migrate", {
        "target": "gpu", "reason": "manual", "kernel_id": kernel, "path": "work.ipynb",
        "pending_cell": None})
    assert status == 202, moved
    return dict(moved)


# kishu's commits and the variables they stored (its HEAD and branch tables move).
KISHU_DATA_TABLES = ("commit_entry", "checkpoint", "variable_snapshot", "commit_variable")


def volume_files(nb: e2e.NotebookUnderTest) -> dict[str, Any]:
    """What must survive on the workspace volume: the notebook's bytes and every kishu
    commit with its stored variables (a restore moves kishu's HEAD, nothing else)."""
    found: dict[str, Any] = {p.name: p.read_bytes() for p in nb.workspace.glob("*.ipynb")}
    for db in (nb.workspace / ".gpushift" / "checkpoints").glob("*.kishudb"):
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            found[db.name] = {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}")))
                              for t in KISHU_DATA_TABLES}
    return found


def assert_nothing_lost(nb: e2e.NotebookUnderTest, before: dict[str, Any]) -> None:
    """Every notebook's bytes as they were, and every kishu commit and stored variable
    of `before` still there. Later commits may be added: on the GPU pod the idle
    warning (5 s here) checkpoints every kernel."""
    now = volume_files(nb)
    for name, was in before.items():
        assert name in now, f"{name} is gone from the volume"
        if isinstance(was, bytes):
            assert now[name] == was, f"{name} was rewritten"
        else:
            for table, rows in was.items():
                lost = set(rows) - set(now[name][table])
                assert not lost, f"{name}: {len(lost)} row(s) of {table} lost"


async def past_saving(user: JupyterUser) -> None:
    """Until the move's checkpoints are written (`/migrate` answers before): the move is
    past `checkpointing`, or the old pod's server is gone (it goes only after that)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, answer = await user.gpushift("GET", "migration", timeout=5)
        except Exception:  # the pod is being replaced: saved before that
            return
        phase = (answer.get("migration") or {}).get("phase") if status == 200 else None
        if phase not in ("requested", "checkpointing"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the move stayed in checkpointing for 120 s")


def test_fake_gpu_webhook_stopped_during_the_move(webhook, control_plane, admin, namespace,
                                                  tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        try:
            run(_webhook_stopped(nb, admin, webhook))
        finally:
            if webhook.process is None:
                webhook.start(*webhook.args)
                wait_for("the webhook ready again", webhook.ready, 30, describe=webhook.logs)


async def _webhook_stopped(nb: e2e.NotebookUnderTest, admin: Any,
                           webhook: LocalWebhook) -> None:
    async with nb.user() as user:
        # The webhook (and its guard) down while the notebook moves.
        moved = await state_then_move(nb, user, before_move=webhook.stop)
        await past_saving(user)
        files = volume_files(nb)
        # The new pod is created without the sidecar (failurePolicy Ignore) and works;
        # the extension says the optimizer is off and recovers the newest checkpoint.
        await user.wait_until_up(180)
        deadline = time.monotonic() + 120
        while True:
            status, doc = await user.gpushift("GET", timeout=10)
            if status == 200 and doc["optimizer"]["state"] == "off":
                break
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.3)
        assert "not injected" in doc["optimizer"]["reason"]
        assert pod_facts(admin, nb) == ("gpu", e2e.CUDA_IMAGE, "1")
        fresh, restored = await reopen_and_restore(nb, user)
        assert restored["ok"] and restored["recovered"] is True, restored
        check = await user.execute(fresh, CHECK)
        assert check.results == [CHECK_ANSWER], check
        assert_nothing_lost(nb, files)

        # The webhook back, the admin deletes the uninjected pod (troubleshooting in the
        # README): the new one has the sidecar, which finishes the move it finds.
        webhook.start(*webhook.args)
        wait_for("the webhook ready again", webhook.ready, 30, describe=webhook.logs)
        admin.core.delete_namespaced_pod(f"{nb.name}-0", nb.namespace)
        restoring = await e2e.wait_for_migration(user, ARRIVED_OR_ENDED,
                                                 180, nb.logs)
        assert restoring["id"] == moved["migration"]["id"] and restoring["phase"] in ARRIVED
        fresh, restored = await reopen_and_restore(nb, user)
        assert restored["ok"] and restored["migration"]["phase"] == "done", restored
        assert (await user.execute(fresh, CHECK)).results == [CHECK_ANSWER]


def test_fake_gpu_sidecar_killed_during_the_checkpoint_step_two_notebooks(
        webhook, control_plane, admin, namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        run(_sidecar_killed(nb, admin))


async def _sidecar_killed(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        moved = await state_then_move(nb, user, two=True)
        # At once, while the notebook is saved and the sidecar waits for (or verifies)
        # the checkpoint: SIGKILL. The runner restarts it (restartPolicy Always); it
        # resumes from the state on the volume, and the server names the checkpoint to
        # the restarted sidecar.
        nb.runner.signal_container(nb.namespace, f"{nb.name}-0", "gpushift-sidecar")
        restoring = await e2e.wait_for_migration(user, ARRIVED_OR_ENDED,
                                                 180, nb.logs)
        assert restoring["id"] == moved["migration"]["id"], restoring
        assert restoring["phase"] in ARRIVED, restoring
        assert pod_facts(admin, nb)[0] == "gpu"
        fresh, restored = await reopen_and_restore(nb, user)
        assert restored["ok"] and restored["commit_id"] == restoring["checkpoint"]["commit_id"]
        assert (await user.execute(fresh, CHECK)).results == [CHECK_ANSWER]
        await second_is_back(user)


def test_fake_gpu_notebook_killed_during_the_checkpoint_step_two_notebooks(
        webhook, control_plane, admin, namespace, tmp_path):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        run(_notebook_killed_saving(nb, admin))


async def _notebook_killed_saving(nb: e2e.NotebookUnderTest, admin: Any) -> None:
    async with nb.user() as user:
        kernel = await session_with_state(nb, user)
        await second_notebook(user)
        # Checkpoints from before the move (the last verified ones): they must survive.
        status, _ = await user.gpushift("POST", "checkpoint",
                                        {"kernel_id": kernel, "path": "work.ipynb"})
        assert status == 200
        files = volume_files(nb)
        status, moved = await user.gpushift("POST", "migrate", {
            "target": "gpu", "reason": "manual", "kernel_id": kernel, "path": "work.ipynb",
            "pending_cell": None})
        assert status == 202, moved
        # At once, while the server saves both notebooks: JupyterLab (and its kernels)
        # die. The restarted server ends the move it finds waiting for checkpoints no
        # one makes now, long before the sidecar's save deadline; the pod stays.
        nb.runner.signal_container(nb.namespace, f"{nb.name}-0", nb.name)
        ended = await e2e.wait_for_migration(user, {"failed", "rolled_back", "done"}, 120,
                                             nb.logs)
        assert ended["id"] == moved["migration"]["id"] and ended["phase"] == "failed", ended
        assert "restarted while it saved" in (ended["error"] or ""), ended
        assert pod_facts(admin, nb) == ("cpu", e2e.CPU_IMAGE, None)
        # The user goes on: a fresh kernel works and kishu checkpoints again (a write
        # cut short by the kill is rolled back by sqlite), and nothing saved before the
        # move is gone.
        fresh = await user.open_notebook("work.ipynb")
        assert (await user.execute(fresh, "x = 1")).status == "ok"
        status, saved = await user.gpushift("POST", "checkpoint",
                                            {"kernel_id": fresh, "path": "work.ipynb"})
        assert status == 200, saved
        assert_nothing_lost(nb, files)


@pytest.mark.parametrize("fault", ["notebook_killed", "sidecar_killed", "new_pod_deleted",
                                   "new_pod_deleted_as_it_starts"])
def test_fake_gpu_fault_on_the_new_pod_two_notebooks(
        webhook, control_plane, admin, namespace, tmp_path, fault):
    with e2e.notebook(control_plane, admin, namespace, tmp_path) as nb:
        run(_fault_on_the_new_pod(nb, admin, fault))


async def _fault_on_the_new_pod(nb: e2e.NotebookUnderTest, admin: Any, fault: str) -> None:
    pod = f"{nb.name}-0"
    async with nb.user() as user:
        old_uid = wait_for_pod(admin.core, nb.namespace, pod, "exists",
                               lambda p: p.metadata.uid)
        moved = await state_then_move(nb, user, two=True, slow=True)
        if fault == "new_pod_deleted_as_it_starts":
            # The replacement pod goes away as soon as it exists (before its sidecar or
            # server run): the StatefulSet makes another, which finishes the move.
            wait_for_pod(admin.core, nb.namespace, pod, "replaced",
                         lambda p: p.metadata.uid != old_uid, 120)
            files = volume_files(nb)  # checkpointed (and verified) before the patch
            admin.core.delete_namespaced_pod(pod, nb.namespace, grace_period_seconds=0)
        else:
            # The new pod's server restores as soon as it is up, the second notebook for
            # 10 s: the fault lands in that restore.
            arrived = await e2e.wait_for_migration(user, ARRIVED, 180, nb.logs)
            assert arrived["phase"] == "restoring", arrived
            files = volume_files(nb)
            if fault == "notebook_killed":
                # The runner restarts JupyterLab, whose server restores the move again
                # (a restore cut short reported nothing, so the move waited for it).
                nb.runner.signal_container(nb.namespace, pod, nb.name)
            elif fault == "sidecar_killed":
                # The restore goes on; its report waits for the restarted sidecar,
                # which resumes the move from the volume.
                nb.runner.signal_container(nb.namespace, pod, "gpushift-sidecar")
            else:
                # The GPU pod goes away (a node drained, an admin's delete): the
                # StatefulSet makes another, whose sidecar finds the move on the volume
                # and whose server restores it again.
                admin.core.delete_namespaced_pod(pod, nb.namespace, grace_period_seconds=0)
        again = await e2e.wait_for_migration(user, {"done", "failed", "rolled_back"}, 240,
                                             nb.logs)
        assert again["id"] == moved["migration"]["id"] and again["phase"] == "done", (
            again["phase"], again["error"], again["history"])
        assert pod_facts(admin, nb) == ("gpu", e2e.CUDA_IMAGE, "1")
        assert_nothing_lost(nb, files)  # the checkpoints are untouched
        fresh, restored = await reopen_and_restore(nb, user)
        assert restored["ok"] and restored["migration"]["phase"] == "done", restored
        assert (await user.execute(fresh, CHECK)).results == [CHECK_ANSWER]
        assert_nothing_lost(nb, files)
        await second_is_back(user)
