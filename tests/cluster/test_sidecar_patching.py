"""The sidecar's Notebook patching against the real control plane, with the rights of a
notebook pod's token in a Kubeflow profile: the move to GPU and back as the sidecar makes
it, where its rights end, and its in-cluster config.

The sidecar's client (gpushift_core.kube) runs as the namespace's `default-editor`
ServiceAccount with a token from the TokenRequest API, bound (RoleBinding, as a Kubeflow
profile does) to Kubeflow's real ClusterRole kubeflow-edit, into which the chart's sidecar
ClusterRole (rendered with helm) is aggregated (gpushift_testing.access). The Notebook is
reconciled by Kubeflow's notebook-controller; kwok runs the pods on fake CPU and GPU nodes.

The `sidecar` and `notebook` fixtures, the images, the profile and `move` here are also
those of test_sidecar_patching_concurrency.py and test_sidecar_patching_unreachable.py
(and of test_sidecar_migration.py and test_sidecar_idle.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpushift_testing.access import EDITOR_SA
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary
from gpushift_testing.workloads import (
    create_workspace,
    delete_volumes,
    gpu_limit,
    node_kind,
    wait_running,
)

from gpushift_core.admin_settings import GpuProfile, ImagePair
from gpushift_core.kube import KubeApi, KubeError, connection
from gpushift_core.kube.connection import ApiError
from gpushift_core.move_plan import MovePlan, plan_move
from gpushift_webhook.config import WebhookConfig

NB = ("kubeflow.org", "v1")
SA = EDITOR_SA
CPU_IMAGE = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
IMAGE_MAP = [ImagePair(cpu=CPU_IMAGE, cuda=CUDA_IMAGE)]
# The migration mirror, with "notebook" in its key: Kubeflow's notebook-controller copies
# every other Notebook annotation into the pod template (see
# test_which_notebook_annotations_reach_the_pod in test_sidecar_patching_concurrency.py),
# which would recreate the pod each time.
MIRROR = "gpushift.io/notebook-migration"
DEFAULT_PROFILE = GpuProfile(
    name="nvidia-1",
    resource=GPU_RESOURCE,
    count=1,
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
)


def test_default_profile_is_the_chart_default_plus_node_selector():
    """The profile used here is the configured default, with the GPU nodes' label."""
    default = WebhookConfig().profiles[0]
    assert (default.name, default.resource, default.count, default.tolerations) == (
        DEFAULT_PROFILE.name, DEFAULT_PROFILE.resource, DEFAULT_PROFILE.count,
        DEFAULT_PROFILE.tolerations)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
async def sidecar(sidecar_kubeconfig: Callable[[str], Path],
                  control_plane: ControlPlane) -> AsyncIterator[KubeApi]:
    api = KubeApi.connect(str(sidecar_kubeconfig(control_plane.server)),
                          component="gpushift-sidecar", instance="nb-0", host="test-node")
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def notebook(control_plane: ControlPlane, admin: Any, namespace: str,
             tmp_path: Path) -> Iterator[Callable[[str], dict[str, Any]]]:
    """make(name) -> a CPU Notebook as Kubeflow's UI makes it, with a PV+PVC workspace."""
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    volumes: list[str] = []

    def make(name: str) -> dict[str, Any]:
        claim = f"{name}-workspace"
        volumes.append(create_workspace(admin.core, namespace, claim, tmp_path / claim))
        body = {
            "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
            "metadata": {"name": name, "labels": {"app": name},
                         "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
            "spec": {"template": {"spec": {
                "serviceAccountName": SA,
                "containers": [{
                    "name": name, "image": CPU_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi"},
                                  "requests": {"cpu": "500m", "memory": "1Gi"}},
                    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                                     {"name": "workspace", "mountPath": "/home/jovyan"}],
                }],
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
                            {"name": "workspace",
                             "persistentVolumeClaim": {"claimName": claim}}],
            }}},
        }
        created: dict[str, Any] = admin.custom.create_namespaced_custom_object(
            *NB, namespace, "notebooks", body)
        return created

    yield make
    delete_volumes(admin.core, volumes)


async def move(sidecar: KubeApi, namespace: str, name: str, target: str,
               previous: dict[str, Any] | None = None,
               before_patch: Callable[[int], None] | None = None,
               attempts: int = 5) -> tuple[Any, MovePlan]:
    """Patch as the sidecar does: plan against each fresh read; return (result, plan)."""
    plans: list[MovePlan] = []

    def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        plan = plan_move(nb, target, DEFAULT_PROFILE, IMAGE_MAP, previous=previous)
        plans.append(plan)
        if before_patch is not None:
            before_patch(len(plans))
        return plan.operations

    result = await sidecar.patch_notebook(namespace, name, build, attempts=attempts)
    return result, plans[-1]


# ----------------------------------------------------------------------------- the move


async def test_move_to_gpu_and_back_as_the_sidecar_under_least_privilege(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    created = notebook("nb")
    first = wait_running(admin.core, namespace, "nb-0")
    assert node_kind(admin.core, first.spec.node_name) == "cpu", pod_summary(first)

    # The sidecar reads its Notebook and its pod.
    nb = await sidecar.get_notebook(namespace, "nb")
    assert nb["metadata"]["uid"] == created["metadata"]["uid"]
    pod = await sidecar.get_pod(namespace, "nb-0")
    assert pod["metadata"]["uid"] == first.metadata.uid

    # --- to GPU
    t0 = time.monotonic()
    result, to_gpu = await move(sidecar, namespace, "nb", "gpu")
    patched = time.monotonic()
    assert result.changed
    attempts = [result.attempts]
    spec = result.notebook["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "1"
    gpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=first.metadata.uid)
    to_gpu_s = time.monotonic() - t0
    assert gpu_limit(gpu_pod) == "1", pod_summary(gpu_pod)
    assert gpu_pod.spec.containers[0].image == CUDA_IMAGE
    assert any((t.key, t.operator, t.effect) == (GPU_RESOURCE, "Exists", "NoSchedule")
               for t in gpu_pod.spec.tolerations)
    assert gpu_pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", pod_summary(gpu_pod)
    volumes = {v.name: v for v in gpu_pod.spec.volumes}
    assert volumes["workspace"].persistent_volume_claim.claim_name == "nb-workspace"
    sts = admin.apps.read_namespaced_stateful_set("nb", namespace)
    assert sts.spec.template.spec.containers[0].resources.limits[GPU_RESOURCE] == "1"

    # The story, on the Notebook: an Event and the migration mirror.
    await sidecar.create_event(namespace, result.notebook, "MigrationPatched",
                               to_gpu.summary)
    await sidecar.set_annotation(namespace, "nb", MIRROR,
                                 '{"phase":"recreating","target":"gpu"}')
    events = admin.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=nb,involvedObject.kind=Notebook").items
    [event] = [e for e in events if e.reason == "MigrationPatched"]
    assert event.message == to_gpu.summary and event.type == "Normal"
    assert event.involved_object.uid == created["metadata"]["uid"]
    assert event.source.component == "gpushift-sidecar"
    assert event.reporting_instance == "nb-0"

    # --- back to CPU with the recorded previous profile
    t1 = time.monotonic()
    result, to_cpu = await move(sidecar, namespace, "nb", "cpu",
                                previous=to_gpu.previous_profile)
    attempts.append(result.attempts)
    cpu_pod = wait_running(admin.core, namespace, "nb-0", not_uid=gpu_pod.metadata.uid)
    to_cpu_s = time.monotonic() - t1
    assert node_kind(admin.core, cpu_pod.spec.node_name) == "cpu", pod_summary(cpu_pod)
    assert cpu_pod.spec.containers[0].image == CPU_IMAGE
    assert gpu_limit(cpu_pod) is None
    assert not any(t.key == GPU_RESOURCE for t in cpu_pod.spec.tolerations or [])
    assert not cpu_pod.spec.node_selector

    final = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    assert final["spec"] == created["spec"]
    managers = {m["manager"] for m in final["metadata"]["managedFields"]}
    assert "gpushift-sidecar" in managers, managers
    assert final["metadata"]["annotations"][MIRROR].startswith('{"phase"')
    print(f"\npatch -> new pod Running: to GPU {to_gpu_s:.2f}s (the patch call itself "
          f"{patched - t0:.3f}s), back to CPU {to_cpu_s:.2f}s; patch attempts {attempts}")
    assert "to CPU" in to_cpu.summary


async def test_the_sidecar_token_is_the_profile_editor_in_its_namespace_only(
        admin: Any, sidecar: KubeApi, namespace: str, notebook: Any) -> None:
    """The token is the pod's own: in its namespace it holds all of kubeflow-edit (it
    lists pods, Secrets and Notebooks: what the user's own code in the notebook can do
    anyway, gpushift or not); outside it, nothing (tests/cluster/test_chart_cluster_release.py
    compares every grant through the authorizer)."""
    notebook("nb")
    notebooks = f"/apis/{NB[0]}/{NB[1]}"
    get = sidecar.connection.request
    for allowed in (f"/api/v1/namespaces/{namespace}/pods",
                    f"/api/v1/namespaces/{namespace}/secrets",
                    f"{notebooks}/namespaces/{namespace}/notebooks"):
        assert get("GET", allowed).status == 200, allowed
    refused = {
        "a pod of another namespace": "/api/v1/namespaces/default/pods/x",
        "Notebooks of all namespaces": f"{notebooks}/notebooks",
        "nodes": "/api/v1/nodes",
        "namespaces": "/api/v1/namespaces",
    }
    for what, path in refused.items():
        with pytest.raises(ApiError) as err:
            get("GET", path)
        assert err.value.status == 403, what
    # What it needs works (the first test moves the notebook with it).
    assert (await sidecar.get_notebook(namespace, "nb"))["metadata"]["name"] == "nb"


async def test_in_cluster_config_is_the_pods_service_account_token(
        control_plane: ControlPlane, sidecar_kubeconfig: Callable[[str], Path],
        namespace: str, notebook: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the pod, connect() finds the token mount the webhook copies into the sidecar,
    and reads the token again as the kubelet rotates it."""
    notebook("nb")
    kubeconfig = yaml.safe_load(sidecar_kubeconfig(control_plane.server).read_text())
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(kubeconfig["users"][0]["user"]["token"])
    (mount / "ca.crt").write_bytes(Path(control_plane.ca_file).read_bytes())
    monkeypatch.setattr(connection, "SERVICE_ACCOUNT_DIR", str(mount))
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    api = KubeApi.connect()
    try:
        assert api.connection.access.server == control_plane.server
        assert (await api.get_notebook(namespace, "nb"))["metadata"]["name"] == "nb"
        with pytest.raises(ApiError) as err:  # it is the ServiceAccount
            api.connection.request("GET", "/api/v1/namespaces/default/pods")
        assert err.value.status == 403
        assert f"system:serviceaccount:{namespace}:{SA}" in err.value.body
    finally:
        api.close()
    # The kubelet rotates the token in place: the file is read again after
    # `token_reread_seconds` (a minute; here half a second), not at every request.
    access = dataclasses.replace(connection.in_cluster(), token_reread_seconds=0.5)
    rotating = KubeApi(connection.Connection(access))
    try:
        await rotating.get_notebook(namespace, "nb")
        (mount / "token").write_text("rotated-and-no-longer-valid")
        await rotating.get_notebook(namespace, "nb")  # the token read a moment ago holds
        await asyncio.sleep(0.6)
        with pytest.raises(KubeError) as refused:
            await rotating.get_notebook(namespace, "nb")
        assert refused.value.status == 401
    finally:
        rotating.close()
