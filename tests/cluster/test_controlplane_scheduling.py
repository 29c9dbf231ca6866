"""The local control plane behaves like the cluster gpushift will run in: a real
kube-apiserver with RBAC, and the real scheduler placing pods on kwok's fake CPU and GPU
nodes (the GPU nodes' taint and GPU count)."""

from __future__ import annotations

import time
from typing import Any

from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary
from gpushift_testing.workloads import node_kind, wait_running
from kubernetes import client
from pod_scheduling import GPU_TOLERATION
from pod_scheduling import wait_unschedulable as _wait_unschedulable


def make_pod(name: str, *, gpus: int = 0, tolerate_gpu: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "busybox:1.36",
        "command": ["sleep", "inf"],
    }
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 0}
    if tolerate_gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


# --------------------------------------------------------------------------- cluster basics


def test_api_server_answers(control_plane: ControlPlane, core: Any) -> None:
    api = control_plane.api_client()
    try:
        version = client.VersionApi(api).get_code()
    finally:
        api.close()
    assert version.git_version == control_plane.versions["K8S_VERSION"]
    assert (version.major, version.minor) == ("1", "36")

    nodes = {n.metadata.name: n for n in core.list_node().items}
    kinds = sorted(n.metadata.labels["gpushift.io/node-kind"] for n in nodes.values())
    assert kinds == ["cpu", "cpu", "gpu"]
    for n in nodes.values():
        ready = [c for c in n.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", n.metadata.name
        if n.metadata.labels["gpushift.io/node-kind"] == "gpu":
            assert n.status.allocatable[GPU_RESOURCE] == "1"
            assert n.metadata.labels["nvidia.com/gpu.present"] == "true"
            assert [(t.key, t.value, t.effect) for t in n.spec.taints] == [
                (GPU_RESOURCE, "present", "NoSchedule")
            ]
        else:
            assert GPU_RESOURCE not in n.status.allocatable
    control_plane.check_alive()


def test_rbac_is_enforced(control_plane: ControlPlane, namespace: str) -> None:
    """Authorization is RBAC, not allow-all: a fresh ServiceAccount may not list pods."""
    api = control_plane.api_client()
    try:
        review = client.AuthorizationV1Api(api).create_subject_access_review(
            {  # type: ignore[arg-type]
                "spec": {
                    "user": f"system:serviceaccount:{namespace}:default",
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": "list",
                        "resource": "pods",
                    },
                }
            }
        )
    finally:
        api.close()
    assert review.status is not None and review.status.allowed is False


# --------------------------------------------------------------------------- scheduling


def test_plain_pod_runs_on_cpu_node(core: Any, namespace: str) -> None:
    core.create_namespaced_pod(namespace, make_pod("plain"))
    pod = wait_running(core, namespace, "plain", timeout=60)
    assert pod.spec.node_name.startswith("kwok-cpu-")
    assert node_kind(core, pod.spec.node_name) == "cpu"
    assert pod.status.pod_ip, pod_summary(pod)
    assert all(cs.ready for cs in pod.status.container_statuses), pod_summary(pod)


def test_gpu_pod_lands_on_gpu_node(core: Any, namespace: str) -> None:
    core.create_namespaced_pod(namespace, make_pod("gpu", gpus=1, tolerate_gpu=True))
    pod = wait_running(core, namespace, "gpu", timeout=60)
    assert node_kind(core, pod.spec.node_name) == "gpu", pod_summary(pod)
    assert pod.spec.containers[0].resources.limits[GPU_RESOURCE] == "1"


def test_gpu_pod_without_toleration_is_not_scheduled(core: Any, namespace: str) -> None:
    core.create_namespaced_pod(namespace, make_pod("untolerated", gpus=1))
    cond = _wait_unschedulable(core, namespace, "untolerated")
    assert "untolerated taint" in cond.message and GPU_RESOURCE in cond.message, cond.message


def test_too_many_gpus_stays_pending(
    control_plane: ControlPlane, core: Any, namespace: str
) -> None:
    total = sum(n.gpus for n in control_plane.nodes)
    core.create_namespaced_pod(namespace, make_pod("greedy", gpus=total + 1, tolerate_gpu=True))
    cond = _wait_unschedulable(core, namespace, "greedy")
    assert f"Insufficient {GPU_RESOURCE}" in cond.message, cond.message
    time.sleep(2)  # and it stays that way
    pod = core.read_namespaced_pod("greedy", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name, pod_summary(pod)
