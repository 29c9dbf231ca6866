"""A GPU profile with CPU/memory and an affinity, through the real control plane: the
sidecar's patch (as `default-editor` under Kubeflow's kubeflow-edit), Kubeflow's
notebook-controller, the scheduler and kwok's GPU nodes. The pod on the GPU carries the
profile's resources and affinity; the move back gives the Notebook's spec back exactly.
A profile whose request would end above the notebook's limit is refused before any
patch. Fixtures and `notebook` as in test_sidecar_patching.py."""

from __future__ import annotations

from typing import Any

import pytest
import test_sidecar_patching as patching
from gpushift_testing.controlplane import GPU_RESOURCE
from gpushift_testing.kube import pod_summary
from gpushift_testing.workloads import gpu_limit, node_kind, wait_running
from test_sidecar_patching import CPU_IMAGE, IMAGE_MAP, NB

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.kube import KubeApi
from gpushift_core.move_plan import MovePlan, PlanError, plan_move

notebook, sidecar = patching.notebook, patching.sidecar

GPU_NODES_ONLY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": "gpushift.io/node-kind", "operator": "In", "values": ["gpu"]}]}]}}}
LARGE = GpuProfile(
    name="nvidia-large", resource=GPU_RESOURCE,
    tolerations=[{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    resources={"requests": {"cpu": "2", "memory": "4Gi"},
               "limits": {"cpu": "3", "memory": "6Gi"}},
    affinity=GPU_NODES_ONLY)


async def _move(api: KubeApi, namespace: str, target: str, profile: GpuProfile,
                previous: dict[str, Any] | None = None) -> tuple[Any, MovePlan]:
    plans: list[MovePlan] = []

    def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        plans.append(plan_move(nb, target, profile, IMAGE_MAP, previous=previous))
        return plans[-1].operations

    result = await api.patch_notebook(namespace, "nb", build)
    return result, plans[-1]


async def test_a_profile_with_cpu_memory_and_affinity_reaches_the_gpu_pod_and_goes_again(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    created = notebook("nb")
    first = wait_running(admin.core, namespace, "nb-0")

    result, to_gpu = await _move(sidecar, namespace, "gpu", LARGE)
    assert result.changed, to_gpu.summary
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=first.metadata.uid)
    assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", pod_summary(gpu_pod)
    resources = gpu_pod.spec.containers[0].resources
    assert gpu_limit(gpu_pod) == "1"
    assert (resources.requests["cpu"], resources.requests["memory"]) == ("2", "4Gi")
    assert (resources.limits["cpu"], resources.limits["memory"]) == ("3", "6Gi")
    terms = gpu_pod.spec.affinity.node_affinity.\
        required_during_scheduling_ignored_during_execution.node_selector_terms
    assert [(e.key, e.values) for e in terms[0].match_expressions] == [
        ("gpushift.io/node-kind", ["gpu"])]

    result, _ = await _move(sidecar, namespace, "cpu", LARGE,
                            previous=to_gpu.previous_profile)
    cpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=gpu_pod.metadata.uid)
    assert node_kind(admin.core, cpu_pod.spec.node_name) == "cpu", pod_summary(cpu_pod)
    assert cpu_pod.spec.containers[0].image == CPU_IMAGE and cpu_pod.spec.affinity is None
    assert cpu_pod.spec.containers[0].resources.requests["memory"] == "1Gi"
    final = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    assert final["spec"] == created["spec"]


async def test_a_request_above_the_notebooks_limit_is_refused_before_any_patch(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    notebook("nb")  # limits memory 1.2Gi
    greedy = GpuProfile(name="greedy", resource=GPU_RESOURCE,
                        resources={"requests": {"memory": "2Gi"}})
    before = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    with pytest.raises(PlanError, match=r"memory request \(2Gi\) would be above its limit "
                                        r"\(1.2Gi\)"):
        await _move(sidecar, namespace, "gpu", greedy)
    after = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    # Not the resourceVersion: the notebook-controller writes the status meanwhile.
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
