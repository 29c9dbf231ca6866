"""The local control plane behaves like the cluster gpushift will run in.

Real kube-apiserver, scheduler and controller-manager; kwok plays the kubelets of fake
CPU and GPU nodes; Kubeflow's notebook-controller reconciles Notebooks when available.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary, wait_for
from kubernetes import client

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


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


def wait_pod_running(core: Any, ns: str, name: str, timeout: float = 60) -> Any:
    def running() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase == "Running" else None

    return wait_for(
        f"pod {ns}/{name} Running",
        running,
        timeout,
        describe=lambda: pod_summary(core.read_namespaced_pod(name, ns)),
    )


def node_kind(core: Any, node_name: str) -> str:
    return str(core.read_node(node_name).metadata.labels.get("gpushift.io/node-kind", ""))


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
    pod = wait_pod_running(core, namespace, "plain")
    assert pod.spec.node_name.startswith("kwok-cpu-")
    assert node_kind(core, pod.spec.node_name) == "cpu"
    assert pod.status.pod_ip, pod_summary(pod)
    assert all(cs.ready for cs in pod.status.container_statuses), pod_summary(pod)


def test_gpu_pod_lands_on_gpu_node(core: Any, namespace: str) -> None:
    core.create_namespaced_pod(namespace, make_pod("gpu", gpus=1, tolerate_gpu=True))
    pod = wait_pod_running(core, namespace, "gpu")
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


def _wait_unschedulable(core: Any, ns: str, name: str) -> Any:
    def unschedulable() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        for c in pod.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                return c
        return None

    return wait_for(
        f"pod {ns}/{name} Unschedulable",
        unschedulable,
        60,
        describe=lambda: pod_summary(core.read_namespaced_pod(name, ns)),
    )


# --------------------------------------------------------------------------- Kubeflow Notebook


def require_notebook_controller(plane: ControlPlane) -> None:
    """Skip (or fail, with GPUSHIFT_REQUIRE_NOTEBOOK_CONTROLLER=1) without the controller."""
    if plane.notebook_controller_running:
        return
    msg = f"Kubeflow notebook-controller not running: {plane.notebook_controller_reason}"
    if os.environ.get("GPUSHIFT_REQUIRE_NOTEBOOK_CONTROLLER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def make_notebook(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}},
    }


@pytest.fixture
def custom(control_plane: ControlPlane) -> Any:
    api = control_plane.api_client()
    try:
        yield client.CustomObjectsApi(api)
    finally:
        api.close()


def test_notebook_crd_accepts_a_notebook(custom: Any, namespace: str) -> None:
    """The real Kubeflow CRD is installed, serves 3 versions, validates (422)."""
    created = custom.create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "notebooks", make_notebook("nb", "jupyter:cpu")
    )
    assert created["spec"]["template"]["spec"]["containers"][0]["image"] == "jupyter:cpu"
    for version in ("v1beta1", "v1alpha1"):
        got = custom.get_namespaced_custom_object(
            "kubeflow.org", version, namespace, "notebooks", "nb"
        )
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
    bad = make_notebook("bad", "jupyter:cpu")
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]  # the schema requires it
    with pytest.raises(client.ApiException) as err:
        custom.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "notebooks", bad)
    assert err.value.status == 422


def test_notebook_becomes_statefulset_and_running_pod(
    control_plane: ControlPlane, core: Any, custom: Any, namespace: str
) -> None:
    require_notebook_controller(control_plane)
    custom.create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "notebooks", make_notebook("nb", "jupyter:cpu")
    )
    apps = client.AppsV1Api(control_plane.api_client())
    sts = wait_for("StatefulSet nb", lambda: apps.read_namespaced_stateful_set("nb", namespace))
    assert sts.spec.template.spec.containers[0].image == "jupyter:cpu"
    pod = wait_pod_running(core, namespace, "nb-0")
    assert pod.metadata.labels["notebook-name"] == "nb"
    assert pod.metadata.labels["statefulset"] == "nb"
    assert node_kind(core, pod.spec.node_name) == "cpu"


def test_patching_notebook_image_recreates_pod(
    control_plane: ControlPlane, core: Any, custom: Any, namespace: str
) -> None:
    require_notebook_controller(control_plane)
    custom.create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "notebooks", make_notebook("nb", "jupyter:cpu")
    )
    old = wait_pod_running(core, namespace, "nb-0")
    custom.patch_namespaced_custom_object(
        "kubeflow.org",
        "v1",
        namespace,
        "notebooks",
        "nb",
        {"spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "jupyter:cuda"}]}}}},
    )

    def recreated() -> Any:
        pod = core.read_namespaced_pod("nb-0", namespace)
        return (
            pod
            if pod.metadata.uid != old.metadata.uid
            and pod.spec.containers[0].image == "jupyter:cuda"
            and pod.status.phase == "Running"
            else None
        )

    pod = wait_for(
        "pod nb-0 recreated with image jupyter:cuda",
        recreated,
        90,
        describe=lambda: pod_summary(core.read_namespaced_pod("nb-0", namespace)),
    )
    assert pod.metadata.labels["notebook-name"] == "nb"
