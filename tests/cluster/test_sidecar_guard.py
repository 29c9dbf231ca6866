"""No free GPU: the real sidecar's move is rolled back by the real guard, end to end.

A Notebook with a PV/PVC workspace (hostPath: the folder the sidecar sees) runs on CPU;
every GPU of the kwok GPU nodes is taken by another pod first. The real
`gpushift-sidecar serve` process of pod nb-0 (`default-editor` kubeconfig, kubeflow-edit,
as in test_sidecar_migration.py) gets `POST /migrations` to GPU with a verified kishu
checkpoint and patches the Notebook; the notebook controller recreates nb-0, which stays
Pending (Insufficient nvidia.com/gpu). One real `gpushift-webhook serve --guard` process
(the chart's webhook RBAC, guard.ready_timeout_seconds: 10) rolls the move back: Notebook
spec as before, the stuck pod deleted, a CPU pod Running. The sidecar of that new pod
(its uid from the API, the same workspace, a fresh runtime dir) reports the migration
`rolled_back` with the scheduler's reason, in its API and runtime-config.json; Events tell
it on the Notebook; the workspace files are byte for byte what they were. Then a second
move to GPU is accepted, and once the GPU is freed it lands on the GPU node and completes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_migration as mig
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary, wait_for
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.workloads import gpu_limit, node_kind, wait_pending, wait_running
from guard_processes import GuardProcess, running_guards

# The Notebook, its PV workspace, the sidecar's RBAC and process: as in the migration tests.
notebook, sidecar_settings = mig.notebook, mig.sidecar_settings
CPU_IMAGE, CUDA_IMAGE, MIRROR, PREVIOUS = mig.CPU_IMAGE, mig.CUDA_IMAGE, mig.MIRROR, mig.PREVIOUS

RELEASE = "sidecarguard"  # not test_guard_cluster's: its cluster-scoped RBAC is its own
FULLNAME = f"{RELEASE}-gpushift"
LEASE = f"{FULLNAME}-guard"
READY_TIMEOUT = 10  # the least the config allows
INSUFFICIENT = "Insufficient nvidia.com/gpu"
ROLLED_BACK_LINE = "guard: migration rolled back"


# ----------------------------------------------------------------------------- the guard


@pytest.fixture
def guard_ready_timeout() -> int:
    """The guard's ready_timeout_seconds (a module that imports `guard` may override)."""
    return READY_TIMEOUT


@pytest.fixture
def guard(control_plane: ControlPlane, tmp_path: Path,
          guard_ready_timeout: int) -> Iterator[GuardProcess]:
    """One `gpushift-webhook serve --guard` process in its own namespace, with the chart's
    webhook RBAC only, polling every second."""
    with running_guards(control_plane, tmp_path / "guard", ("guard-0",), release=RELEASE,
                        lease=LEASE, namespace_prefix="gpushift-sidecar-guard",
                        ready_timeout=guard_ready_timeout,
                        image_map=[{"cpu": CPU_IMAGE, "cuda": CUDA_IMAGE}],
                        lease_duration=6, renew=2) as guards:
        yield guards.procs["guard-0"]


# ----------------------------------------------------------------------------- helpers


def occupy_all_gpus(core: Any, namespace: str) -> list[str]:
    """On every GPU node, a pod that requests all its GPUs; returns their names once they
    run (then no GPU is free)."""
    names = []
    for node in core.list_node(label_selector="gpushift.io/node-kind=gpu").items:
        count = str(node.status.allocatable[GPU_RESOURCE])
        name = f"gpu-blocker-{node.metadata.name}"
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node.metadata.name},
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists",
                                 "effect": "NoSchedule"}],
                "containers": [{"name": "train", "image": "busybox", "resources": {
                    "requests": {GPU_RESOURCE: count}, "limits": {GPU_RESOURCE: count}}}],
            }})
        names.append(name)
    assert names, "the control plane has no GPU node"
    for name in names:
        wait_running(core, namespace, name, timeout=60)
    return names


def stuck_pending(core: Any, namespace: str, not_uid: str) -> Any:
    """Pod nb-0 (not `not_uid`), Pending: the scheduler finds no free GPU."""
    return wait_pending(core, namespace, "nb-0", INSUFFICIENT, not_uid=not_uid, timeout=30,
                        interval=0.05)


def cpu_pod_back(core: Any, namespace: str, stuck_uid: str) -> Any:
    """Pod nb-0 Running again, not the stuck one and not being deleted."""
    return wait_running(core, namespace, "nb-0", not_uid=stuck_uid, timeout=60,
                        interval=0.05, not_deleting=True)


def hashes(workspace: Path) -> dict[str, str]:
    """sha256 of every file on the workspace volume but the sidecar's own state (the
    checkpoints in .gpushift/checkpoints/ count)."""
    def sidecars(parts: tuple[str, ...]) -> bool:
        return parts[:1] == (".gpushift",) and parts[1:2] != ("checkpoints",)

    return {str(p.relative_to(workspace)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(workspace.rglob("*"))
            if p.is_file() and not sidecars(p.relative_to(workspace).parts)}


def mirror_of(admin: Any, namespace: str) -> dict[str, Any]:
    return dict(mig.annotation(mig.read_notebook(admin, namespace), MIRROR))


# ----------------------------------------------------------------------------- the test


async def test_no_free_gpu_the_guard_rolls_back_and_the_new_cpu_pod_reports_it(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path, guard: GuardProcess,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    t_start = time.monotonic()
    created = notebook("nb")
    workspace = tmp_path / "nb-workspace"  # the hostPath of the notebook's PV
    train = workspace / "work" / "train.ipynb"
    db = mig.kishu_db(train, "c-1", workspace=workspace)
    (workspace / "work" / "results.csv").write_text("epoch,loss\n1,0.93\n2,0.71\n")
    before = hashes(workspace)
    assert {"work/train.ipynb", ".gpushift/checkpoints/work/train.ipynb.kishudb",
            "work/results.csv"} <= set(before)
    # The guard acts only in namespaces where gpushift is enabled (the chart's opt-in).
    admin.core.patch_namespace(namespace, {"metadata": {"labels": {
        "gpushift.io/enabled": "true"}}})
    blockers = occupy_all_gpus(admin.core, namespace)
    cpu_pod = wait_running(admin.core, namespace, "nb-0")
    assert node_kind(admin.core, cpu_pod.spec.node_name) == "cpu"
    first = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-1")
    wait_for("the guard leading", lambda: guard.count("guard leader: this replica acts"),
             20, interval=0.1, describe=lambda: guard.log.read_text()[-3000:])

    # --- the move to GPU: patched, the new pod finds no GPU
    status, accepted = first.request("POST", "/migrations", {
        "target": "gpu", "reason": "manual",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})
    assert status == 202, accepted
    m = first.wait_phase("recreating")
    t_patched = time.monotonic()
    assert [h["phase"] for h in m["history"]] == [
        "requested", "checkpointing", "checkpointed", "patching", "recreating"]
    stuck = stuck_pending(admin.core, namespace, cpu_pod.metadata.uid)
    assert stuck.status.phase == "Pending"
    assert gpu_limit(stuck) == "1" and stuck.spec.containers[0].image == CUDA_IMAGE
    mig.wait_gone(admin, namespace, cpu_pod.metadata.uid)
    assert first.stop() == 0  # the kubelet's SIGTERM to the old pod, in `recreating`

    # --- the guard rolls it back
    after = wait_for("the guard's rolled_back on the Notebook", lambda: (
        mm if (mm := mirror_of(admin, namespace))["phase"] == "rolled_back" else None),
        READY_TIMEOUT + 20, interval=0.1, describe=lambda: guard.log.read_text()[-3000:])
    rolled_back_s = time.monotonic() - t_patched
    assert rolled_back_s >= READY_TIMEOUT - 1, rolled_back_s
    assert after["id"] == accepted["id"] and after["target"] == "gpu"
    assert INSUFFICIENT in after["reason"], after
    nb = mig.read_notebook(admin, namespace)
    assert nb["spec"] == created["spec"]  # the original profile, exactly
    assert PREVIOUS not in nb["metadata"]["annotations"]
    back = cpu_pod_back(admin.core, namespace, stuck.metadata.uid)
    assert back.metadata.uid not in (cpu_pod.metadata.uid, stuck.metadata.uid)
    assert node_kind(admin.core, back.spec.node_name) == "cpu", pod_summary(back)
    assert gpu_limit(back) is None and back.spec.containers[0].image == CPU_IMAGE
    assert [v.persistent_volume_claim.claim_name for v in back.spec.volumes
            if v.persistent_volume_claim] == ["nb-workspace"]
    [line] = wait_for("the guard's rollback logged (after the pod deletion and the Event)",
                      lambda: [x for x in guard.lines() if x.get("msg") == ROLLED_BACK_LINE],
                      10, interval=0.05)
    assert line["migration_id"] == accepted["id"] and line["pod_deleted"] is True
    assert line["reason_class"] == "insufficient_resources"

    # --- the new CPU pod's sidecar: same workspace, fresh runtime dir, uid from the API
    second = start_sidecar(PodFacts.of(back), workspace, "run-2")
    m = second.wait_phase("rolled_back")
    assert m["id"] == accepted["id"] and m["reason"] == "manual" and not m["active"]
    assert INSUFFICIENT in m["error"], m
    assert [h["phase"] for h in m["history"]][-2:] == ["recreating", "rolled_back"]
    config = json.loads((second.runtime_dir / "runtime-config.json").read_text())
    assert config["usingGPU"] is False and config["PodName"] == "nb-0"
    assert config["migration"]["phase"] == "rolled_back" and not config["migration"]["active"]
    assert INSUFFICIENT in config["migration"]["error"], config
    assert second.request("GET", "/runtime-config")[1]["migration"] == config["migration"]
    # The story on the Notebook: told by the guard, and by the new pod's sidecar.
    story = wait_for("MigrationRolledBack Events of the guard and the sidecar", lambda: (
        found if {"gpushift-guard", "gpushift-sidecar"} <= {
            e.source.component for e in found if e.reason == "MigrationRolledBack"}
        else None) if (found := mig.events(admin, namespace)) else None, 20,
        describe=lambda: [(e.reason, e.source.component, e.message)
                          for e in mig.events(admin, namespace)])
    assert {"MigrationRequested", "CheckpointVerified", "NotebookPatched",
            "MigrationRolledBack"} <= {e.reason for e in story}
    rolled = [e for e in story if e.reason == "MigrationRolledBack"]
    assert all(e.type == "Warning" and INSUFFICIENT in e.message for e in rolled), rolled
    assert all(e.involved_object.uid == created["metadata"]["uid"] for e in story)
    # Nothing on the volume lost or changed: the user's file and the kishu database.
    assert hashes(workspace) == before
    assert db.with_name(db.name + "-journal").exists() is False

    # --- the rolled-back migration ended: a new move is accepted, and lands once a GPU is free
    status, again = second.request("POST", "/migrations", {
        "target": "gpu", "reason": "manual",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})
    assert status == 202, again
    assert again["id"] != accepted["id"]
    pending = stuck_pending(admin.core, namespace, back.metadata.uid)
    t_again = time.monotonic()
    for name in blockers:
        admin.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=back.metadata.uid,
                               timeout=30)
    freed_s = time.monotonic() - t_again
    assert gpu_pod.metadata.uid == pending.metadata.uid  # the pending pod got the GPU
    assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", pod_summary(gpu_pod)
    assert gpu_limit(gpu_pod) == "1" and gpu_pod.spec.containers[0].image == CUDA_IMAGE
    second.wait_phase("recreating")
    mig.wait_gone(admin, namespace, back.metadata.uid)
    assert second.stop() == 0
    third = start_sidecar(PodFacts.of(gpu_pod), workspace, "run-3")
    m = third.wait_phase("restoring")
    assert m["id"] == again["id"]
    status, done = third.request("POST", "/migrations/current/restore",
                                 {"ok": True, "restored": ["model"]})
    assert status == 200 and done["phase"] == "done", done
    wait_for("mirror done", lambda: mirror_of(admin, namespace)["phase"] == "done", 10)
    # The second move was left alone: no second rollback, and none of its pods deleted
    # (the guard may have deleted, besides the stuck pod, one the StatefulSet made from
    # its old GPU template just before the rollback reached it: its DELETE_POD case).
    assert guard.count(ROLLED_BACK_LINE) == 1
    deleted = {x["uid"] for x in guard.lines() if x.get("msg") == "guard: stuck pod deleted"}
    assert stuck.metadata.uid in deleted and gpu_pod.metadata.uid not in deleted, deleted
    assert third.request("GET", "/runtime-config")[1]["usingGPU"] is True
    assert hashes(workspace) == before
    assert third.stop() == 0
    mig.no_traceback(first, second, third)
    print(f"\nrolled back {rolled_back_s:.1f}s after the patch (ready timeout "
          f"{READY_TIMEOUT}s); GPU freed -> pod Running on GPU in {freed_s:.1f}s; "
          f"test body {time.monotonic() - t_start:.1f}s")
