"""The migration runner's steps against a fake API server behind the real `KubeApi` (the
real control plane is in tests/cluster/test_sidecar_migration.py); its decisions are in
test_migration_steps.py."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import time
import types
from typing import Any

from migration_fixtures import (
    FAST,
    GPU,
    NEW_UID,
    SOURCE_UID,
    environ,
    notebook_cr,
    phases,
    status,
)

from gpushift_core.kube import KubeApi
from gpushift_core.kube.connection import ApiError, ClusterAccess, Connection
from gpushift_core.patches import apply
from gpushift_sidecar.api import make_app
from gpushift_sidecar.api_requests import NamedCheckpoints, RestoreReport
from gpushift_sidecar.checkpoint_database import Verdict, VerdictStatus
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_steps import (
    NO_CHECKPOINT_NOTE,
    plan_patch,
)
from gpushift_sidecar.runner import RunnerConfig, StepRunner
from gpushift_sidecar.service import Sidecar
from gpushift_sidecar.state import (
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
    CheckpointRef,
    Migration,
    Phase,
    Reason,
    Target,
)
from gpushift_sidecar.state_file import MigrationStore
from gpushift_sidecar.token import TOKEN_FILE
from gpushift_sidecar.tracker import MigrationTracker


class FakeServer:
    """The API server as the sidecar's KubeApi sees it: one Notebook (JSON Patches with a
    resourceVersion test), its pod, and Events."""

    def __init__(self, pod_uid: str = SOURCE_UID) -> None:
        self.nb = notebook_cr()
        self.pod_uid = pod_uid
        self.patches: list[list[dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.refuse_patch: ApiError | None = None
        self.patch_delay = 0.0

    # CustomObjectsApi
    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return copy.deepcopy(self.nb)

    def patch_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                       name: str, body: list[dict[str, Any]],
                                       **kw: Any) -> dict[str, Any]:
        if self.refuse_patch is not None:
            raise self.refuse_patch
        time.sleep(self.patch_delay)  # in KubeApi's worker thread
        assert body[0] == {"op": "test", "path": "/metadata/resourceVersion",
                           "value": body[0]["value"]}
        if body[0]["value"] != self.nb["metadata"]["resourceVersion"]:
            raise status(422, "Invalid", "the server rejected our request")
        self.patches.append(body)
        self.nb = apply(self.nb, body)
        self.nb["metadata"]["resourceVersion"] = str(int(self.nb["metadata"]
                                                         ["resourceVersion"]) + 1)
        return copy.deepcopy(self.nb)

    # CoreV1Api
    def read_namespaced_pod(self, name: str, ns: str, **kw: Any) -> Any:
        return types.SimpleNamespace(data=json.dumps({"metadata": {"uid": self.pod_uid}}))

    def create_namespaced_event(self, ns: str, body: dict[str, Any], **kw: Any) -> Any:
        self.events.append(body)
        return types.SimpleNamespace(data=json.dumps(body))

    # what tests look at
    @property
    def spec_patches(self) -> list[list[dict[str, Any]]]:
        return [p for p in self.patches if any("/spec/" in op["path"] for op in p)]

    def annotation(self, key: str = MIGRATION_ANNOTATION) -> Any:
        value = self.nb["metadata"].get("annotations", {}).get(key)
        return None if value is None else json.loads(value)

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.events]


def kube_for(server: FakeServer) -> KubeApi:
    api = KubeApi(Connection(ClusterAccess(server="http://127.0.0.1:1")), retry=FAST,
                  instance="pod-0")
    api.custom_objects = server  # type: ignore[assignment]
    api.core_v1 = server  # type: ignore[assignment]
    return api


def complete(path: str, commit: str) -> Verdict:
    return Verdict(VerdictStatus.COMPLETE, "the commit is in the database", commit,
                   path + ".kishudb")


def journal(path: str, commit: str) -> Verdict:
    return Verdict(VerdictStatus.INCOMPLETE, "kishu is writing: a.kishudb-journal is present",
                   commit, path + ".kishudb")


class Pod:
    """One sidecar's runner (its env, a tracker on the shared state file)."""

    def __init__(self, tmp_path, server: FakeServer, *, uid: str = SOURCE_UID,
                 gpu: tuple[str, int] | None = None, runtime: str = "run",
                 verify=complete, timeout: float = 0.3,
                 restore_timeout: float = 600.0, save_timeout: float = 600.0) -> None:
        self.env = SidecarEnv.from_environ(environ(tmp_path, uid=uid, gpu=gpu,
                                                   runtime=runtime))
        self.tracker = MigrationTracker(MigrationStore.for_env(self.env))
        self.runner = StepRunner(self.env, self.tracker, kube_for(server), verify=verify,
                                 config=RunnerConfig(checkpoint_timeout=timeout,
                                                     checkpoint_poll=0.02,
                                                     restore_timeout=restore_timeout,
                                                     save_timeout=save_timeout))

    def new(self, target: Target = Target.GPU, checkpoint: bool = True,
            reason: Reason = Reason.MANUAL, others: tuple[str, ...] = ()) -> Migration:
        ref = (CheckpointRef(str(self.env.workspace_dir / "a.ipynb"), "c-1")
               if checkpoint else None)
        m = Migration.new(self.env, target=target, reason=reason,
                          profile="nvidia-1" if target is Target.GPU else None,
                          checkpoint=ref, pending_cell=None, now=dt.datetime.now(dt.UTC),
                          other_checkpoints=tuple(
                              CheckpointRef(str(self.env.workspace_dir / f"{name}.ipynb"),
                                            f"c-{name}") for name in others))
        return self.tracker.begin(m)

    async def run(self, migration: Migration) -> Migration:
        await self.runner.start(migration)
        assert self.runner._task is not None
        await asyncio.wait_for(self.runner._task, 5)
        await self.runner.stop()  # sends the queued Events
        assert self.tracker.current is not None
        return self.tracker.current



async def test_to_gpu_checkpoint_verified_patched_then_restored_on_the_new_pod(tmp_path):
    server = FakeServer()
    old = Pod(tmp_path, server)
    m = await old.run(old.new())
    assert phases(m) == ["requested", "checkpointing", "checkpointed", "patching",
                         "recreating"]
    assert len(server.spec_patches) == 1  # one patch moved it, with the annotations
    [patch] = server.spec_patches
    assert any(op["path"].endswith("notebook-migration") for op in patch)
    assert any(op["path"].endswith("notebook-previous-profile") for op in patch)
    assert server.annotation()["phase"] == "recreating"
    assert m.previous_profile == server.annotation(PREVIOUS_PROFILE_ANNOTATION)
    assert server.reasons() == ["MigrationRequested", "CheckpointVerified",
                                "NotebookPatched"]
    assert all(e["involvedObject"]["uid"] == "nb-uid" for e in server.events)
    on_disk = json.loads(old.tracker.store.path.read_text())
    assert on_disk["phase"] == "recreating"

    # The pod that replaced it: same volume, new uid, a GPU.
    server.pod_uid = NEW_UID
    new = Pod(tmp_path, server, uid=NEW_UID, gpu=(GPU, 1), runtime="run-2")
    assert new.tracker.current is not None
    m = await new.run(new.tracker.current)
    assert m.phase is Phase.RESTORING and server.annotation()["phase"] == "restoring"
    assert len(server.spec_patches) == 1
    done = await new.runner.restored(m, RestoreReport(True, ("x", "df"), (("conn", "socket"),),
                                                      None))
    await new.runner.stop()
    assert done.phase is Phase.DONE and done.restore_report is not None
    assert done.restore_report["restored"] == ["x", "df"]
    assert done.restore_report["not_restored"] == [{"name": "conn", "reason": "socket"}]
    assert server.annotation()["phase"] == "done"
    assert server.reasons()[-2:] == ["MigrationRestoring", "MigrationDone"]
    assert "conn (socket)" in server.events[-1]["message"]


async def test_an_unverified_checkpoint_fails_without_a_patch(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server, verify=journal, timeout=0.2)
    m = await pod.run(pod.new())
    assert m.phase is Phase.FAILED and phases(m)[-2] == "checkpointing"
    assert "not verified within 0.2s (incomplete)" in m.error
    assert "a.kishudb-journal is present" in m.error
    assert server.spec_patches == [] and server.nb["spec"] == notebook_cr()["spec"]
    assert server.annotation()["phase"] == "failed"
    assert server.reasons() == ["MigrationRequested", "MigrationFailed"]
    assert server.events[-1]["type"] == "Warning"


async def test_a_checkpoint_that_lands_while_waiting_is_taken(tmp_path):
    server = FakeServer()
    looks: list[int] = []

    def lands_late(path: str, commit: str) -> Verdict:
        looks.append(1)
        return complete(path, commit) if len(looks) >= 3 else journal(path, commit)

    pod = Pod(tmp_path, server, verify=lands_late, timeout=2)
    m = await pod.run(pod.new())
    assert m.phase is Phase.RECREATING and len(looks) == 3


async def test_every_notebooks_checkpoint_is_verified_before_the_patch(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server, verify=complete)
    m = await pod.run(pod.new(others=("b", "c")))
    assert m.phase is Phase.RECREATING
    assert server.reasons().count("CheckpointVerified") == 3
    assert "3 checkpoints (c-1, c-b, c-c)" in server.events[0]["message"]


async def test_one_unverified_notebook_fails_the_move_without_a_patch(tmp_path):
    server = FakeServer()

    def b_is_incomplete(path: str, commit: str) -> Verdict:
        return journal(path, commit) if path.endswith("/b.ipynb") else complete(path, commit)

    pod = Pod(tmp_path, server, verify=b_is_incomplete, timeout=0.2)
    m = await pod.run(pod.new(others=("b", "c")))
    assert m.phase is Phase.FAILED and "checkpoint c-b of" in m.error
    assert server.spec_patches == [] and "CheckpointVerified" not in server.reasons()


async def test_no_checkpoint_goes_on_and_notes_the_state_is_not_restored(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server, verify=journal)
    m = await pod.run(pod.new(checkpoint=False))
    assert m.phase is Phase.RECREATING and m.notes == (NO_CHECKPOINT_NOTE,)
    assert "CheckpointSkipped" in server.reasons()


async def test_an_api_refusal_fails_with_the_status_message(tmp_path):
    server = FakeServer()
    server.refuse_patch = status(403, "Forbidden", 'notebooks.kubeflow.org "my-notebook" is '
                                 "forbidden: User cannot patch resource")
    pod = Pod(tmp_path, server)
    m = await pod.run(pod.new())
    assert m.phase is Phase.FAILED
    assert "403 Forbidden: notebooks.kubeflow.org \"my-notebook\" is forbidden" in m.error
    assert server.nb["spec"] == notebook_cr()["spec"]


async def test_nothing_to_change_ends_done_with_a_note(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server, gpu=(GPU, 1))  # env says GPU; the Notebook is on CPU
    m = await pod.run(pod.new(target=Target.CPU, reason=Reason.IDLE))
    assert phases(m)[-2:] == ["patching", "done"]
    assert "nothing patched" in m.notes[-1] and server.spec_patches == []


async def test_killed_after_the_patch_resumes_without_patching_again(tmp_path):
    """The state file still says `patching` (killed before persisting `recreating`)."""
    server = FakeServer()
    first = Pod(tmp_path, server)
    m = first.new()
    for phase in (Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING):
        m = first.tracker.advance(m.id, phase)
    # The patch as the killed sidecar sent it.
    d = plan_patch(server.nb, m, first.env.settings, now=dt.datetime.now(dt.UTC),
                   container=None, held=None)
    server.patch_namespaced_custom_object("", "", "", "", "", d.operations)
    # Restarted in the same pod.
    again = Pod(tmp_path, server)
    m = await again.run(again.tracker.current)
    assert m.phase is Phase.RECREATING and len(server.spec_patches) == 1
    assert m.previous_profile == d.previous_profile  # recovered from the Notebook
    assert "NotebookPatched" not in server.reasons()
    # Restarted once more (state `recreating`, same uid): still waits, no patch.
    third = Pod(tmp_path, server)
    m = await third.run(third.tracker.current)
    assert m.phase is Phase.RECREATING and len(server.spec_patches) == 1


async def test_the_new_pod_finds_a_landed_patch_the_state_file_missed(tmp_path):
    """Killed in `patching` after the patch: the pod that replaced it goes on."""
    server = FakeServer()
    first = Pod(tmp_path, server)
    m = first.new()
    for phase in (Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING):
        m = first.tracker.advance(m.id, phase)
    d = plan_patch(server.nb, m, first.env.settings, now=dt.datetime.now(dt.UTC),
                   container=None, held=None)
    server.patch_namespaced_custom_object("", "", "", "", "", d.operations)
    server.pod_uid = NEW_UID
    new = Pod(tmp_path, server, uid=NEW_UID, gpu=(GPU, 1), runtime="run-2")
    m = await new.run(new.tracker.current)
    assert phases(m)[-3:] == ["patching", "recreating", "restoring"]
    assert len(server.spec_patches) == 1


async def test_a_restarted_old_pod_patches_again_when_the_spec_was_changed_back(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server)
    await pod.run(pod.new())
    # Someone (not the guard: no rollback marked) puts the CPU spec back.
    server.nb["spec"] = notebook_cr()["spec"]
    again = Pod(tmp_path, server)
    m = await again.run(again.tracker.current)
    assert m.phase is Phase.RECREATING and len(server.spec_patches) == 2
    assert "patched again" in server.events[-1]["message"]


async def test_the_guards_rollback_is_taken_by_the_new_pod(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server)
    m = await pod.run(pod.new())
    # The guard: previous profile back, mirror marked, record removed, pod deleted.
    server.nb["spec"] = notebook_cr()["spec"]
    server.nb["metadata"]["annotations"][MIGRATION_ANNOTATION] = json.dumps(
        {"id": m.id, "phase": "rolled_back", "target": "gpu", "updated": "x",
         "reason": "0/3 nodes are available: 1 Insufficient nvidia.com/gpu"})
    del server.nb["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION]
    server.pod_uid = "uid-third"
    back = Pod(tmp_path, server, uid="uid-third", runtime="run-2")  # on CPU again
    m = await back.run(back.tracker.current)
    assert m.phase is Phase.ROLLED_BACK and "Insufficient nvidia.com/gpu" in m.error
    assert server.reasons()[-1] == "MigrationRolledBack"
    assert server.events[-1]["type"] == "Warning"
    assert json.loads(server.nb["metadata"]["annotations"][MIGRATION_ANNOTATION])[
        "phase"] == "rolled_back"


async def test_to_cpu_uses_the_record_and_drops_it_once_on_cpu(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server)
    await pod.run(pod.new())
    server.pod_uid = NEW_UID
    gpu_pod = Pod(tmp_path, server, uid=NEW_UID, gpu=(GPU, 1), runtime="run-2")
    m = await gpu_pod.run(gpu_pod.tracker.current)
    await gpu_pod.runner.restored(m, RestoreReport(True, (), (), None))
    await gpu_pod.runner.stop()
    back = gpu_pod.new(target=Target.CPU, reason=Reason.IDLE)
    m = await gpu_pod.run(back)
    assert m.phase is Phase.RECREATING and server.nb["spec"] == notebook_cr()["spec"]
    assert PREVIOUS_PROFILE_ANNOTATION in server.nb["metadata"]["annotations"]
    server.pod_uid = "uid-cpu"
    cpu_pod = Pod(tmp_path, server, uid="uid-cpu", runtime="run-3")
    m = await cpu_pod.run(cpu_pod.tracker.current)
    assert m.phase is Phase.RESTORING
    assert PREVIOUS_PROFILE_ANNOTATION not in server.nb["metadata"]["annotations"]
    failed = await cpu_pod.runner.restored(m, RestoreReport(False, (), (), "kernel died"))
    assert failed.phase is Phase.FAILED and "kernel died" in failed.error
    assert "still on the workspace volume" in failed.error


async def test_a_new_migration_right_after_the_restore_is_not_lost(tmp_path):
    """The restore report can arrive while the new pod's runner still writes the
    `restoring` mirror; a migration begun right after must run, and the late mirror
    write must not put the ended migration back on the Notebook."""
    server = FakeServer()
    pod = Pod(tmp_path, server)
    await pod.run(pod.new())
    server.pod_uid = NEW_UID
    new = Pod(tmp_path, server, uid=NEW_UID, gpu=(GPU, 1), runtime="run-2")
    server.patch_delay = 0.2
    await new.runner.start(new.tracker.current)
    m = await asyncio.wait_for(_until(lambda: new.tracker.current.phase is Phase.RESTORING), 5)
    assert new.runner._task is not None and not new.runner._task.done()  # mirror in flight
    await new.runner.restored(new.tracker.current, RestoreReport(True, (), (), None))
    server.patch_delay = 0.0
    back = new.new(target=Target.CPU, reason=Reason.IDLE)
    m = await new.run(back)
    assert m.id == back.id and m.phase is Phase.RECREATING
    await asyncio.sleep(0.3)
    assert server.annotation()["id"] == back.id
    assert server.annotation()["phase"] == "recreating"


async def _on_the_new_pod(tmp_path, server: FakeServer, restore_timeout: float) -> Pod:
    """A move to GPU patched by the old pod; the new pod's runner started."""
    old = Pod(tmp_path, server)
    await old.run(old.new())
    server.pod_uid = NEW_UID
    new = Pod(tmp_path, server, uid=NEW_UID, gpu=(GPU, 1), runtime="run-2",
              restore_timeout=restore_timeout)
    await new.runner.start(new.tracker.current)
    return new


async def test_restoring_ends_failed_at_its_deadline_with_the_checkpoint_kept(tmp_path):
    """No restore was ever reported (the tab closed during the move, no browser came):
    the move ends at its deadline, so it neither holds the GPU nor refuses later moves;
    the checkpoint is named as kept."""
    server = FakeServer()
    new = await _on_the_new_pod(tmp_path, server, restore_timeout=0.3)
    await asyncio.wait_for(_until(lambda: new.tracker.current.phase is Phase.RESTORING), 5)
    await asyncio.wait_for(_until(lambda: new.tracker.current.phase is Phase.FAILED), 5)
    failed = new.tracker.current
    assert failed.error.startswith("no restore was reported within 0.3s of the new pod")
    assert "kishu commit c-1" in failed.error and "kept on the workspace volume" in failed.error
    # The mirror follows the state file (written by the same ending, after it).
    await asyncio.wait_for(_until(lambda: server.annotation()["phase"] == "failed"), 5)
    await new.runner.stop()
    assert server.reasons()[-2:] == ["MigrationRestoring", "MigrationFailed"]
    back = new.new(target=Target.CPU, reason=Reason.IDLE)  # a later move begins
    assert back.phase is Phase.REQUESTED


async def test_a_restore_reported_in_time_disarms_the_deadline(tmp_path):
    server = FakeServer()
    new = await _on_the_new_pod(tmp_path, server, restore_timeout=0.3)
    await asyncio.wait_for(_until(lambda: new.tracker.current.phase is Phase.RESTORING), 5)
    done = await new.runner.restored(new.tracker.current, RestoreReport(True, (), (), None))
    await asyncio.sleep(0.5)
    assert new.tracker.current == done and done.phase is Phase.DONE
    await new.runner.stop()


async def test_a_restarted_sidecar_keeps_the_deadline_of_the_file(tmp_path):
    """The deadline counts from entering `restoring` as the state file has it: a
    sidecar restarted after the deadline ends the move at once, not a full timeout
    later."""
    server = FakeServer()
    new = await _on_the_new_pod(tmp_path, server, restore_timeout=600)
    await asyncio.wait_for(_until(lambda: new.tracker.current.phase is Phase.RESTORING), 5)
    await new.runner.stop()
    await asyncio.sleep(0.4)
    again = Pod(tmp_path, server, uid=NEW_UID, gpu=(GPU, 1), runtime="run-2",
                restore_timeout=0.3)
    assert again.tracker.current.phase is Phase.RESTORING
    await again.runner.start(again.tracker.current)
    await asyncio.wait_for(_until(lambda: again.tracker.current.phase is Phase.FAILED), 1)
    await again.runner.stop()


async def _until(check) -> bool:
    while not check():
        await asyncio.sleep(0.01)
    return True


# ----------------------------------------------------------------------------- the endpoint


async def test_restore_endpoint(aiohttp_client, tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server)
    sidecar = Sidecar.create(pod.env, pod.runner, tracker=pod.tracker)
    pod.tracker.on_change = sidecar.migration_changed
    assert sidecar.files.write_now()
    http = await aiohttp_client(make_app(sidecar))
    token = (pod.env.runtime_dir / TOKEN_FILE).read_text().strip()
    body = {"ok": True, "restored": ["x"], "not_restored": [], "detail": None}
    r = await http.post("/migrations/current/restore", json=body)
    assert r.status == 401
    http.session.headers["Authorization"] = f"Bearer {token}"
    r = await http.post("/migrations/current/restore", json=body)
    assert r.status == 409 and (await r.json())["error"] == "not_restoring"
    m = await pod.run(pod.new())  # to recreating
    r = await http.post("/migrations/current/restore", json=body)
    assert r.status == 409 and (await r.json())["migration"]["phase"] == "recreating"
    for bad in ({"ok": "yes"}, {"ok": True, "restored": "x"},
                {"ok": True, "not_restored": [{"name": "x"}]}, {"ok": True, "extra": 1}):
        r = await http.post("/migrations/current/restore", json=bad)
        assert r.status == 400, bad
    pod.tracker.advance(m.id, Phase.RESTORING)
    answers = await asyncio.gather(*[http.post("/migrations/current/restore", json=body)
                                     for _ in range(3)])
    assert sorted(a.status for a in answers) == [200, 409, 409]
    [ended] = [await a.json() for a in answers if a.status == 200]
    assert ended["phase"] == "done" and ended["restore_report"]["restored"] == ["x"]
    config = json.loads((pod.env.runtime_dir / "runtime-config.json").read_text())
    assert config["migration"]["phase"] == "done" and not config["migration"]["active"]
    await pod.runner.stop()


def api_of(pod: Pod) -> Sidecar:
    sidecar = Sidecar.create(pod.env, pod.runner, tracker=pod.tracker)
    pod.tracker.on_change = sidecar.migration_changed
    assert sidecar.files.write_now()
    return sidecar


def saving(pod: Pod) -> Migration:
    """A move accepted before its notebooks were saved (`/migrate` answers at once)."""
    return pod.tracker.begin(Migration.new(
        pod.env, target=Target.GPU, reason=Reason.MANUAL, profile="nvidia-1",
        checkpoint=None, pending_cell=None, now=dt.datetime.now(dt.UTC),
        checkpoints_to_come=True))


async def test_a_move_waits_for_its_checkpoints_then_verifies_and_patches(aiohttp_client,
                                                                          tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server)
    http = await aiohttp_client(make_app(api_of(pod)))
    http.session.headers["Authorization"] = (
        f"Bearer {(pod.env.runtime_dir / TOKEN_FILE).read_text().strip()}")
    m = saving(pod)
    await pod.runner.start(m)
    await asyncio.sleep(0.2)
    assert pod.tracker.current.phase is Phase.CHECKPOINTING  # waits: nothing patched
    assert server.spec_patches == []
    ws = pod.env.workspace_dir
    for bad, error in (({"migration_id": m.id, "checkpoint": "c"}, "invalid_field"),
                       ({"migration_id": m.id, "error": "x", "checkpoint": {
                           "notebook_path": f"{ws}/a.ipynb", "commit_id": "c"}},
                        "invalid_field"),
                       ({"migration_id": m.id, "extra": 1}, "unknown_field")):
        r = await http.post("/migrations/current/checkpoints", json=bad)
        assert r.status == 400 and (await r.json())["error"] == error, bad
    r = await http.post("/migrations/current/checkpoints", json={"migration_id": "other"})
    assert r.status == 409 and (await r.json())["error"] == "not_waiting_for_checkpoints"
    r = await http.post("/migrations/current/checkpoints", json={
        "migration_id": m.id,
        "checkpoint": {"notebook_path": f"{ws}/a.ipynb", "commit_id": "c-1"},
        "other_checkpoints": [{"notebook_path": f"{ws}/b.ipynb", "commit_id": "c-b"}]})
    assert r.status == 200, await r.json()
    assert pod.runner._task is not None
    await asyncio.wait_for(pod.runner._task, 5)
    await pod.runner.stop()
    m = pod.tracker.current
    assert m.phase is Phase.RECREATING and not m.checkpoints_to_come
    assert [c.commit_id for c in m.checkpoints] == ["c-1", "c-b"]
    assert server.reasons().count("CheckpointVerified") == 2
    r = await http.post("/migrations/current/checkpoints", json={"migration_id": m.id})
    assert r.status == 409  # named already


async def test_notebooks_that_could_not_be_saved_fail_the_move_unpatched(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server)
    m = saving(pod)
    await pod.runner.start(m)
    await asyncio.sleep(0.1)
    failed = await pod.runner.checkpoints_named(m, NamedCheckpoints(
        m.id, None, (), "eval.ipynb: kishu could not write its database"))
    await asyncio.wait_for(pod.runner._task, 5)
    await pod.runner.stop()
    assert failed.phase is Phase.FAILED and "eval.ipynb: kishu could not" in failed.error
    assert "nothing was changed" in failed.error
    assert server.spec_patches == [] and server.reasons()[-1] == "MigrationFailed"


async def test_a_move_whose_checkpoints_never_come_fails_at_its_deadline(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server, save_timeout=0.3)
    m = await pod.run(saving(pod))
    assert m.phase is Phase.FAILED and "not saved within 0.3s" in m.error
    assert server.spec_patches == []


async def test_a_restarted_sidecar_keeps_the_save_deadline_of_the_file(tmp_path):
    server = FakeServer()
    pod = Pod(tmp_path, server, save_timeout=60)
    m = saving(pod)
    # It entered `checkpointing` two minutes ago (the sidecar that took it was killed).
    waiting = pod.tracker.advance(m.id, Phase.CHECKPOINTING,
                                  now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120))
    ended = await pod.run(waiting)  # within run()'s 5 s, not 60
    assert ended.phase is Phase.FAILED and "not saved within 60s" in ended.error
    assert server.spec_patches == []
