"""Whole migrations by the real `gpushift-sidecar serve` process against the real control plane.

The sidecar runs here as a process with the env the webhook gives it, its pod facts (name,
UID, node, GPU) read from the real pod `<name>-0`, and a kubeconfig of the namespace's
`default-editor` ServiceAccount bound to Kubeflow's kubeflow-edit with the chart's sidecar
rules aggregated into it (as test_sidecar_patching.py does). The workspace is a hostPath
PV: the directory the sidecar sees is the one the pod mounts. The notebook controller of
the control plane recreates the pod; kwok runs it on a fake CPU or GPU node. "The new
pod" is a second sidecar process started with the new pod's facts on the same workspace
and a fresh runtime dir.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_patching as patching
from gpushift_testing.kishu_files import kishu_db
from gpushift_testing.kube import pod_summary, wait_for, workload_story
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.workloads import gpu_limit, node_kind, wait_running

from gpushift_webhook.config import WebhookConfig

# The Notebook fixture of the patching tests (admin, RBAC and token: conftest.py).
notebook = patching.notebook
CPU_IMAGE, CUDA_IMAGE, NB = patching.CPU_IMAGE, patching.CUDA_IMAGE, patching.NB

MIRROR = "gpushift.io/notebook-migration"
PREVIOUS = "gpushift.io/notebook-previous-profile"
SETTINGS = WebhookConfig(profiles=[patching.DEFAULT_PROFILE],
                         default_profile=patching.DEFAULT_PROFILE.name,
                         image_map=patching.IMAGE_MAP)


# ----------------------------------------------------------------------------- the process


@pytest.fixture
def sidecar_settings() -> WebhookConfig:
    """The webhook's settings the sidecar gets (conftest's start_sidecar)."""
    return SETTINGS


# ----------------------------------------------------------------------------- helpers


def read_notebook(admin: Any, namespace: str, name: str = "nb") -> dict[str, Any]:
    nb: dict[str, Any] = admin.custom.get_namespaced_custom_object(*NB, namespace,
                                                                   "notebooks", name)
    return nb


def annotation(nb: dict[str, Any], key: str) -> Any:
    value = (nb["metadata"].get("annotations") or {}).get(key)
    return None if value is None else json.loads(value)


def events(admin: Any, namespace: str) -> list[Any]:
    items = admin.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=nb,involvedObject.kind=Notebook").items
    return sorted(items, key=lambda e: (e.first_timestamp, e.metadata.creation_timestamp))


def wait_events(admin: Any, namespace: str, *reasons: str) -> list[Any]:
    def all_there() -> list[Any] | None:
        found = events(admin, namespace)
        return found if set(reasons) <= {e.reason for e in found} else None

    return wait_for(f"Events {reasons} on the Notebook", all_there, 20, describe=lambda: [
        (e.reason, e.message) for e in events(admin, namespace)])


def wait_gone(admin: Any, namespace: str, uid: str) -> None:
    """Pod nb-0 with `uid` deleted (what SIGTERMs the old pod's sidecar)."""
    def gone() -> bool:
        try:
            return bool(admin.core.read_namespaced_pod("nb-0", namespace).metadata.uid != uid)
        except Exception as e:  # 404 while the new one is not created yet
            return getattr(e, "status", None) == 404
    wait_for("old pod nb-0 gone", gone, 60, interval=0.05)


def no_traceback(*sidecars: SidecarProcess) -> None:
    for s in sidecars:
        assert "Traceback" not in s.logs(), s.logs()


# ----------------------------------------------------------------------------- the moves


async def test_to_gpu_with_a_checkpoint_restored_on_the_new_pod_then_back_to_cpu_on_idle(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    created = notebook("nb")
    workspace = tmp_path / "nb-workspace"  # the hostPath of the notebook's PV
    train = workspace / "work" / "train.ipynb"
    kishu_db(train, "c-1", workspace=workspace)
    cpu_pod = wait_running(admin.core, namespace, "nb-0")
    first = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-1")
    assert first.request("GET", "/runtime-config")[1]["usingGPU"] is False

    t0 = time.monotonic()
    status, accepted = first.request("POST", "/migrations", {
        "target": "gpu", "reason": "manual",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})
    assert status == 202, accepted
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=cpu_pod.metadata.uid)
    moved_s = time.monotonic() - t0
    assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", (
        pod_summary(gpu_pod), workload_story(admin.core, admin.apps, namespace))
    assert gpu_limit(gpu_pod) == "1" and gpu_pod.spec.containers[0].image == CUDA_IMAGE

    m = first.wait_phase("recreating")
    assert [h["phase"] for h in m["history"]] == [
        "requested", "checkpointing", "checkpointed", "patching", "recreating"]
    nb = read_notebook(admin, namespace)
    assert annotation(nb, MIRROR) == {"id": m["id"], "phase": "recreating", "target": "gpu",
                                      "trigger": "manual", "updated": m["updated_at"]}
    assert annotation(nb, PREVIOUS) == m["previous_profile"]
    assert m["previous_profile"]["fields"]["image"]["before"] == {"present": True,
                                                                  "value": CPU_IMAGE}
    # The mirror and the record stay on the Notebook: not copied into the pod.
    assert MIRROR not in (gpu_pod.metadata.annotations or {})
    assert PREVIOUS not in (gpu_pod.metadata.annotations or {})
    wait_gone(admin, namespace, cpu_pod.metadata.uid)
    assert first.stop() == 0  # the kubelet's SIGTERM: a graceful stop in `recreating`

    # The new pod's sidecar: same workspace volume, a fresh runtime emptyDir.
    second = start_sidecar(PodFacts.of(gpu_pod), workspace, "run-2")
    m = second.wait_phase("restoring")
    assert m["id"] == accepted["id"]
    config = second.request("GET", "/runtime-config")[1]
    assert config["usingGPU"] is True and config["migration"]["phase"] == "restoring"
    assert json.loads((second.runtime_dir / "runtime-config.json").read_text())[
        "migration"]["phase"] == "restoring"
    status, done = second.request("POST", "/migrations/current/restore", {
        "ok": True, "restored": ["model", "df"],
        "not_restored": [{"name": "conn", "reason": "a socket cannot be pickled"}]})
    assert status == 200 and done["phase"] == "done", done
    assert done["restore_report"]["restored"] == ["model", "df"]
    assert second.request("POST", "/migrations/current/restore", {"ok": True})[0] == 409
    wait_for("mirror done", lambda: annotation(read_notebook(admin, namespace),
                                               MIRROR)["phase"] == "done", 10)
    reasons = ("MigrationRequested", "CheckpointVerified", "NotebookPatched",
               "MigrationRestoring", "MigrationDone")
    # The move's own Events: Kubeflow's notebook-controller also re-issues its
    # StatefulSet's and pod's on the Notebook (a FailedCreate while the old pod
    # terminates is a Warning that says nothing about the move).
    story = [e for e in wait_events(admin, namespace, *reasons) if e.reason in reasons]
    assert all(e.type == "Normal" for e in story), [(e.type, e.reason, e.message)
                                                    for e in story]
    assert all(e.involved_object.uid == created["metadata"]["uid"] for e in story)
    patched = next(e for e in story if e.reason == "NotebookPatched")
    assert "to GPU (profile nvidia-1)" in patched.message and CUDA_IMAGE in patched.message
    assert "conn (a socket cannot be pickled)" in next(
        e for e in story if e.reason == "MigrationDone").message

    # --- back to CPU on idle, with a newer checkpoint
    kishu_db(train, "c-2", workspace=workspace)
    status, back = second.request("POST", "/migrations", {
        "target": "cpu", "reason": "idle",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-2"}})
    assert status == 202, back
    cpu_again = wait_running(admin.core, namespace, "nb-0", not_uid=gpu_pod.metadata.uid)
    assert node_kind(admin.core, cpu_again.spec.node_name) == "cpu", (
        pod_summary(cpu_again), workload_story(admin.core, admin.apps, namespace),
        second.logs()[-4000:])
    assert gpu_limit(cpu_again) is None and cpu_again.spec.containers[0].image == CPU_IMAGE
    assert read_notebook(admin, namespace)["spec"] == created["spec"]  # the original spec
    second.wait_phase("recreating")
    wait_gone(admin, namespace, gpu_pod.metadata.uid)
    assert second.stop() == 0
    third = start_sidecar(PodFacts.of(cpu_again), workspace, "run-3")
    third.wait_phase("restoring")
    wait_for("the previous-profile record dropped (nothing left to undo)", lambda: (
        PREVIOUS not in read_notebook(admin, namespace)["metadata"]["annotations"]), 10)
    status, done = third.request("POST", "/migrations/current/restore",
                                 {"ok": True, "restored": ["model", "df"]})
    assert status == 200 and done["phase"] == "done" and done["reason"] == "idle"
    assert third.stop() == 0
    no_traceback(first, second, third)
    print(f"\nPOST /migrations -> GPU pod Running: {moved_s:.2f}s")


async def test_an_unverified_checkpoint_fails_and_the_notebook_is_not_touched(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    notebook("nb")
    workspace = tmp_path / "nb-workspace"
    train = workspace / "train.ipynb"
    db = kishu_db(train, "c-1", workspace=workspace)
    db.with_name(db.name + "-journal").write_bytes(b"kishu is writing")
    pod = wait_running(admin.core, namespace, "nb-0")
    before = read_notebook(admin, namespace)
    sidecar = start_sidecar(PodFacts.of(pod), workspace, "run", checkpoint_timeout=1.5)
    t0 = time.monotonic()
    status, _ = sidecar.request("POST", "/migrations", {
        "target": "gpu", "reason": "auto",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})
    assert status == 202
    m = sidecar.wait_phase("failed")
    assert 1.5 <= time.monotonic() - t0 < 10
    assert "not verified within 1.5s (incomplete)" in m["error"], m
    assert "train.ipynb.kishudb-journal is present" in m["error"]
    assert [h["phase"] for h in m["history"]] == ["requested", "checkpointing", "failed"]
    after = read_notebook(admin, namespace)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert annotation(after, PREVIOUS) is None
    # The mirror follows the state file (written right after it).
    wait_for("mirror failed", lambda: annotation(read_notebook(admin, namespace),
                                                 MIRROR)["phase"] == "failed", 10)
    assert admin.core.read_namespaced_pod("nb-0", namespace).metadata.uid == pod.metadata.uid
    story = wait_events(admin, namespace, "MigrationRequested", "MigrationFailed")
    failed = next(e for e in story if e.reason == "MigrationFailed")
    assert failed.type == "Warning" and "journal" in failed.message
    assert "NotebookPatched" not in {e.reason for e in story}
    assert sidecar.stop() == 0
    no_traceback(sidecar)


async def test_a_sidecar_killed_right_after_the_patch_resumes_without_patching_again(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    notebook("nb")
    workspace = tmp_path / "nb-workspace"
    train = workspace / "train.ipynb"
    kishu_db(train, "c-1", workspace=workspace)
    cpu_pod = wait_running(admin.core, namespace, "nb-0")
    facts = PodFacts.of(cpu_pod)
    generation = read_notebook(admin, namespace)["metadata"]["generation"]
    first = start_sidecar(facts, workspace, "run")
    status, accepted = first.request("POST", "/migrations", {
        "target": "gpu", "reason": "auto",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})
    assert status == 202

    def patched() -> bool:
        nb = read_notebook(admin, namespace)
        return bool(nb["metadata"]["generation"] > generation)

    wait_for("the Notebook patched", patched, 20, interval=0.005)
    first.stop(signal.SIGKILL)
    on_disk = json.loads((workspace / ".gpushift" / "migration-nb.json").read_text())
    assert on_disk["phase"] in ("patching", "recreating"), on_disk["phase"]
    patched_generation = read_notebook(admin, namespace)["metadata"]["generation"]

    # The container restarts in the same pod: same UID, same runtime dir.
    again = start_sidecar(facts, workspace, "run")
    m = again.wait_phase("recreating")
    wait_for("the restarted sidecar decided", lambda: (
        "waiting for this pod to be replaced" in again.logs()
        or "the patch had landed already" in again.logs()), 20)
    assert m["id"] == accepted["id"] and m["previous_profile"] is not None
    assert read_notebook(admin, namespace)["metadata"]["generation"] == patched_generation
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=cpu_pod.metadata.uid)
    assert again.stop() == 0

    new = start_sidecar(PodFacts.of(gpu_pod), workspace, "run-new")
    new.wait_phase("restoring")
    assert new.request("POST", "/migrations/current/restore", {"ok": True})[1]["phase"] == "done"
    wait_for("mirror done", lambda: annotation(read_notebook(admin, namespace),
                                               MIRROR)["phase"] == "done", 10)
    nb = read_notebook(admin, namespace)
    assert nb["metadata"]["generation"] == patched_generation  # one patch of the spec, ever
    patches = [e for e in events(admin, namespace) if e.reason == "NotebookPatched"]
    assert len(patches) <= 1  # 0 when the kill came before the Event was sent
    assert new.stop() == 0
    no_traceback(again, new)
