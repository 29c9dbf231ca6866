"""The sidecar's Notebook patching against the real control plane, with other writers:
a concurrent edit makes the patch read again and succeed, one that never stops makes it
give up, an invalid patch is refused at once, nothing to change sends no patch, and which
Notebook annotations reach the pod.

As in test_sidecar_patching.py (whose fixtures these are), the sidecar's client runs as
`default-editor`, bound to Kubeflow's kubeflow-edit (the chart's sidecar rules aggregated
in).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import test_sidecar_patching as patching
from gpushift_testing.controlplane import GPU_RESOURCE
from gpushift_testing.kube import wait_for
from gpushift_testing.workloads import wait_running
from test_sidecar_patching import CPU_IMAGE, CUDA_IMAGE, MIRROR, NB, move

from gpushift_core.kube import KubeApi, KubeError, PatchConflictError

notebook, sidecar = patching.notebook, patching.sidecar


# ----------------------------------------------------------------------------- concurrency


def settled(admin: Any, namespace: str, name: str) -> None:
    """Pod Running and the controller's status written: no writer left but the test's."""
    wait_running(admin.core, namespace, f"{name}-0")
    wait_for(f"Notebook {name} status.readyReplicas == 1", lambda: (
        admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", name)
        .get("status") or {}).get("readyReplicas") == 1, 60)


async def test_concurrent_writer_makes_the_patch_retry_and_succeed(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    notebook("nb")
    settled(admin, namespace, "nb")
    writes: list[int] = []

    def other_writer(attempt: int) -> None:
        """Between the sidecar's read and its patch, someone edits an annotation."""
        if attempt == 1:
            admin.custom.patch_namespaced_custom_object(
                *NB, namespace, "notebooks", "nb",
                {"metadata": {"annotations": {"team.example/owner": "bob"}}})
            writes.append(attempt)

    result, plan = await move(sidecar, namespace, "nb", "gpu", before_patch=other_writer)
    assert writes == [1]
    # 2: the other writer's change made the first patch fail. More only if the
    # controller wrote the status in between as well.
    assert result.attempts >= 2, result
    print(f"\nconcurrent writer: patched after {result.attempts} attempts")
    got = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    assert got["metadata"]["annotations"]["team.example/owner"] == "bob"
    c = got["spec"]["template"]["spec"]["containers"][0]
    assert (c["image"], c["resources"]["limits"][GPU_RESOURCE]) == (CUDA_IMAGE, "1")
    # The plan that landed is the one built on the second read.
    assert plan.operations[0]["value"] != result.notebook["metadata"]["resourceVersion"]


async def test_a_notebook_that_never_stops_changing_gives_up_after_the_attempts(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    notebook("nb")

    def always(attempt: int) -> None:
        admin.custom.patch_namespaced_custom_object(
            *NB, namespace, "notebooks", "nb",
            {"metadata": {"annotations": {"counter": str(attempt)}}})

    with pytest.raises(PatchConflictError) as err:
        await move(sidecar, namespace, "nb", "gpu", before_patch=always, attempts=3)
    assert err.value.attempts == 3 and err.value.status == 422
    got = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == CPU_IMAGE


async def test_invalid_patch_is_refused_at_once_not_retried(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    notebook("nb")
    # Kubeflow's controller writes the status while the pod starts: a write of it between
    # our read and our patch would make the first try stale, not invalid.
    settled(admin, namespace, "nb")
    reads: list[str] = []

    def invalid(nb: dict[str, Any]) -> list[dict[str, Any]]:
        reads.append(nb["metadata"]["resourceVersion"])
        return [{"op": "add", "path": "/spec/template/spec/containers/0/resources/limits/x",
                 "value": ["not a quantity"]}]

    with pytest.raises(KubeError) as err:
        await sidecar.patch_notebook(namespace, "nb", invalid)
    assert err.value.status == 422 and err.value.details.get("causes"), err.value
    assert not err.value.stale and len(reads) == 1


def writers(obj: dict[str, Any]) -> set[str]:
    """The field managers that wrote the object (its managedFields)."""
    return {str(m.get("manager")) for m in obj["metadata"].get("managedFields") or []}


async def test_nothing_to_change_sends_no_patch(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    created = notebook("nb")
    result, plan = await move(sidecar, namespace, "nb", "cpu")
    assert (result.changed, result.operations, plan.operations) == (False, [], [])
    got = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    # Kubeflow's controller writes the status (a new resourceVersion), never the spec: the
    # generation stays, and no write of the sidecar's field manager is on record.
    assert got["metadata"]["generation"] == created["metadata"]["generation"]
    assert sidecar.component not in writers(got)
    # set_annotation of the value already there, and removal of one that is not: no patch
    await sidecar.set_annotation(namespace, "nb", MIRROR, "x")
    again = await sidecar.set_annotation(namespace, "nb", MIRROR, "x")
    gone = await sidecar.set_annotation(namespace, "nb", "gpushift.io/notebook-none", None)
    assert not again.changed and not gone.changed


async def test_which_notebook_annotations_reach_the_pod(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    """Kubeflow's notebook-controller copies Notebook annotations into the pod template
    unless the key contains "notebook" or "kubectl" -- when it generates the StatefulSet;
    on later reconciles it copies the template's spec only (reconcilehelper's
    CopyStatefulSetFields), so a later annotation change recreates no pod. The migration
    mirror's key contains "notebook" all the same: a StatefulSet generated again must not
    carry it into the pod, and `set_annotation` refuses other keys unless told otherwise."""
    notebook("nb")
    settled(admin, namespace, "nb")
    first = admin.core.read_namespaced_pod("nb-0", namespace)
    generation = admin.apps.read_namespaced_stateful_set("nb", namespace).metadata.generation

    await sidecar.set_annotation(namespace, "nb", MIRROR, '{"phase":"checkpointing"}')
    with pytest.raises(ValueError, match="recreates the pod"):
        await sidecar.set_annotation(namespace, "nb", "gpushift.io/migration", "x")
    await sidecar.set_annotation(namespace, "nb", "gpushift.io/migration", "x",
                                 restart_pod=True)
    time.sleep(2)
    sts = admin.apps.read_namespaced_stateful_set("nb", namespace)
    assert sts.metadata.generation == generation
    template = sts.spec.template.metadata.annotations or {}
    assert MIRROR not in template and "gpushift.io/migration" not in template
    assert admin.core.read_namespaced_pod("nb-0", namespace).metadata.uid == first.metadata.uid

    # The StatefulSet generated anew (deleted; the controller makes it again from the
    # Notebook): the key without "notebook" reaches the pod, the mirror does not.
    admin.apps.delete_namespaced_stateful_set("nb", namespace,
                                              propagation_policy="Foreground")
    recreated = wait_running(admin.core, namespace, "nb-0", not_uid=first.metadata.uid)
    assert recreated.metadata.annotations["gpushift.io/migration"] == "x"
    assert MIRROR not in recreated.metadata.annotations
