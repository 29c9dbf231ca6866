"""Where the control plane's binaries live, their versions, and how they are built."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from gpushift_testing.common import ControlPlaneError

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"
VERSIONS_FILE = HACK / "controlplane-versions.env"
BUILD_SCRIPT = HACK / "build-controlplane.sh"

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                     "notebook-controller")
NOTEBOOK_CONTROLLER_ENV = "GPUSHIFT_NOTEBOOK_CONTROLLER"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KEY=VALUE pairs of hack/controlplane-versions.env."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip("\"'")
    return out


def cache_dir() -> Path:
    env = os.environ.get("GPUSHIFT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gpushift"


def bin_dir() -> Path:
    return cache_dir() / "bin"


def binary_paths() -> dict[str, Path]:
    """Where each binary is expected (it may not exist yet).

    ``notebook-controller`` is Kubeflow's real one: $GPUSHIFT_NOTEBOOK_CONTROLLER when set,
    else what hack/build-controlplane.sh builds from ../shared/kubeflow/notebook-controller.
    """
    v = read_versions()
    b = bin_dir()
    k8s = v["K8S_VERSION"]
    paths = {
        "etcd": b / f"etcd-{v['ETCD_VERSION']}",
        "kube-apiserver": b / f"kube-apiserver-{k8s}",
        "kube-controller-manager": b / f"kube-controller-manager-{k8s}",
        "kube-scheduler": b / f"kube-scheduler-{k8s}",
        "kubectl": b / f"kubectl-{k8s}",
        "kwok": b / f"kwok-{v['KWOK_VERSION']}",
        "kwok-stages": b / f"kwok-stages-{v['KWOK_VERSION']}.yaml",
        "helm": b / f"helm-{v['HELM_VERSION']}",
        "kubeconform": b / f"kubeconform-{v['KUBECONFORM_VERSION']}",
        "promtool": b / f"promtool-{v['PROMETHEUS_VERSION']}",
        "prometheus": b / f"prometheus-{v['PROMETHEUS_VERSION']}",
        "notebook-controller": b / f"notebook-controller-{v['NOTEBOOK_CONTROLLER_REF']}",
    }
    override = os.environ.get(NOTEBOOK_CONTROLLER_ENV)
    if override:
        paths["notebook-controller"] = Path(override)
    return paths


def missing_binaries(names: Iterable[str] = (*REQUIRED_BINARIES, "kwok-stages")) -> list[str]:
    paths = binary_paths()
    return [n for n in names if not paths[n].is_file()]


def build(names: Iterable[str] = (), *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run hack/build-controlplane.sh (idempotent; cold: ~20 min on 2 cores)."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *names],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if check and proc.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stdout}")
    return proc


def kubeflow_path(relative: str) -> Path:
    """A file of Kubeflow's in the shared folder beside the repo ($GPUSHIFT_SHARED, else
    <repo>/../shared): <shared>/kubeflow/<relative>."""
    shared = os.environ.get("GPUSHIFT_SHARED") or str(REPO_ROOT.parent / "shared")
    return Path(shared) / "kubeflow" / relative


def notebook_crd_path() -> Path:
    """The Notebook CRD: $GPUSHIFT_NOTEBOOK_CRD, else Kubeflow's in the shared folder."""
    env = os.environ.get("GPUSHIFT_NOTEBOOK_CRD")
    if env:
        return Path(env)
    return kubeflow_path("kubeflow.org_notebooks.yaml")
