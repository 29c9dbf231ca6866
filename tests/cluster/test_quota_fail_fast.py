"""Quotas and policies fail fast, with Kubernetes' own reason (real apiserver admission,
real StatefulSet controller, Kubeflow's notebook-controller).

(a) A namespace whose ResourceQuota allows no GPU (`requests.nvidia.com/gpu: "0"`, as a
Kubeflow profile's `resourceQuotaSpec` writes it): the real `gpushift-sidecar serve`
process (Kubeflow's `default-editor` token) answers `POST /migrations` to GPU with 409 at
once, the quota's name and numbers in the answer; the Notebook and its pod are untouched.

(b) A refusal the pre-check does not look at: a LimitRange whose Container max of
nvidia.com/gpu is 0. The move is accepted and patched; the apiserver refuses the GPU pod,
the StatefulSet controller records FailedCreate on StatefulSet nb, and the real
`gpushift-webhook serve --guard` process (the chart's webhook RBAC, ready timeout 300 s)
rolls the move back within seconds with the apiserver's message; the new CPU pod's
sidecar reports `rolled_back` with it.

The Notebook, the sidecar processes and the guard are those of test_sidecar_migration.py
and test_sidecar_guard.py (their fixtures and helpers, imported).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_guard as sg
import test_sidecar_migration as mig
from gpushift_testing.kube import wait_for
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.workloads import gpu_limit, node_kind, wait_running
from guard_processes import GuardProcess
from test_guard_cluster import opt_in
from test_sidecar_guard import guard  # noqa: F401 - the fixture, shared

notebook, sidecar_settings = mig.notebook, mig.sidecar_settings

GPU = "nvidia.com/gpu"
READY_TIMEOUT = 300  # the default: a FailedCreate must not wait for it
QUOTA_MESSAGE = "ResourceQuota gpu-quota: requests.nvidia.com/gpu used 0 of 0, the move needs 1"
LIMIT_MESSAGE = f"maximum {GPU} usage per Container is 0, but limit is 1"


@pytest.fixture
def guard_ready_timeout() -> int:
    return READY_TIMEOUT


def move_to_gpu(sidecar: SidecarProcess, train: Path) -> tuple[int, dict[str, Any]]:
    return sidecar.request("POST", "/migrations", {
        "target": "gpu", "reason": "manual",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})


def failed_creates(admin: Any, namespace: str) -> list[Any]:
    return list(admin.core.list_namespaced_event(namespace, field_selector=(
        "involvedObject.kind=StatefulSet,involvedObject.name=nb,reason=FailedCreate")).items)


async def test_a_gpu_quota_of_zero_refuses_the_move_at_once_and_leaves_the_notebook(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    admin.core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "gpu-quota"}, "spec": {"hard": {f"requests.{GPU}": "0"}}})
    created = notebook("nb")
    workspace = tmp_path / "nb-workspace"
    train = workspace / "work" / "train.ipynb"
    mig.kishu_db(train, "c-1", workspace=workspace)
    cpu_pod = wait_running(admin.core, namespace, "nb-0")
    sidecar = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-1")
    wait_for("the quota counted", lambda: (admin.core.read_namespaced_resource_quota(
        "gpu-quota", namespace).status.used or {}).get(f"requests.{GPU}") == "0", 30)
    before = mig.read_notebook(admin, namespace)

    t0 = time.monotonic()
    status, body = move_to_gpu(sidecar, train)
    answered_s = time.monotonic() - t0
    assert status == 409, body
    assert body["error"] == "quota_exceeded" and body["detail"] == QUOTA_MESSAGE, body
    assert body["quota"] == {"name": "gpu-quota", "key": f"requests.{GPU}", "used": "0",
                             "hard": "0", "needs": 1}
    assert answered_s < 2, answered_s
    # Nothing recorded, nothing patched; the pod keeps running on CPU.
    assert sidecar.request("GET", "/migrations/current")[0] == 404
    assert sidecar.request("GET", "/runtime-config")[1]["migration"] is None
    time.sleep(1)  # a patch, had one been sent, would show now
    after = mig.read_notebook(admin, namespace)
    assert after["spec"] == created["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == created["metadata"]["annotations"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    pod = admin.core.read_namespaced_pod("nb-0", namespace)
    assert pod.metadata.uid == cpu_pod.metadata.uid and pod.metadata.deletion_timestamp is None
    assert "move to GPU refused by a ResourceQuota" in sidecar.logs()
    mig.no_traceback(sidecar)
    print(f"\nrefused in {answered_s * 1000:.0f} ms")


async def test_a_limit_range_refusal_at_creation_is_rolled_back_within_seconds(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path, guard: GuardProcess,  # noqa: F811
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    opt_in(admin.core, namespace)  # the guard acts in enabled namespaces only
    created = notebook("nb")
    workspace = tmp_path / "nb-workspace"
    train = workspace / "work" / "train.ipynb"
    mig.kishu_db(train, "c-1", workspace=workspace)
    cpu_pod = wait_running(admin.core, namespace, "nb-0")
    first = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-1")
    # No GPU in this namespace, by LimitRange: the quota pre-check does not read it.
    admin.core.create_namespaced_limit_range(namespace, {
        "metadata": {"name": "no-gpu"},
        "spec": {"limits": [{"type": "Container", "max": {GPU: "0"},
                             "default": {GPU: "0"}, "defaultRequest": {GPU: "0"}}]}})
    wait_for("the guard leading", lambda: guard.count("guard leader: this replica acts"),
             20, interval=0.1, describe=lambda: guard.log.read_text()[-3000:])

    status, accepted = move_to_gpu(first, train)
    assert status == 202, accepted
    first.wait_phase("recreating")
    t_patched = time.monotonic()
    mig.wait_gone(admin, namespace, cpu_pod.metadata.uid)
    assert first.stop() == 0  # the kubelet's SIGTERM to the old pod, in `recreating`

    after = wait_for("the guard's rolled_back on the Notebook", lambda: (
        m if (m := sg.mirror_of(admin, namespace))["phase"] == "rolled_back" else None),
        60, interval=0.1, describe=lambda: guard.log.read_text()[-3000:])
    rolled_back_s = time.monotonic() - t_patched
    assert rolled_back_s < 30, rolled_back_s  # well below the ready timeout of 300 s
    assert after["id"] == accepted["id"] and after["target"] == "gpu"
    [refused] = [e for e in failed_creates(admin, namespace) if LIMIT_MESSAGE in e.message]
    assert after["reason"] == refused.message, (after, refused.message)
    assert 'pods "nb-0" is forbidden' in after["reason"]
    nb = mig.read_notebook(admin, namespace)
    assert nb["spec"] == created["spec"] and mig.PREVIOUS not in nb["metadata"]["annotations"]
    back = sg.cpu_pod_back(admin.core, namespace, cpu_pod.metadata.uid)
    assert node_kind(admin.core, back.spec.node_name) == "cpu"
    assert gpu_limit(back) == "0"  # the LimitRange's default; no GPU
    assert back.spec.containers[0].image == mig.CPU_IMAGE
    [line] = wait_for("the guard's rollback logged", lambda: [
        x for x in guard.lines() if x.get("msg") == sg.ROLLED_BACK_LINE], 10, interval=0.05)
    assert line["migration_id"] == accepted["id"] and line["pod_deleted"] is False
    assert line["reason_class"] == "failed_create"

    # The new CPU pod's sidecar reports it, with the apiserver's message.
    second = start_sidecar(PodFacts.of(back), workspace, "run-2")
    m = second.wait_phase("rolled_back")
    assert m["id"] == accepted["id"] and LIMIT_MESSAGE in m["error"], m
    rolled = wait_for("MigrationRolledBack on the Notebook", lambda: [
        e for e in mig.events(admin, namespace) if e.reason == "MigrationRolledBack"
        and e.source.component == "gpushift-guard"], 20)
    assert all(e.type == "Warning" and LIMIT_MESSAGE in e.message for e in rolled), rolled
    mig.no_traceback(first, second)
    print(f"\nrolled back {rolled_back_s:.1f}s after the patch (ready timeout "
          f"{READY_TIMEOUT}s)")
