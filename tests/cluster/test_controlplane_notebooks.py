"""Kubeflow Notebooks on the local control plane, as gpushift will find them.

Notebooks are reconciled by Kubeflow's notebook-controller (built from
../shared/kubeflow/notebook-controller, running as its own ServiceAccount with Kubeflow's
ClusterRole); kwok plays the kubelets of fake CPU and GPU nodes. The Notebook tests never
skip: they fail when the controller does not run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpushift_testing import notebooks
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary, wait_for, wait_for_pod
from gpushift_testing.workloads import (
    create_workspace,
    delete_volumes,
    gpu_limit,
    node_kind,
    wait_running,
)
from kubernetes import client
from pod_scheduling import GPU_TOLERATION
from pod_scheduling import wait_unschedulable as _wait_unschedulable

# --------------------------------------------------------------------------- Kubeflow Notebook

NB = ("kubeflow.org", "v1")


def require_notebook_controller(plane: ControlPlane) -> None:
    """Fail (never skip) when no Notebook controller runs."""
    assert plane.notebook_controller_running, (
        f"no Notebook controller running: {plane.notebook_controller_reason}"
    )


def notebook_container(name: str, image: str, *, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}],
    }
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    return container


def make_notebook(
    name: str, image: str, *, claim: str | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    spec: dict[str, Any] = {"containers": [container]}
    if claim:
        container.update(notebook_container(name, image))
        spec["volumes"] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {
            "name": name,
            "labels": {"app": name},
            "annotations": annotations or {},
        },
        "spec": {"template": {"spec": spec}},
    }


@pytest.fixture
def workspace(core: Any, tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    """make(namespace, notebook) -> the name of a Bound PVC on a hostPath PV under tmp_path."""
    volumes: list[str] = []

    def make(ns: str, notebook: str) -> str:
        claim = f"{notebook}-workspace"
        # PersistentVolumes are cluster-scoped
        volumes.append(create_workspace(core, ns, claim, tmp_path / claim, pv=f"{ns}-{claim}"))
        return claim

    yield make
    delete_volumes(core, volumes)


def patch_container(
    custom: Any, ns: str, name: str, container: dict[str, Any], *, tolerate_gpu: bool
) -> None:
    """Merge-patch the Notebook's container 0 (a merge patch replaces the list) and tolerations."""
    spec = {"containers": [container], "tolerations": [GPU_TOLERATION] if tolerate_gpu else None}
    custom.patch_namespaced_custom_object(
        *NB, ns, "notebooks", name, {"spec": {"template": {"spec": spec}}}
    )


def wait_recreated(
    core: Any, ns: str, name: str, old_uid: str, ok: Callable[[Any], bool], what: str
) -> Any:
    """Wait for pod `name` with a uid other than `old_uid`, Running, for which ok(pod)."""

    def recreated(pod: Any) -> Any:
        if pod.metadata.uid != old_uid and pod.status.phase == "Running" and ok(pod):
            return pod
        return None

    return wait_for_pod(core, ns, name, f"recreated: {what}", recreated, 90)


def test_kubeflows_controller_runs_as_its_own_service_account(
        control_plane: ControlPlane) -> None:
    """Kubeflow's notebook-controller runs, says so, and acts as its ServiceAccount with
    Kubeflow's ClusterRole only: it may manage StatefulSets, not read Secrets."""
    require_notebook_controller(control_plane)
    assert "Kubeflow's notebook-controller" in control_plane.summary()
    proc = control_plane.notebook_controller_proc
    assert proc is not None and proc.argv[0].endswith(
        f"notebook-controller-{control_plane.versions['NOTEBOOK_CONTROLLER_REF']}")
    user = (f"system:serviceaccount:{notebooks.CONTROLLER_NAMESPACE}:"
            f"{notebooks.CONTROLLER_SERVICE_ACCOUNT}")
    authz = client.AuthorizationV1Api(control_plane.api_client())

    def allowed(verb: str, group: str, resource: str) -> bool:
        review = authz.create_subject_access_review({"spec": {
            "user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource}}})
        return bool(review.status.allowed)

    assert allowed("update", "apps", "statefulsets")
    assert allowed("patch", "kubeflow.org", "notebooks")
    assert not allowed("get", "", "secrets")
    assert not allowed("delete", "", "pods")


def test_named_notebook_controller_binary_is_used_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$GPUSHIFT_NOTEBOOK_CONTROLLER names the binary: used when there, else an error; a
    missing binary is an error that names the build (no fallback)."""
    fake = tmp_path / "notebook-controller"
    monkeypatch.setenv("GPUSHIFT_NOTEBOOK_CONTROLLER", str(fake))
    with pytest.raises(notebooks.ControlPlaneError, match="no such file"):
        notebooks.check_binary(fake)
    fake.write_text("#!/bin/sh\n")
    assert "Kubeflow's notebook-controller" in notebooks.check_binary(fake)
    argv, env = notebooks.controller_command(
        fake, tmp_path / "kc", {"nbc-probe": 1, "nbc-metrics": 2}
    )
    assert argv[0] == str(fake) and env["USE_ISTIO"] == "false"
    assert "--enable-leader-election=false" in argv
    monkeypatch.delenv("GPUSHIFT_NOTEBOOK_CONTROLLER")
    with pytest.raises(notebooks.ControlPlaneError, match=r"build-controlplane\.sh"):
        notebooks.check_binary(tmp_path / "missing")


def test_notebook_crd_accepts_a_notebook(custom: Any, namespace: str) -> None:
    """The real Kubeflow CRD is installed, serves 3 versions, validates (422)."""
    created = custom.create_namespaced_custom_object(
        *NB, namespace, "notebooks", make_notebook("nb", "jupyter:cpu")
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
        custom.create_namespaced_custom_object(*NB, namespace, "notebooks", bad)
    assert err.value.status == 422


def test_notebook_with_workspace_becomes_statefulset_service_and_running_pod(
    control_plane: ControlPlane,
    core: Any,
    apps: Any,
    custom: Any,
    namespace: str,
    workspace: Callable[[str, str], str],
) -> None:
    require_notebook_controller(control_plane)
    claim = workspace(namespace, "nb")
    annotations = {"team": "ml", "notebooks.kubeflow.org/creator": "alice"}
    nb = custom.create_namespaced_custom_object(
        *NB,
        namespace,
        "notebooks",
        make_notebook("nb", "jupyter:cpu", claim=claim, annotations=annotations),
    )

    sts = wait_for("StatefulSet nb", lambda: apps.read_namespaced_stateful_set("nb", namespace))
    owner = sts.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "Notebook",
        "nb",
        nb["metadata"]["uid"],
        True,
    )
    # Kubeflow's generateStatefulSet sets no serviceName (pods get no per-pod DNS name).
    assert sts.spec.replicas == 1 and not sts.spec.service_name
    assert sts.spec.selector.match_labels == {"statefulset": "nb"}

    svc = wait_for("Service nb", lambda: core.read_namespaced_service("nb", namespace))
    assert svc.spec.type == "ClusterIP" and svc.spec.selector == {"statefulset": "nb"}
    [port] = svc.spec.ports
    assert (port.name, port.port, port.target_port) == ("http-nb", 80, 8888)
    assert svc.metadata.owner_references[0].uid == nb["metadata"]["uid"]

    pod = wait_running(core, namespace, "nb-0", timeout=60)
    assert node_kind(core, pod.spec.node_name) == "cpu", pod_summary(pod)
    labels = pod.metadata.labels
    assert (labels["notebook-name"], labels["statefulset"], labels["app"]) == ("nb", "nb", "nb")
    assert pod.metadata.annotations.get("team") == "ml"
    assert "notebooks.kubeflow.org/creator" not in pod.metadata.annotations
    c0 = pod.spec.containers[0]
    env = {e.name: e.value for e in c0.env}
    assert env["NB_PREFIX"] == f"/notebook/{namespace}/nb"
    assert c0.working_dir == "/home/jovyan"
    assert [(p.name, p.container_port) for p in c0.ports] == [("notebook-port", 8888)]
    assert pod.spec.security_context.fs_group == 100
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["workspace"].persistent_volume_claim.claim_name == claim
    assert core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase == "Bound"

    def ready_status() -> Any:
        got = custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
        status = got.get("status") or {}
        return status if status.get("readyReplicas") == 1 else None

    status = wait_for("Notebook nb status.readyReplicas == 1", ready_status, 60)
    assert "running" in status["containerState"], status


def test_patching_notebook_recreates_pod_with_new_spec_on_cpu_and_gpu(
    control_plane: ControlPlane,
    core: Any,
    custom: Any,
    namespace: str,
    workspace: Callable[[str, str], str],
) -> None:
    require_notebook_controller(control_plane)
    claim = workspace(namespace, "nb")
    custom.create_namespaced_custom_object(
        *NB, namespace, "notebooks", make_notebook("nb", "jupyter:cpu", claim=claim)
    )
    pod = wait_running(core, namespace, "nb-0", timeout=60)
    assert node_kind(core, pod.spec.node_name) == "cpu"

    # 1. another image
    patch_container(
        custom, namespace, "nb", notebook_container("nb", "jupyter:cuda"), tolerate_gpu=False
    )
    pod = wait_recreated(
        core,
        namespace,
        "nb-0",
        pod.metadata.uid,
        lambda p: p.spec.containers[0].image == "jupyter:cuda",
        "image jupyter:cuda",
    )
    assert node_kind(core, pod.spec.node_name) == "cpu", pod_summary(pod)

    # 2. one GPU and the GPU toleration: the new pod lands on the GPU node
    patch_container(
        custom, namespace, "nb", notebook_container("nb", "jupyter:cuda", gpus=1), tolerate_gpu=True
    )
    pod = wait_recreated(
        core, namespace, "nb-0", pod.metadata.uid, lambda p: gpu_limit(p) == "1", "1 GPU"
    )
    assert node_kind(core, pod.spec.node_name) == "gpu", pod_summary(pod)
    assert pod.metadata.labels["notebook-name"] == "nb"
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["workspace"].persistent_volume_claim.claim_name == claim

    # 3. back: no GPU, no toleration -> CPU node again
    patch_container(
        custom, namespace, "nb", notebook_container("nb", "jupyter:cpu"), tolerate_gpu=False
    )
    pod = wait_recreated(
        core,
        namespace,
        "nb-0",
        pod.metadata.uid,
        lambda p: (
            gpu_limit(p) is None and not any(t.key == GPU_RESOURCE for t in p.spec.tolerations)
        ),
        "no GPU",
    )
    assert node_kind(core, pod.spec.node_name) == "cpu", pod_summary(pod)
    assert pod.spec.containers[0].image == "jupyter:cpu"


def test_notebook_asking_for_too_many_gpus_stays_pending_until_its_pod_is_deleted(
    control_plane: ControlPlane,
    core: Any,
    apps: Any,
    custom: Any,
    namespace: str,
    workspace: Callable[[str, str], str],
) -> None:
    require_notebook_controller(control_plane)
    too_many = max(n.gpus for n in control_plane.nodes) + 1
    claim = workspace(namespace, "nb")
    custom.create_namespaced_custom_object(
        *NB, namespace, "notebooks", make_notebook("nb", "jupyter:cpu", claim=claim)
    )
    first = wait_running(core, namespace, "nb-0", timeout=60)

    patch_container(
        custom,
        namespace,
        "nb",
        notebook_container("nb", "jupyter:cuda", gpus=too_many),
        tolerate_gpu=True,
    )
    wait_for_pod(
        core, namespace, "nb-0", f"recreated with {too_many} GPUs",
        lambda p: p.metadata.uid != first.metadata.uid and gpu_limit(p) == str(too_many),
        90,
    )
    cond = _wait_unschedulable(core, namespace, "nb-0")
    assert f"Insufficient {GPU_RESOURCE}" in cond.message, cond.message
    stuck = core.read_namespaced_pod("nb-0", namespace)
    assert stuck.status.phase == "Pending" and not stuck.spec.node_name, pod_summary(stuck)

    def not_ready() -> bool:
        got = custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
        return bool((got.get("status") or {}).get("readyReplicas") == 0)

    wait_for("Notebook nb status.readyReplicas == 0", not_ready, 60)

    # Revert the spec. The StatefulSet's template follows, but a StatefulSet (default
    # OrderedReady policy) does not replace a Pending pod by itself: it waits for pod 0 to
    # become Running and Ready before it rolls it, which never happens. The pod must be
    # deleted (DESIGN.md: "the Pending pod must be deleted").
    patch_container(
        custom, namespace, "nb", notebook_container("nb", "jupyter:cpu"), tolerate_gpu=False
    )
    wait_for(
        "StatefulSet nb template without GPUs",
        lambda: (
            not (
                apps.read_namespaced_stateful_set("nb", namespace)
                .spec.template.spec.containers[0]
                .resources.limits
            )
        ),
        30,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod("nb-0", namespace)
        assert pod.metadata.uid == stuck.metadata.uid, pod_summary(pod)
        assert pod.status.phase == "Pending" and gpu_limit(pod) == str(too_many), pod_summary(pod)
        time.sleep(0.5)

    core.delete_namespaced_pod("nb-0", namespace)
    pod = wait_recreated(
        core, namespace, "nb-0", stuck.metadata.uid, lambda p: gpu_limit(p) is None, "no GPU"
    )
    assert node_kind(core, pod.spec.node_name) == "cpu", pod_summary(pod)
    assert pod.spec.containers[0].image == "jupyter:cpu"


def test_stopped_notebook_scales_to_zero_and_back(
    control_plane: ControlPlane, core: Any, apps: Any, custom: Any, namespace: str
) -> None:
    require_notebook_controller(control_plane)
    custom.create_namespaced_custom_object(
        *NB, namespace, "notebooks", make_notebook("nb", "jupyter:cpu")
    )
    first = wait_running(core, namespace, "nb-0", timeout=60)
    stop = {"metadata": {"annotations": {"kubeflow-resource-stopped": "2024-01-01T00:00:00Z"}}}
    custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", "nb", stop)
    wait_for(
        "StatefulSet nb scaled to 0",
        lambda: apps.read_namespaced_stateful_set("nb", namespace).spec.replicas == 0,
        30,
    )

    def gone() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="notebook-name=nb").items
        return not pods

    wait_for("pod nb-0 gone", gone, 60)
    start = {"metadata": {"annotations": {"kubeflow-resource-stopped": None}}}
    custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", "nb", start)
    wait_recreated(core, namespace, "nb-0", first.metadata.uid, lambda p: True, "started again")
