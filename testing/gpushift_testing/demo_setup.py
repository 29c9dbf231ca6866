"""The objects of the local demo (and of the pod runner's tests): an opted-in namespace,
its ServiceAccount, a workspace PVC and a CPU Notebook running JupyterLab with gpushift.

The Notebook is what a Kubeflow user gets from the UI with a custom command: Kubeflow's
example image's ``jupyter lab`` line (``--ServerApp.base_url=$(NB_PREFIX)``), a Jupyter
token from the env, the workspace PVC at ``/home/jovyan``, the ServiceAccount
``default-editor``. The image name is the CPU side of the chart's image map, so a move
to GPU swaps it for the CUDA one; the local pod runner runs the command from the
project's environment whatever the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gpushift_testing.access import CHART, EDITOR_SA
from gpushift_testing.demo_gpus import with_t4_profile
from gpushift_testing.webhook_process import NAMESPACE as CHART_NAMESPACE
from gpushift_testing.webhook_process import RELEASE as CHART_RELEASE
from gpushift_testing.workloads import create_workspace

NOTEBOOK_API = ("kubeflow.org", "v1")
CPU_IMAGE = "gpushift/gpushift-notebook:0.1.0-cpu"  # the chart's image_map
ENABLED_LABEL = "gpushift.io/enabled"
JUPYTER_ARGS = ["--notebook-dir=/home/jovyan", "--ip=0.0.0.0", "--port=8888", "--no-browser",
                "--ServerApp.allow_origin=*", "--ServerApp.authenticate_prometheus=False",
                "--ServerApp.base_url=$(NB_PREFIX)"]


def opt_in_namespace(core: Any, namespace: str, *, create: bool = True) -> None:
    """Namespace `namespace` labelled ``gpushift.io/enabled=true`` (created if asked)."""
    labels = {ENABLED_LABEL: "true"}
    if create:
        core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    else:
        core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def create_service_account(core: Any, namespace: str, name: str = EDITOR_SA) -> None:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})


def chart_sets_binding(namespace: str, account: str = EDITOR_SA) -> list[str]:
    """helm --set values binding the chart's sidecar role to `account` in `namespace`
    (the chart's way for clusters without Kubeflow's kubeflow-edit aggregation)."""
    return [f"sidecar.rbac.bindServiceAccounts[0].namespace={namespace}",
            f"sidecar.rbac.bindServiceAccounts[0].name={account}"]


def create_workspace_claim(core: Any, namespace: str, claim: str, folder: Path) -> str:
    """A hostPath PV on `folder` and PVC `claim` bound to it; returns the PV's name."""
    return create_workspace(core, namespace, claim, folder)


def notebook_body(name: str, claim: str, token: str, *,
                  service_account: str = EDITOR_SA, image: str = CPU_IMAGE,
                  extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """A CPU Notebook running JupyterLab (Jupyter token `token`) on workspace `claim`."""
    env = [{"name": "JUPYTER_TOKEN", "value": token}]
    env += [{"name": k, "value": v} for k, v in (extra_env or {}).items()]
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "labels": {"app": name},
                     "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
        "spec": {"template": {"spec": {
            "serviceAccountName": service_account,
            "containers": [{
                "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["jupyter", "lab"], "args": list(JUPYTER_ARGS), "env": env,
                "resources": {"limits": {"cpu": "2", "memory": "4Gi"},
                              "requests": {"cpu": "500m", "memory": "1Gi"}},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                                 {"name": "workspace", "mountPath": "/home/jovyan"}],
            }],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}],
        }}},
    }


def create_notebook(custom: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = custom.create_namespaced_custom_object(
        *NOTEBOOK_API, namespace, "notebooks", body)
    return created


def notebook_url(proxy_port: int, namespace: str, name: str) -> str:
    """The notebook's stable local URL (through the proxy), as Kubeflow's route gives."""
    return f"http://127.0.0.1:{proxy_port}/notebook/{namespace}/{name}/"


def webhook_arguments(workdir: Path, ready_timeout: int | None) -> list[str]:
    """Extra `gpushift-webhook serve` arguments: the chart's own `config` (values.yaml: the
    profiles, the image map of gpushift's notebook images, the idle bounds) and the demo's
    T4 profile (`demo_gpus`), as the chart's ConfigMap would mount it, written into
    `workdir`; with `ready_timeout`, also the migration guard with that
    `guard.ready_timeout_seconds` and the GPU capacity it publishes every 2 s (None, the
    demo's default: neither)."""
    config = with_t4_profile(dict(yaml.safe_load((CHART / "values.yaml").read_text())["config"]))
    guard: list[str] = []
    if ready_timeout is not None:
        config["guard"] = {**(config.get("guard") or {}), "ready_timeout_seconds": ready_timeout}
        # The guard's Lease holder publishes what is free per profile where the chart's
        # RBAC lets every notebook's ServiceAccount read it ("Move to GPU…").
        config["capacity_configmap"] = f"{CHART_NAMESPACE}/{CHART_RELEASE}-gpu-capacity"
        guard = ["--guard", "--guard-interval", "1", "--capacity", "--capacity-interval", "2"]
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path), *guard]
