"""Kubeflow's real culler with the real guard: a notebook culled on a GPU comes back on CPU.

A control plane of its own for this module, whose notebook-controller runs its culler
(`ENABLE_CULLING=true`, `CULL_IDLE_TIME=1` and `IDLENESS_CHECK_PERIOD=1`: minutes, the
least they take; `DEV=true`: it asks `localhost:8001/api/v1/namespaces/<ns>/services/
<name>:http-<name>/proxy/notebook/<ns>/<name>/api/kernels` for the kernels). Nothing
answers there, so the culler never sees kernel activity and stops the notebook one idle
period after its first look, as it does any notebook whose server does not answer. The
Notebook was moved to a GPU meanwhile (patched as the sidecar does); the culler sets
`kubeflow-resource-stopped`, the guard puts the CPU profile back while it is stopped, and
Start brings the pod up on a CPU node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import pod_summary, wait_for
from gpushift_testing.workloads import gpu_limit, node_kind, wait_running
from kubernetes.utils import parse_quantity
from test_guard_cluster import (
    NB,
    migration_of,
    move_to_two_gpus,
    notebook,
    notebook_events,
    sidecar,
)
from test_guard_stop_start import back_on_cpu, leading, read, scaled_to_zero
from test_sidecar_guard import GuardProcess, guard, guard_ready_timeout
from test_sidecar_patching import DEFAULT_PROFILE

from gpushift_core.labels import (
    KUBEFLOW_LAST_ACTIVITY_ANNOTATION,
    KUBEFLOW_STOPPED_ANNOTATION,
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
)

# Fixtures, shared with their modules.
__all__ = ["guard", "guard_ready_timeout", "notebook", "sidecar"]

CULLING = {"ENABLE_CULLING": "true", "CULL_IDLE_TIME": "1", "IDLENESS_CHECK_PERIOD": "1",
           "DEV": "true"}


def quantities(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {kind: {k: parse_quantity(v) for k, v in (values or {}).items()}
            for kind, values in resources.items()}


def on_cpu_spec(nb: dict[str, Any], created: dict[str, Any]) -> bool:
    """The notebook container as created (image, resources) and no GPU scheduling. The
    resources compare as quantities: the culler writes the whole Notebook back (an update
    from its Go types), which spells them canonically (1.2Gi becomes 1288490188800m)."""
    spec, original = nb["spec"]["template"]["spec"], created["spec"]["template"]["spec"]
    container, before = spec["containers"][0], original["containers"][0]
    return (container["image"] == before["image"]
            and quantities(container["resources"]) == quantities(before["resources"])
            and not spec.get("nodeSelector") and not spec.get("tolerations"))


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cpmod.ControlPlane]:
    """This module's control plane: Kubeflow's notebook-controller with its culler on."""
    if cpmod.missing_binaries():
        pytest.fail(f"control plane binaries missing: {cpmod.missing_binaries()} (the "
                    "session's control_plane fixture builds them)")
    plane = cpmod.ControlPlane(tmp_path_factory.mktemp("culling-plane"),
                               notebook_controller_env=CULLING)
    try:
        plane.start()
    except cpmod.ControlPlaneError as e:
        pytest.fail(f"control plane did not start: {e}\n{plane.logs_tail(30)}")
    try:
        yield plane
    finally:
        plane.stop()


async def test_a_notebook_culled_on_a_gpu_comes_back_on_cpu(
        control_plane: cpmod.ControlPlane, admin: Any, sidecar: Any, namespace: str,
        notebook: Any, guard: GuardProcess) -> None:
    log = control_plane.logdir / "notebook-controller.log"
    created, _ = notebook("nb")
    first = wait_running(admin.core, namespace, "nb-0")
    leading(guard, admin, namespace)
    # The culler took its first look: its clock is on the Notebook.
    wait_for("the culler's last-activity", lambda: KUBEFLOW_LAST_ACTIVITY_ANNOTATION in (
        read(admin.custom, namespace, "nb")["metadata"].get("annotations") or {}), 60,
        interval=0.5, describe=lambda: log.read_text()[-3000:])
    migration_id, _ = await move_to_two_gpus(sidecar, namespace, "nb", DEFAULT_PROFILE)
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=first.metadata.uid,
                           timeout=60, not_deleting=True)
    assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", pod_summary(gpu_pod)
    done = {**migration_of(admin.custom, namespace, "nb"), "phase": "done"}
    admin.custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", "nb", {
        "metadata": {"annotations": {MIGRATION_ANNOTATION: json.dumps(done)}}})

    t0 = time.monotonic()
    wait_for("the culler stopping the notebook", lambda: KUBEFLOW_STOPPED_ANNOTATION in (
        read(admin.custom, namespace, "nb")["metadata"].get("annotations") or {}), 240,
        interval=0.5, describe=lambda: log.read_text()[-3000:])
    culled_s = time.monotonic() - t0
    wait_for("the Notebook back on its CPU profile while stopped", lambda: on_cpu_spec(
        read(admin.custom, namespace, "nb"), created), 20, interval=0.2,
        describe=lambda: (read(admin.custom, namespace, "nb")["spec"], created["spec"],
                          guard.log.read_text()[-2000:]))
    nb = read(admin.custom, namespace, "nb")
    assert PREVIOUS_PROFILE_ANNOTATION not in nb["metadata"]["annotations"]
    assert json.loads(nb["metadata"]["annotations"][MIGRATION_ANNOTATION]) == done
    wait_for("StatefulSet nb at 0 replicas, no pod", lambda: scaled_to_zero(
        admin, namespace, "nb"), 30, interval=0.2)
    [event] = notebook_events(admin.core, namespace, "nb", "NotebookStoppedOnGpu")
    assert event.type == "Normal"

    pod = back_on_cpu(admin, namespace, "nb", guard)
    assert gpu_limit(pod) is None and on_cpu_spec(read(admin.custom, namespace, "nb"), created)
    assert migration_of(admin.custom, namespace, "nb")["id"] == migration_id
    for reason in ("MigrationRolledBack", "MigrationFailed", "MigrationCancelled"):
        assert notebook_events(admin.core, namespace, "nb", reason) == [], reason
    print(f"\nculled {culled_s:.0f}s after the move to GPU; back on CPU after Start")
