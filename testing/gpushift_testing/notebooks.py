"""Kubeflow's Notebook CRD and Kubeflow's notebook-controller, for the control plane.

The controller is Kubeflow's real one, built by hack/build-controlplane.sh from its source
in ../shared/kubeflow/notebook-controller (or $GPUSHIFT_NOTEBOOK_CONTROLLER). It runs as
Kubeflow's manifests run it: in namespace `kubeflow`, as its own ServiceAccount bound to
its own ClusterRole (../shared/kubeflow/rbac/notebook-controller-role.yaml), leader
election off. There is no fallback: a missing binary fails the start, naming the build.
"""

from __future__ import annotations

import base64
import os
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from gpushift_testing.binaries import BUILD_SCRIPT, NOTEBOOK_CONTROLLER_ENV, kubeflow_path
from gpushift_testing.common import LOCALHOST, ControlPlaneError, wait_until
from gpushift_testing.pki import write_kubeconfig

# As in kubeflow/notebooks' kustomize base (namespace kubeflow, namePrefix notebook-controller-).
CONTROLLER_NAMESPACE = "kubeflow"
CONTROLLER_SERVICE_ACCOUNT = "notebook-controller-service-account"
CONTROLLER_ROLE = "notebook-controller-role"
CONTROLLER_ROLE_FILE = "rbac/notebook-controller-role.yaml"


def install_crd(api: Any, crd: Path) -> None:
    """Create the Notebook CRD (too big for client-side apply) and wait until Established."""
    if not crd.is_file():
        raise ControlPlaneError(
            f"Notebook CRD not found at {crd} (set GPUSHIFT_NOTEBOOK_CRD, or pass "
            "notebook_controller=False to run without Notebooks)"
        )
    body = yaml.safe_load(crd.read_text())
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(body)
    name = body["metadata"]["name"]

    def established() -> bool:
        got = ext.read_custom_resource_definition(name)
        return any(
            c.type == "Established" and c.status == "True"
            for c in ((got.status.conditions if got.status else None) or [])
        )

    wait_until(f"CRD {name} Established", established, 30)


def check_binary(binary: Path) -> str:
    """Why this binary runs; ControlPlaneError when it is missing (no silent fallback)."""
    if binary.is_file():
        return f"Kubeflow's notebook-controller ({binary})"
    if os.environ.get(NOTEBOOK_CONTROLLER_ENV):
        raise ControlPlaneError(f"{NOTEBOOK_CONTROLLER_ENV}={binary}: no such file")
    raise ControlPlaneError(
        f"Kubeflow's notebook-controller is missing at {binary}: build it with "
        f"`{BUILD_SCRIPT} notebook-controller` (from ../shared/kubeflow/notebook-controller)"
    )


def install_controller_identity(api: Any, workdir: Path, server: str, ca_file: Path) -> Path:
    """Kubeflow's identity for the controller: namespace, ServiceAccount, its ClusterRole
    (renamed as kustomize's namePrefix does) and the binding; returns a kubeconfig with a
    token of that ServiceAccount. The token is a ServiceAccount token Secret, which does
    not expire: the controller runs as long as the plane (the demo: for hours)."""
    core: Any = client.CoreV1Api(api)
    rbac: Any = client.RbacAuthorizationV1Api(api)
    core.create_namespace({"metadata": {"name": CONTROLLER_NAMESPACE}})
    core.create_namespaced_service_account(
        CONTROLLER_NAMESPACE, {"metadata": {"name": CONTROLLER_SERVICE_ACCOUNT}})
    role = yaml.safe_load(kubeflow_path(CONTROLLER_ROLE_FILE).read_text())
    role["metadata"] = {"name": CONTROLLER_ROLE}
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding({
        "metadata": {"name": f"{CONTROLLER_ROLE}-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": CONTROLLER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SERVICE_ACCOUNT,
                      "namespace": CONTROLLER_NAMESPACE}],
    })
    secret = f"{CONTROLLER_SERVICE_ACCOUNT}-token"
    core.create_namespaced_secret(CONTROLLER_NAMESPACE, {
        "metadata": {"name": secret, "annotations": {
            "kubernetes.io/service-account.name": CONTROLLER_SERVICE_ACCOUNT}},
        "type": "kubernetes.io/service-account-token"})

    def token() -> str:  # kube-controller-manager's token controller fills it in
        data = core.read_namespaced_secret(secret, CONTROLLER_NAMESPACE).data or {}
        return base64.b64decode(data.get("token", "")).decode()

    value = wait_until(f"a token in Secret {CONTROLLER_NAMESPACE}/{secret}", token, 30, 0.2)
    return write_kubeconfig(workdir / "notebook-controller.kubeconfig", server, ca_file,
                            str(value), CONTROLLER_SERVICE_ACCOUNT)


def controller_command(binary: Path, kubeconfig: Path,
                       ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of the controller; /readyz on ports["nbc-probe"]."""
    argv = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--metrics-addr={LOCALHOST}:{ports['nbc-metrics']}",
        f"--probe-addr={LOCALHOST}:{ports['nbc-probe']}",
        "--enable-leader-election=false",
    ]
    env = {"USE_ISTIO": "false", "ENABLE_CULLING": "false", "CLUSTER_DOMAIN": "cluster.local"}
    return argv, env


def controller_ready(ports: dict[str, int]) -> bool:
    url = f"http://{LOCALHOST}:{ports['nbc-probe']}/readyz"
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
