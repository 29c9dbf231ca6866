"""Kubeflow's Stop and Start with the real guard and Kubeflow's real notebook-controller.

Stop sets the Notebook annotation `kubeflow-resource-stopped` (as the dashboard and the
culler do); the notebook-controller scales the StatefulSet to 0. One real
`gpushift-webhook serve --guard` process (the chart's webhook RBAC; test_sidecar_guard's
fixture) watches:

* a Notebook moved to a GPU (patched as the sidecar does: the move, the migration mirror
  and the previous-profile record) and stopped there is patched back to its CPU profile
  while stopped; Start brings pod `<name>-0` up on a CPU node, without the GPU limit, and
  the migration mirror shows no failure nor rollback;
* a move still in `recreating` (its pod Pending: no node has 2 GPUs) when Stop comes ends
  `cancelled` at once, with the reason; it is not rolled back when the ready timeout
  passes; Start brings the notebook up on CPU.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from gpushift_testing.kube import pod_summary, wait_for
from gpushift_testing.workloads import gpu_limit, node_kind, wait_pending, wait_running
from test_guard_cluster import (
    NB,
    migration_of,
    move_to_two_gpus,
    notebook,
    notebook_events,
    sidecar,
)
from test_sidecar_guard import (
    READY_TIMEOUT,
    ROLLED_BACK_LINE,
    GuardProcess,
    guard,
    guard_ready_timeout,
)
from test_sidecar_patching import DEFAULT_PROFILE

from gpushift_core.labels import (
    ENABLED_LABEL,
    KUBEFLOW_STOPPED_ANNOTATION,
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
)
from gpushift_core.notebook_stop import STOPPED_DURING_MOVE

# Fixtures, shared with their modules.
__all__ = ["guard", "guard_ready_timeout", "notebook", "sidecar"]

INSUFFICIENT = "Insufficient nvidia.com/gpu"


def set_stopped(custom: Any, namespace: str, name: str, stopped: bool) -> None:
    """Stop (the annotation with the time, RFC 3339, as Kubeflow writes it) or Start (the
    annotation removed), as a JSON merge patch like the dashboard's."""
    value = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stopped else None
    custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", name, {
        "metadata": {"annotations": {KUBEFLOW_STOPPED_ANNOTATION: value}}})


def read(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object(*NB, namespace, "notebooks", name))


def scaled_to_zero(admin: Any, namespace: str, name: str) -> bool:
    sts = admin.apps.read_namespaced_stateful_set(name, namespace)
    pods = admin.core.list_namespaced_pod(namespace, label_selector=f"notebook-name={name}")
    return sts.spec.replicas == 0 and not pods.items


def leading(guard: GuardProcess, admin: Any, namespace: str) -> None:
    """The namespace opted in (the guard acts only there), the guard holding its Lease."""
    admin.core.patch_namespace(namespace, {"metadata": {"labels": {ENABLED_LABEL: "true"}}})
    wait_for("the guard leading", lambda: guard.count("guard leader: this replica acts"),
             20, interval=0.1, describe=lambda: guard.log.read_text()[-3000:])


def back_on_cpu(admin: Any, namespace: str, name: str, guard: GuardProcess) -> Any:
    """Start; then pod `<name>-0` Running on a CPU node, without GPU limit or selector,
    and the guard rolled nothing back."""
    set_stopped(admin.custom, namespace, name, False)
    pod = wait_running(admin.core, namespace, f"{name}-0", timeout=60, not_deleting=True)
    assert node_kind(admin.core, pod.spec.node_name) == "cpu", pod_summary(pod)
    assert gpu_limit(pod) is None
    assert not pod.spec.node_selector
    assert guard.count(ROLLED_BACK_LINE) == 0
    return pod


async def test_stopped_on_a_gpu_it_starts_again_on_cpu(
        admin: Any, sidecar: Any, namespace: str, notebook: Any,
        guard: GuardProcess) -> None:
    created, _ = notebook("nb")
    first = wait_running(admin.core, namespace, "nb-0")
    leading(guard, admin, namespace)
    migration_id, _ = await move_to_two_gpus(sidecar, namespace, "nb", DEFAULT_PROFILE)
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=first.metadata.uid,
                           timeout=60, not_deleting=True)
    assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", pod_summary(gpu_pod)
    assert gpu_limit(gpu_pod) == "1"
    # The new pod's sidecar ends the move `done` (restored): the mirror says so.
    done = {**migration_of(admin.custom, namespace, "nb"), "phase": "done"}
    admin.custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", "nb", {
        "metadata": {"annotations": {MIGRATION_ANNOTATION: json.dumps(done)}}})

    t0 = time.monotonic()
    set_stopped(admin.custom, namespace, "nb", True)
    nb = wait_for("the Notebook back on its CPU profile while stopped", lambda: (
        n if (n := read(admin.custom, namespace, "nb"))["spec"] == created["spec"] else None),
        20, interval=0.2, describe=lambda: guard.log.read_text()[-3000:])
    patched_s = time.monotonic() - t0
    annotations = nb["metadata"]["annotations"]
    assert PREVIOUS_PROFILE_ANNOTATION not in annotations
    assert KUBEFLOW_STOPPED_ANNOTATION in annotations  # still stopped: Start is the user's
    assert json.loads(annotations[MIGRATION_ANNOTATION]) == done  # no failure, no rollback
    wait_for("StatefulSet nb at 0 replicas, no pod", lambda: scaled_to_zero(
        admin, namespace, "nb"), 30, interval=0.2)
    sts = admin.apps.read_namespaced_stateful_set("nb", namespace)
    assert gpu_limit(sts.spec.template) is None  # the template is the CPU one already
    [event] = notebook_events(admin.core, namespace, "nb", "NotebookStoppedOnGpu")
    assert event.type == "Normal" and "Start brings it up on CPU" in event.message

    pod = back_on_cpu(admin, namespace, "nb", guard)
    assert read(admin.custom, namespace, "nb")["spec"] == created["spec"]
    assert pod.spec.containers[0].image == created["spec"]["template"]["spec"][
        "containers"][0]["image"]
    mirror = migration_of(admin.custom, namespace, "nb")
    assert (mirror["id"], mirror["phase"]) == (migration_id, "done")
    for reason in ("MigrationRolledBack", "MigrationFailed", "MigrationCancelled"):
        assert notebook_events(admin.core, namespace, "nb", reason) == [], reason
    print(f"\nstopped on GPU -> CPU profile restored {patched_s:.1f}s after Stop")


async def test_a_move_in_recreating_is_cancelled_by_stop_not_rolled_back(
        admin: Any, sidecar: Any, namespace: str, notebook: Any,
        guard: GuardProcess) -> None:
    created, _ = notebook("nb")
    first = wait_running(admin.core, namespace, "nb-0")
    leading(guard, admin, namespace)
    migration_id, updated = await move_to_two_gpus(sidecar, namespace, "nb")
    wait_pending(admin.core, namespace, "nb-0", INSUFFICIENT, not_uid=first.metadata.uid,
                 timeout=30)
    assert migration_of(admin.custom, namespace, "nb")["phase"] == "recreating"

    t0 = time.monotonic()
    set_stopped(admin.custom, namespace, "nb", True)
    cancelled = wait_for("the move cancelled", lambda: (
        m if (m := migration_of(admin.custom, namespace, "nb"))["phase"] == "cancelled"
        else None), 10, interval=0.1, describe=lambda: guard.log.read_text()[-3000:])
    cancelled_s = time.monotonic() - t0
    assert (cancelled["id"], cancelled["target"], cancelled["reason"]) == (
        migration_id, "gpu", STOPPED_DURING_MOVE)
    assert cancelled["updated"] > updated
    nb = read(admin.custom, namespace, "nb")
    assert nb["spec"] == created["spec"]  # and the CPU profile is back, in the same patch
    assert PREVIOUS_PROFILE_ANNOTATION not in nb["metadata"]["annotations"]
    wait_for("StatefulSet nb at 0 replicas, no pod", lambda: scaled_to_zero(
        admin, namespace, "nb"), 30, interval=0.2)
    # The guard records the Event after its patch: under load it can land after the
    # controller scaled the StatefulSet down.
    [event] = wait_for("the MigrationCancelled Event", lambda: notebook_events(
        admin.core, namespace, "nb", "MigrationCancelled"), 10, interval=0.1)
    assert event.type == "Normal" and STOPPED_DURING_MOVE in event.message

    # Past the ready timeout: still cancelled, nothing rolled back.
    time.sleep(max(0.0, READY_TIMEOUT + 2 - (time.monotonic() - t0)))
    assert migration_of(admin.custom, namespace, "nb") == cancelled
    assert notebook_events(admin.core, namespace, "nb", "MigrationRolledBack") == []
    back_on_cpu(admin, namespace, "nb", guard)
    assert read(admin.custom, namespace, "nb")["spec"] == created["spec"]
    assert migration_of(admin.custom, namespace, "nb") == cancelled
    print(f"\nmove in recreating cancelled {cancelled_s:.1f}s after Stop")
