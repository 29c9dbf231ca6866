"""Kubeflow's Notebook CRD and the controller that reconciles Notebooks, for the control plane.

The controller is Kubeflow's real notebook-controller when its binary exists
($GPUSHIFT_NOTEBOOK_CONTROLLER, or built by hack/build-controlplane.sh), else the stand-in
``gpushift_testing.notebook_standin`` -- which is NOT Kubeflow's controller: the Go module
proxy does not serve Kubeflow's module, so the real one cannot be built here.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from gpushift_testing.binaries import BUILD_SCRIPT, NOTEBOOK_CONTROLLER_ENV
from gpushift_testing.common import LOCALHOST, ControlPlaneError, wait_until

KUBEFLOW = "kubeflow"
STAND_IN = "stand-in"
TESTING_DIR = Path(__file__).resolve().parents[1]  # holds the gpushift_testing package


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


def choose_controller(binary: Path) -> tuple[str, str]:
    """("kubeflow", why) when the real binary is there, else ("stand-in", why).

    A path named by $GPUSHIFT_NOTEBOOK_CONTROLLER must exist: no silent fallback then.
    """
    if binary.is_file():
        return KUBEFLOW, f"Kubeflow's notebook-controller ({binary})"
    if os.environ.get(NOTEBOOK_CONTROLLER_ENV):
        raise ControlPlaneError(f"{NOTEBOOK_CONTROLLER_ENV}={binary}: no such file")
    return STAND_IN, (
        "gpushift_testing.notebook_standin, NOT Kubeflow's controller: its binary is missing "
        f"at {binary} (the Go module proxy does not serve Kubeflow's notebook-controller "
        f"module; {BUILD_SCRIPT.name} notebook-controller says so; set "
        f"{NOTEBOOK_CONTROLLER_ENV} to a prebuilt binary to use the real one)"
    )


def controller_command(
    kind: str, binary: Path, kubeconfig: Path, ports: dict[str, int]
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of the chosen controller; /readyz on ports["nbc-probe"]."""
    probe = f"{LOCALHOST}:{ports['nbc-probe']}"
    if kind == KUBEFLOW:
        argv = [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--metrics-addr={LOCALHOST}:{ports['nbc-metrics']}",
            f"--probe-addr={probe}",
            "--enable-leader-election=false",
        ]
        env = {"USE_ISTIO": "false", "ENABLE_CULLING": "false", "CLUSTER_DOMAIN": "cluster.local"}
        return argv, env
    argv = [
        sys.executable,
        "-m",
        "gpushift_testing.notebook_standin",
        f"--kubeconfig={kubeconfig}",
        f"--probe-addr={probe}",
    ]
    path = os.pathsep.join(p for p in (str(TESTING_DIR), os.environ.get("PYTHONPATH")) if p)
    return argv, {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def controller_ready(ports: dict[str, int]) -> bool:
    url = f"http://{LOCALHOST}:{ports['nbc-probe']}/readyz"
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
