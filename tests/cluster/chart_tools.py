"""What the chart's cluster tests (test_chart_cluster_*.py) share: the names of their
releases, namespaces and objects, the value combinations they check, and helm and
kubectl run with their state kept in a temporary folder (`Tools`; the `tools` and `kube`
fixtures of conftest.py hand them out).

helm and kubectl come from hack/build-controlplane.sh; without them these tests fail.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpushift_testing.controlplane import binary_paths

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpushift"

RELEASE = "gpushift-t"  # fullname "gpushift-t": no clash with release "gpushift"
RELEASE_NS = "gpushift-chart-test"
FULLNAME = RELEASE
DRY_RELEASE = "gpushift-dry"
DRY_NS = "gpushift-chart-dryrun"
DRY_TEAMS = ("gpushift-chart-dry-a", "gpushift-chart-dry-b")
USER_NS = "gpushift-chart-user"  # a Kubeflow profile namespace
OTHER_NS = "gpushift-chart-other"  # another profile's namespace
BOUND_NS = "gpushift-chart-bound"  # sidecar.rbac.bindServiceAccounts
OTHER_RELEASE_OBJECTS = "gpushift"  # names used by test_webhook_cluster.py's release

AGGREGATE_LABEL = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit"
SIDECAR_ROLE = f"{FULLNAME}-notebook-sidecar"
WEBHOOK_SA = (RELEASE_NS, f"{FULLNAME}-webhook")
TLS_SECRET = f"{FULLNAME}-tls"
GUARD_LEASE = f"{FULLNAME}-guard"
CAPACITY_CONFIGMAP = f"{FULLNAME}-gpu-capacity"

IMAGE_PAIRS = [
    {"cpu": "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2",
     "cuda": "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"},
    {"cpu": "kubeflownotebookswg/jupyter-tensorflow-full:v1.9.2",
     "cuda": "kubeflownotebookswg/jupyter-tensorflow-cuda-full:v1.9.2"},
]

# Value combinations linted and dry-run created.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "certManager": {"certs": {"mode": "certManager"}},
    "cluster-wide": {"enablement": {"mode": "cluster-wide"}},
    "prePuller": {"prePuller": {"enabled": True}, "config": {"image_map": IMAGE_PAIRS}},
    "bindServiceAccounts": {"sidecar": {"rbac": {"bindServiceAccounts": [
        {"namespace": DRY_TEAMS[0], "name": "default-editor"},
        {"namespace": DRY_TEAMS[0], "name": "jupyter"},
        {"namespace": DRY_TEAMS[1], "name": "default-editor"},
    ]}}},
    "serviceMonitor": {"metrics": {"scrapeAnnotations": True,
                                   "serviceMonitor": {"enabled": True},
                                   "prometheusRule": {"enabled": True}}},
    "no-guard": {"rbac": {"migrationGuard": False}},
    "hardening": {
        "networkPolicy": {"enabled": True, "ingressFrom": [{"namespaceSelector": {}}]},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey":
                                       "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "podSecurityContext": {"runAsNonRoot": True,
                               "seccompProfile": {"type": "RuntimeDefault"}}},
}


def tool(name: str) -> Path:
    path = binary_paths()[name]
    if not path.is_file():
        pytest.fail(f"{name} not found at {path}: build it with `hack/build-controlplane.sh "
                    f"{name}` (these tests need it and do not skip)", pytrace=False)
    return path


@dataclass
class Tools:
    """helm and kubectl with their state (caches, config) kept in a temporary dir."""

    home: Path
    kubeconfig: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        env.update(HELM_CACHE_HOME=str(self.home / "cache"),
                   HELM_CONFIG_HOME=str(self.home / "config"),
                   HELM_DATA_HOME=str(self.home / "data"),
                   KUBECACHEDIR=str(self.home / "kubecache"))
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.home / f"values-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def run(self, name: str, *args: str, stdin: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(tool(name)), *args], input=stdin, capture_output=True,
                              text=True, env=self.env(), timeout=timeout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.run("helm", *args)
        if check:
            assert proc.returncode == 0, (
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, values: dict[str, Any], release: str,
                 namespace: str) -> list[dict[str, Any]]:
        proc = self.helm("template", release, str(CHART), "--namespace", namespace,
                         "--values", str(self.values_file(values)))
        return [d for d in yaml.safe_load_all(proc.stdout) if d]
