"""The Helm chart (charts/gpushift) rendered with `helm template`, for the chart's unit
tests (test_chart_render_*.py): helm itself, rendering (cached per set of values), the
lookups the tests use on the rendered objects, and the value variants they run over.

helm and promtool come from hack/build-controlplane.sh (`hack/build-controlplane.sh helm
promtool`); without them the chart tests fail (they do not skip): the chart is part of
what ships.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpushift_webhook.config import WebhookConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpushift"
BUILD_SCRIPT = ROOT / "hack" / "build-controlplane.sh"
VERSIONS_FILE = ROOT / "hack" / "controlplane-versions.env"
RELEASE = "gpushift"
NAMESPACE = "gpushift-system"


@functools.cache
def _tool_path(name: str, version_key: str) -> Path:
    versions = dict(
        line.split("=", 1)
        for line in VERSIONS_FILE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    version = versions.get(version_key, "").strip()
    assert version, f"{VERSIONS_FILE} does not define {version_key}"
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True,
                         text=True, check=True, timeout=60)
    return Path(out.stdout.strip()) / f"{name}-{version}"


def _tool(name: str, version_key: str) -> Path:
    path = _tool_path(name, version_key)
    if not path.is_file():
        pytest.fail(f"{name} not found at {path}: build it with `{BUILD_SCRIPT} {name}` "
                    "(the chart tests need it and do not skip)", pytrace=False)
    return path


def helm() -> Path:
    return _tool("helm", "HELM_VERSION")


def promtool() -> Path:
    """Prometheus's promtool: checks and unit-tests the chart's alerting rules."""
    return _tool("promtool", "PROMETHEUS_VERSION")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=120)


@functools.cache
def _render(sets: tuple[str, ...], set_json: tuple[str, ...], values_yaml: str,
            release: str, namespace: str, kube_version: str | None,
            ) -> tuple[dict[str, Any], ...]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    if kube_version:
        args += ["--kube-version", kube_version]
    for s in sets:
        args += ["--set", s]
    for s in set_json:
        args += ["--set-json", s]
    if values_yaml:
        args += ["--values", "-"]
    proc = subprocess.run([str(helm()), *args], input=values_yaml, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(*sets: str, set_json: tuple[str, ...] = (), values: dict[str, Any] | None = None,
           release: str = RELEASE, namespace: str = NAMESPACE,
           kube_version: str | None = None) -> list[dict[str, Any]]:
    """`helm template` of the chart; `kube_version`: the API server's version it renders
    for (default: helm's own, as `helm template` without a cluster)."""
    values_yaml = yaml.safe_dump(values) if values else ""
    return list(_render(tuple(sets), tuple(set_json), values_yaml, release, namespace,
                        kube_version))


def all_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in all_of(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def webhook_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def mutating_webhook(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    return hook


def rendered_config(docs: list[dict[str, Any]]) -> WebhookConfig:
    cm = one(docs, "ConfigMap", f"{RELEASE}-config")
    return parse_config(yaml.safe_load(cm["data"]["config.yaml"]))


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")]


HARDENED = {
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

VARIANTS = {
    "defaults": [],
    "certManager": ["certs.mode=certManager"],
    "cluster-wide": ["enablement.mode=cluster-wide"],
    "prePuller": ["prePuller.enabled=true"],
    "everything": ["certs.mode=certManager", "enablement.mode=cluster-wide",
                   "prePuller.enabled=true", "metrics.serviceMonitor.enabled=true",
                   "metrics.prometheusRule.enabled=true",
                   "metrics.scrapeAnnotations=true", "pdb.enabled=true",
                   "sidecar.rbac.bindServiceAccounts[0].namespace=team-a",
                   "sidecar.rbac.bindServiceAccounts[0].name=default-editor"],
    "local-webhook": ["webhook.deploy=false",
                      "webhook.urlOverride=https://127.0.0.1:9443/mutate",
                      "webhook.caBundle=Zm9v"],
}
