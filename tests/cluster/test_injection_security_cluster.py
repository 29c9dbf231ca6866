"""The injected sidecar in real Kubeflow namespaces, through the real kube-apiserver: Pod
Security `restricted` enforced (its admission plug-in validates after the mutating
webhooks, so it checks the sidecar too), the sidecar running as the notebook's user, and
the sidecar image's pull secrets. The webhook runs as a local process registered by the
Helm chart, with a config file that names a pull secret."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import delete_namespaces, wait_for
from gpushift_testing.webhook_process import (
    LocalWebhook,
    serve_local_webhook,
)
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

INJECTED = "gpushift.io/injected"
SIDECAR = "gpushift-sidecar"
PULL_SECRET = "sidecar-registry"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture(scope="module")
def gpushift(control_plane: cpmod.ControlPlane,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    """gpushift installed by helm (opt-in mode), the webhook running locally with a config
    that names an image pull secret for the sidecar image."""
    workdir = tmp_path_factory.mktemp("webhook")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({"sidecar": {"image_pull_secrets": [PULL_SECRET]}}))
    hook = serve_local_webhook(control_plane.kubeconfig, control_plane.api_client(), workdir,
                               "--config", str(config))
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture
def make_namespace(admin: Any) -> Iterator[Callable[[dict[str, str]], str]]:
    """make(labels) -> a fresh namespace created with these labels from the start (so the
    webhook's namespaceSelector and Pod Security see them at once), deleted afterwards."""
    created: list[str] = []

    def make(labels: dict[str, str]) -> str:
        name = f"podsec-{uuid.uuid4().hex[:8]}"
        admin.core.create_namespace({"metadata": {"name": name, "labels": {
            "gpushift.io/test": "true", "gpushift.io/enabled": "true", **labels}}})
        created.append(name)
        # Pods are refused until the controller-manager has made the default ServiceAccount.
        wait_for(f"ServiceAccount {name}/default",
                 lambda: admin.core.read_namespaced_service_account("default", name),
                 timeout=60)
        return name

    yield make
    delete_namespaces(admin.core, created)


def kubeflow_notebook_pod(name: str, *, restricted: bool = True,
                          pod_context: dict[str, Any] | None = None,
                          container_context: dict[str, Any] | None = None,
                          pull_secrets: list[str] | None = None) -> dict[str, Any]:
    """A notebook pod as Kubeflow's notebook-controller makes it (labels, NB_PREFIX,
    port 8888, fsGroup 100, /dev/shm and a workspace PVC at /home/jovyan); `restricted`
    adds what Pod Security `restricted` asks of the notebook itself."""
    pod_sc: dict[str, Any] = {"fsGroup": 100}
    container_sc: dict[str, Any] = {}
    if restricted:
        pod_sc |= {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        container_sc |= {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    pod_sc |= pod_context or {}
    container_sc |= container_context or {}
    container: dict[str, Any] = {
        "name": name, "image": "kubeflownotebookswg/jupyter-scipy:v1.9.2",
        "env": [{"name": "NB_PREFIX", "value": f"/notebook/ns/{name}"}],
        "ports": [{"containerPort": 8888, "name": "notebook-port", "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
        "workingDir": "/home/jovyan",
    }
    if container_sc:
        container["securityContext"] = container_sc
    pod: dict[str, Any] = {
        "metadata": {"name": f"{name}-0",
                     "labels": {"app": name, "notebook-name": name, "statefulset": name},
                     "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
        "spec": {"containers": [container], "securityContext": pod_sc,
                 "volumes": [{"name": "workspace",
                              "persistentVolumeClaim": {"claimName": f"{name}-workspace"}},
                             {"name": "dshm", "emptyDir": {"medium": "Memory"}}]},
    }
    if pull_secrets is not None:
        pod["spec"]["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    return pod


def create_injected(core: Any, namespace: str, name: str, **shape: Any) -> tuple[Any, str]:
    """Create the notebook pod; (the created pod, the API server's Warning headers). A pod
    refused (Pod Security) raises at once; one created without the sidecar (the API
    server's view of the namespace's labels lagging) is retried under a new name."""
    deadline = time.monotonic() + 30
    attempt = 0
    while True:
        pod_name = name if attempt == 0 else f"{name}-{attempt}"
        pod, _, headers = core.create_namespaced_pod_with_http_info(
            namespace, kubeflow_notebook_pod(pod_name, **shape))
        if INJECTED in (pod.metadata.annotations or {}) or time.monotonic() > deadline:
            return pod, headers.get("Warning", "")
        attempt += 1
        time.sleep(0.5)


def sidecar_of(pod: Any) -> Any:
    found = [c for c in pod.spec.init_containers or [] if c.name == SIDECAR]
    assert found, f"no {SIDECAR} in the created pod (annotations {pod.metadata.annotations})"
    return found[0]


def test_restricted_namespace_admits_the_injected_notebook(gpushift, admin, make_namespace):
    namespace = make_namespace(RESTRICTED)
    # Pod Security is enforced there: a notebook pod that is not restricted is refused.
    with pytest.raises(ApiException) as refused:
        admin.core.create_namespaced_pod(namespace, kubeflow_notebook_pod("lax",
                                                                          restricted=False))
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message, message
    # A restricted notebook pod is admitted, with the sidecar the webhook added.
    pod, warnings = create_injected(admin.core, namespace, "alice")
    assert pod.metadata.annotations[INJECTED]
    sidecar = sidecar_of(pod)
    assert sidecar.restart_policy == "Always"
    sc = sidecar.security_context
    assert sc.run_as_non_root is True and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and not sc.capabilities.add
    assert sc.seccomp_profile.type == "RuntimeDefault"
    assert (sc.run_as_user, sc.run_as_group) == (1000, 100)  # nobody set one: the default
    assert "PodSecurity" not in warnings
    # The pull secret of the sidecar image, in a list the webhook created.
    assert [s.name for s in pod.spec.image_pull_secrets] == [PULL_SECRET]
    # The sidecar's volumes are allowed ones, and the pod's fsGroup is the notebook's.
    runtime = next(v for v in pod.spec.volumes if v.name == "gpushift-runtime")
    assert runtime.empty_dir is not None
    assert pod.spec.security_context.fs_group == 100


def test_notebook_user_is_the_sidecars_user(gpushift, admin, make_namespace):
    namespace = make_namespace(RESTRICTED)
    pod, _ = create_injected(admin.core, namespace, "bob",
                             container_context={"runAsUser": 1001, "runAsGroup": 1001})
    sc = sidecar_of(pod).security_context
    assert (sc.run_as_user, sc.run_as_group) == (1001, 1001)
    assert pod.spec.containers[0].security_context.run_as_user == 1001
    # From the pod's securityContext when the container sets none.
    pod, _ = create_injected(admin.core, namespace, "carol",
                             pod_context={"runAsUser": 1002, "runAsGroup": 1003})
    sc = sidecar_of(pod).security_context
    assert (sc.run_as_user, sc.run_as_group) == (1002, 1003)


def test_root_notebook_gets_a_non_root_sidecar_and_a_warning(gpushift, admin, make_namespace):
    namespace = make_namespace({})  # no Pod Security: a root notebook is allowed here
    pod, warnings = create_injected(admin.core, namespace, "root", restricted=False,
                                    container_context={"runAsUser": 0},
                                    pull_secrets=["team", PULL_SECRET])
    sc = sidecar_of(pod).security_context
    assert sc.run_as_user == 1000 and sc.run_as_non_root is True
    # The webhook's AdmissionReview warning, passed on by the API server to the client.
    assert "runs as root (UID 0)" in warnings, warnings
    # A pull secret the pod already lists is not added again.
    assert [s.name for s in pod.spec.image_pull_secrets] == ["team", PULL_SECRET]
