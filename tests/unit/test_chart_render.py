"""The Helm chart (charts/gpushift), rendered with `helm template` and checked as data.

helm comes from hack/build-controlplane.sh (`hack/build-controlplane.sh helm`); without
it these tests fail (they do not skip): the chart is part of what ships.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import subprocess
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpushift_webhook import cli
from gpushift_webhook.config import WebhookConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpushift"
BUILD_SCRIPT = ROOT / "hack" / "build-controlplane.sh"
VERSIONS_FILE = ROOT / "hack" / "controlplane-versions.env"
RELEASE = "gpushift"
NAMESPACE = "gpushift-system"


# ----------------------------------------------------------------------------- helpers


@functools.cache
def _helm_path() -> Path:
    versions = dict(
        line.split("=", 1)
        for line in VERSIONS_FILE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    version = versions.get("HELM_VERSION", "").strip()
    assert version, f"{VERSIONS_FILE} does not define HELM_VERSION"
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True,
                         text=True, check=True, timeout=60)
    return Path(out.stdout.strip()) / f"helm-{version}"


def helm() -> Path:
    path = _helm_path()
    if not path.is_file():
        pytest.fail(f"helm not found at {path}: build it with `{BUILD_SCRIPT} helm` "
                    "(the chart tests need it and do not skip)", pytrace=False)
    return path


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=120)


@functools.cache
def _render(sets: tuple[str, ...], set_json: tuple[str, ...], values_yaml: str,
            release: str, namespace: str) -> tuple[dict[str, Any], ...]:
    args = ["template", release, str(CHART), "--namespace", namespace]
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
           release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    values_yaml = yaml.safe_dump(values) if values else ""
    return list(_render(tuple(sets), tuple(set_json), values_yaml, release, namespace))


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
                   "metrics.scrapeAnnotations=true", "pdb.enabled=true",
                   "sidecar.rbac.bindServiceAccounts[0].namespace=team-a",
                   "sidecar.rbac.bindServiceAccounts[0].name=default-editor"],
    "local-webhook": ["webhook.deploy=false",
                      "webhook.urlOverride=https://127.0.0.1:9443/mutate",
                      "webhook.caBundle=Zm9v"],
}


# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize("sets", [
    [],
    ["certs.mode=certManager"],
    ["enablement.mode=cluster-wide"],
    ["prePuller.enabled=true"],
    VARIANTS["everything"],
], ids=["defaults", "certManager", "cluster-wide", "prePuller", "everything"])
def test_helm_lint_passes(sets):
    args = ["lint", "--strict", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("bad", [
    "certs.mode=vault", "enablement.mode=everywhere", "webhook.timeoutSeconds=60",
    "webhook.urlOverride=http://127.0.0.1:80/mutate", "config.sidecar.port=0",
    "config.sidecar.imag=x", "replica=3",
])
def test_schema_refuses_bad_values(bad):
    proc = run_helm("template", RELEASE, str(CHART), "--set", bad)
    assert proc.returncode != 0, f"--set {bad} was accepted"


# --------------------------------------------------------------------- Deployment


def test_deployment_defaults():
    docs = render()
    deploy = one(docs, "Deployment", f"{RELEASE}-webhook")
    assert deploy["metadata"]["namespace"] == NAMESPACE
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    c = webhook_container(docs)
    assert c["image"] == f"gpushift/webhook:{app_version()}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["env"] == [{"name": "GPUSHIFT_NAMESPACE",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    assert c["resources"] == chart_values()["resources"]
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in c["ports"]
    # Selector labels select the pod template.
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


def test_deployment_probes():
    c = webhook_container(render())
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and ready["scheme"] == "HTTPS"
    assert live["path"] == "/healthz" and live["scheme"] == "HTTPS"
    for probe in (ready, live):
        assert probe["port"] in (8443, "https")


def test_deployment_security_context():
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = webhook_container(docs)["securityContext"]
    assert sc.items() >= HARDENED.items()
    assert sc["runAsUser"] == 65532
    assert "hostNetwork" not in pod and "hostPID" not in pod


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_hardened(variant):
    for pod in pod_specs(render(*VARIANTS[variant])):
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"].items() >= HARDENED.items(), c["name"]
            assert c["securityContext"]["runAsUser"] > 0
            assert "resources" in c, c["name"]


def test_deployment_self_managed_mounts():
    docs = render()
    c = webhook_container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    config_mount = mounts["/etc/gpushift"]
    assert config_mount["readOnly"] is True
    assert volumes[config_mount["name"]]["configMap"]["name"] == f"{RELEASE}-config"
    assert {"key": "config.yaml", "path": "config.yaml"} in \
        volumes[config_mount["name"]]["configMap"]["items"]
    assert "emptyDir" in volumes[mounts["/var/run/gpushift/certs"]["name"]]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_deployment_cert_manager_mounts_the_certificate_secret():
    docs = render("certs.mode=certManager")
    c = webhook_container(docs)
    assert "--self-managed-certs" not in c["args"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    certs = next(m for m in c["volumeMounts"] if m["mountPath"] == "/var/run/gpushift/certs")
    assert certs["readOnly"] is True
    certificate = one(docs, "Certificate")
    assert volumes[certs["name"]]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert certificate["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    service = one(docs, "Service")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    issuer = one(docs, "Issuer")
    assert "selfSigned" in issuer["spec"]
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]


def test_no_cert_manager_objects_by_default():
    docs = render()
    assert not all_of(docs, "Certificate") and not all_of(docs, "Issuer")


def test_anti_affinity_spreads_replicas_across_nodes():
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def _run_cli(docs: list[dict[str, Any]], tmp_path: Path, monkeypatch) -> tuple[Any, Any]:
    """Run the webhook's own CLI on the Deployment's args (serving stubbed out), with the
    rendered ConfigMap as its config file."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    args = list(webhook_container(docs)["args"])
    args[args.index("--config") + 1] = str(config_file)
    seen: dict[str, Any] = {}

    async def fake_serve_forever(config, args):
        seen["config"], seen["args"] = config, args

    monkeypatch.setattr(cli, "serve_forever", fake_serve_forever)
    monkeypatch.setattr(cli.jsonlog, "setup", lambda level: None)
    assert cli.main(args) == 0
    return seen["config"], seen["args"]


@pytest.mark.parametrize("release", [RELEASE, "team"])
def test_deployment_args_are_what_the_webhook_cli_expects(release, tmp_path, monkeypatch):
    docs = render(release=release)
    fullname = release if "gpushift" in release else f"{release}-gpushift"
    config, args = _run_cli(docs, tmp_path, monkeypatch)
    assert args.command == "serve"
    assert (args.host, args.port) == ("0.0.0.0", 8443)
    assert args.cert_dir == "/var/run/gpushift/certs"
    assert args.namespace == NAMESPACE
    assert args.self_managed_certs is True
    assert args.webhook_configuration == one(docs, "MutatingWebhookConfiguration")[
        "metadata"]["name"] == fullname
    assert args.service_name == one(docs, "Service")["metadata"]["name"]
    assert args.secret_name == f"{fullname}-tls"
    # The Role lets it manage exactly that Secret.
    role = one(docs, "Role")
    named = [r for r in role["rules"] if "secrets" in r["resources"] and "resourceNames" in r]
    assert named and all(r["resourceNames"] == [args.secret_name] for r in named)
    assert NAMESPACE in config.excluded_namespaces


@pytest.mark.parametrize("release", [RELEASE, "team"])
def test_migration_guard_is_on_with_the_lease_its_role_names(release, tmp_path, monkeypatch):
    docs = render(release=release)
    fullname = release if "gpushift" in release else f"{release}-gpushift"
    config, args = _run_cli(docs, tmp_path, monkeypatch)
    assert args.guard is True
    assert args.guard_lease_name == args.guard_lease.name == f"{fullname}-guard"
    assert args.guard_lease.namespace == NAMESPACE
    assert args.guard_interval == chart_values()["guard"]["intervalSeconds"] == 5
    assert config.guard.ready_timeout_seconds == 300
    # The Role lets it get and update exactly that Lease (create cannot be named).
    role = one(docs, "Role")
    named = [r for r in role["rules"] if "leases" in r["resources"] and "resourceNames" in r]
    assert named and all(r["resourceNames"] == [args.guard_lease_name] for r in named)
    assert {"get", "update"} <= {v for r in named for v in r["verbs"]}


@pytest.mark.parametrize("sets", [["guard.enabled=false"], ["rbac.migrationGuard=false"]])
def test_migration_guard_off(sets, tmp_path, monkeypatch):
    """Off by value, or without its RBAC (it would only collect 403s)."""
    docs = render(*sets)
    assert not any(a.startswith("--guard") for a in webhook_container(docs)["args"])
    _, args = _run_cli(docs, tmp_path, monkeypatch)
    assert args.guard is False


def test_migration_guard_interval_is_a_value(tmp_path, monkeypatch):
    _, args = _run_cli(render(set_json=("guard.intervalSeconds=2.5",)), tmp_path, monkeypatch)
    assert args.guard_interval == 2.5
    proc = run_helm("template", RELEASE, str(CHART), "--set", "guard.intervalSeconds=0")
    assert proc.returncode != 0


def test_deployment_args_cert_manager_mode(tmp_path, monkeypatch):
    _, args = _run_cli(render("certs.mode=certManager"), tmp_path, monkeypatch)
    assert args.self_managed_certs is False
    assert args.namespace == NAMESPACE


def test_config_change_rolls_the_pods():
    def checksum(docs):
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"]
    assert checksum(render()) != checksum(render("config.idle.timeout_seconds=300"))


def test_service_and_pdb():
    docs = render()
    svc = one(docs, "Service", f"{RELEASE}-webhook")
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 443 and port["targetPort"] in (8443, "https")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_metrics_extras_are_off_by_default():
    docs = render()
    assert not all_of(docs, "ServiceMonitor")
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in annotations
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.scrapeAnnotations=true")
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "https"
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"


def test_deploy_false_renders_no_workload():
    docs = render(*VARIANTS["local-webhook"])
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"):
        assert not all_of(docs, kind), kind
    for kind in ("MutatingWebhookConfiguration", "ConfigMap", "ServiceAccount", "Role",
                 "ClusterRole"):
        assert all_of(docs, kind), kind


# ------------------------------------------------------- MutatingWebhookConfiguration


def test_webhook_configuration_fields():
    docs = render()
    mwc = one(docs, "MutatingWebhookConfiguration", RELEASE)
    assert "namespace" not in mwc["metadata"]
    hook = mutating_webhook(docs)
    assert hook["name"] == "pods.gpushift.io"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Ignore"
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""],
                              "apiVersions": ["v1"], "resources": ["pods"],
                              "scope": "Namespaced"}]
    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": "notebook-name", "operator": "Exists"}]}
    assert hook["clientConfig"]["service"] == {
        "name": one(docs, "Service")["metadata"]["name"], "namespace": NAMESPACE,
        "path": "/mutate", "port": 443}
    assert "url" not in hook["clientConfig"]
    # Self-managed: the webhook writes the caBundle; nothing to render.
    assert "caBundle" not in hook["clientConfig"]
    assert "cert-manager.io/inject-ca-from" not in mwc["metadata"].get("annotations", {})


def test_timeout_is_a_value():
    assert mutating_webhook(render("webhook.timeoutSeconds=3"))["timeoutSeconds"] == 3


def _expressions(hook: dict[str, Any]) -> dict[str, dict[str, Any]]:
    exprs = hook["namespaceSelector"]["matchExpressions"]
    assert "matchLabels" not in hook["namespaceSelector"]
    return {e["key"]: e for e in exprs}


@pytest.mark.parametrize("namespace", [NAMESPACE, "platform"])
def test_namespace_selector_opt_in(namespace):
    exprs = _expressions(mutating_webhook(render(namespace=namespace)))
    assert exprs["gpushift.io/enabled"] == {"key": "gpushift.io/enabled", "operator": "In",
                                            "values": ["true"]}
    names = exprs["kubernetes.io/metadata.name"]
    assert names["operator"] == "NotIn"
    assert sorted(names["values"]) == sorted(["kube-system", namespace])


@pytest.mark.parametrize("namespace", [NAMESPACE, "platform"])
def test_namespace_selector_cluster_wide(namespace):
    exprs = _expressions(mutating_webhook(render("enablement.mode=cluster-wide",
                                                 namespace=namespace)))
    assert exprs["gpushift.io/enabled"] == {"key": "gpushift.io/enabled", "operator": "NotIn",
                                            "values": ["false"]}
    names = exprs["kubernetes.io/metadata.name"]
    assert names["operator"] == "NotIn"
    assert sorted(names["values"]) == sorted(["kube-system", namespace])


def test_namespace_selector_also_excludes_configured_namespaces():
    exprs = _expressions(mutating_webhook(render(
        set_json=('config.excluded_namespaces=["kube-system","monitoring"]',))))
    assert sorted(exprs["kubernetes.io/metadata.name"]["values"]) == \
        ["gpushift-system", "kube-system", "monitoring"]


def test_url_override_switches_client_config():
    docs = render(*VARIANTS["local-webhook"])
    client = mutating_webhook(docs)["clientConfig"]
    assert client == {"url": "https://127.0.0.1:9443/mutate", "caBundle": "Zm9v"}


def test_ca_bundle_value_is_preset():
    client = mutating_webhook(render("webhook.caBundle=Zm9v"))["clientConfig"]
    assert client["caBundle"] == "Zm9v" and "service" in client


def test_cert_manager_injects_the_ca():
    docs = render("certs.mode=certManager")
    mwc = one(docs, "MutatingWebhookConfiguration")
    certificate = one(docs, "Certificate")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        f"{NAMESPACE}/{certificate['metadata']['name']}"


# ---------------------------------------------------------------------- ConfigMap


def test_config_map_matches_the_webhook_schema():
    docs = render()
    config = rendered_config(docs)
    assert config == parse_config(chart_values()["config"])
    # values.yaml writes out the webhook's own defaults; only the example image map differs.
    assert config.image_map, "values.yaml should carry an example image pair"
    assert dataclasses.replace(config, image_map=[]) == WebhookConfig()
    assert [(p.cpu, p.cuda) for p in config.image_map] == [
        ("kubeflownotebookswg/jupyter-pytorch-full:v1.9.2",
         "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2")]
    (profile,) = config.profiles
    assert profile.name == config.default_profile == "nvidia-1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        profile.tolerations


def test_config_map_overrides_keep_their_types():
    docs = render("config.idle.timeout_seconds=300", "config.idle.allow_pin=true",
                  "config.sidecar.port=9000", "config.sidecar.native=false")
    config = rendered_config(docs)
    assert config.idle.timeout_seconds == 300 and config.idle.allow_pin is True
    assert config.sidecar.port == 9000 and config.sidecar.native is False


def _dataclass_keys(cls: type) -> dict[str, Any]:
    """{field: nested keys or None} of a config dataclass, recursively."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is list:
            hint = typing.get_args(hint)[0]
        out[f.name] = _dataclass_keys(hint) if dataclasses.is_dataclass(hint) else None
    return out


def _schema_keys(schema: dict[str, Any]) -> dict[str, Any] | None:
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return _schema_keys(schema["items"])
    props = schema.get("properties")
    if schema.get("type") != "object" or props is None:
        return None
    assert schema.get("additionalProperties") is False, "a closed object must refuse extra keys"
    return {k: _schema_keys(v) for k, v in props.items()}


def test_values_schema_mirrors_the_config_dataclasses():
    schema = json.loads((CHART / "values.schema.json").read_text())
    got = _schema_keys(schema["properties"]["config"])
    want = _dataclass_keys(WebhookConfig)
    # Fields typed dict[str, str] (resources' requests/limits, node_selector) are open
    # maps in the schema; compare the dataclass structure only.
    assert got == want


def test_values_schema_modes_are_enums():
    props = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert props["certs"]["properties"]["mode"]["enum"] == ["selfManaged", "certManager"]
    assert props["enablement"]["properties"]["mode"]["enum"] == ["opt-in", "cluster-wide"]
    assert set(props) >= set(chart_values()), "every top-level value has a schema"


# --------------------------------------------------------------------------- RBAC


def _verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"]
            for v in r["verbs"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_wildcards_in_any_rule(variant):
    for role in all_of(render(*VARIANTS[variant]), "Role") + \
            all_of(render(*VARIANTS[variant]), "ClusterRole"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_sidecar_cluster_role_is_aggregated_and_minimal():
    docs = render()
    role = one(docs, "ClusterRole", f"{RELEASE}-notebook-sidecar")
    labels = role["metadata"]["labels"]
    assert labels["rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit"] == "true"
    rules = role["rules"]
    assert _verbs(rules, "kubeflow.org", "notebooks") == {"get", "patch"}
    assert _verbs(rules, "", "pods") == {"get"}
    assert _verbs(rules, "", "events") <= {"create", "patch"}
    allowed = {("kubeflow.org", "notebooks"), ("", "pods"), ("", "events"),
               ("events.k8s.io", "events")}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) in allowed, rule
        assert "resourceNames" not in rule or rule["resourceNames"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_cluster_role_binding_grants_the_sidecar_anything(variant):
    docs = render(*VARIANTS[variant])
    sidecar_role = f"{RELEASE}-notebook-sidecar"
    for crb in all_of(docs, "ClusterRoleBinding"):
        assert crb["roleRef"]["name"] != sidecar_role
        for subject in crb["subjects"]:
            assert subject == {"kind": "ServiceAccount", "name": f"{RELEASE}-webhook",
                               "namespace": NAMESPACE}
    bindings = [rb for rb in all_of(docs, "RoleBinding")
                if rb["roleRef"]["name"] == sidecar_role]
    if variant != "everything":
        assert not bindings


def test_bind_service_accounts_uses_namespaced_role_bindings():
    accounts = [{"namespace": "team-a", "name": "default-editor"},
                {"namespace": "team-a", "name": "ci"},
                {"namespace": "team-b", "name": "default-editor"}]
    docs = render(set_json=(f"sidecar.rbac.bindServiceAccounts={json.dumps(accounts)}",))
    sidecar_role = f"{RELEASE}-notebook-sidecar"
    bindings = [rb for rb in all_of(docs, "RoleBinding")
                if rb["roleRef"]["name"] == sidecar_role]
    subjects = set()
    for rb in bindings:
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                 "kind": "ClusterRole", "name": sidecar_role}
        for s in rb["subjects"]:
            assert s["kind"] == "ServiceAccount"
            assert s["namespace"] == rb["metadata"]["namespace"]
            subjects.add((s["namespace"], s["name"]))
    assert subjects == {(a["namespace"], a["name"]) for a in accounts}
    assert sorted(rb["metadata"]["namespace"] for rb in bindings) == ["team-a", "team-b"]


def test_webhook_rbac_self_managed():
    docs = render()
    role = one(docs, "Role", f"{RELEASE}-webhook")
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = role["rules"]
    for rule in rules:
        if "secrets" in rule["resources"]:
            assert not {"list", "watch", "delete", "deletecollection"} & set(rule["verbs"])
            if set(rule["verbs"]) - {"create"}:
                assert rule["resourceNames"] == [f"{RELEASE}-tls"]
    assert _verbs(rules, "", "secrets") == {"create", "get", "update", "patch"}
    assert _verbs(rules, "coordination.k8s.io", "leases") == {"create", "get", "update"}
    for rule in rules:
        if "leases" in rule["resources"] and set(rule["verbs"]) - {"create"}:
            assert rule["resourceNames"] == [f"{RELEASE}-guard"]
    assert _verbs(rules, "", "events") == {"create", "patch"}

    cluster = one(docs, "ClusterRole", f"{RELEASE}-webhook")["rules"]
    (mwc_rule,) = [r for r in cluster if "mutatingwebhookconfigurations" in r["resources"]]
    assert mwc_rule["resourceNames"] == [RELEASE]
    assert set(mwc_rule["verbs"]) == {"get", "patch"}
    assert _verbs(cluster, "kubeflow.org", "notebooks") == {"get", "list", "watch", "patch"}
    assert _verbs(cluster, "", "pods") == {"get", "list", "watch", "delete"}
    assert not _verbs(cluster, "", "secrets")
    crb = one(docs, "ClusterRoleBinding", f"{RELEASE}-webhook")
    assert crb["roleRef"]["name"] == f"{RELEASE}-webhook"
    rb = one(docs, "RoleBinding", f"{RELEASE}-webhook")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": f"{RELEASE}-webhook"}


def test_webhook_rbac_cert_manager_drops_certificate_permissions():
    docs = render("certs.mode=certManager")
    assert not _verbs(one(docs, "Role")["rules"], "", "secrets")
    cluster = one(docs, "ClusterRole", f"{RELEASE}-webhook")["rules"]
    assert not [r for r in cluster if "mutatingwebhookconfigurations" in r["resources"]]
    docs = render("certs.mode=certManager", "rbac.migrationGuard=false")
    assert not [d for d in all_of(docs, "ClusterRole")
                if d["metadata"]["name"] == f"{RELEASE}-webhook"]
    assert not all_of(docs, "ClusterRoleBinding")


# --------------------------------------------------------------------- pre-puller


def test_pre_puller_is_off_by_default():
    assert not all_of(render(), "DaemonSet")


def _pullers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in all_of(docs, "DaemonSet")}


def test_pre_puller_one_init_container_per_image():
    image_map = [{"cpu": "jupyter-pytorch:v1", "cuda": "jupyter-pytorch-cuda:v1"},
                 {"cpu": "jupyter-tf:v1", "cuda": "jupyter-tf-cuda:v1"},
                 {"cpu": "jupyter-scipy:v1", "cuda": "jupyter-pytorch-cuda:v1"}]
    docs = render("prePuller.enabled=true",
                  set_json=(f"config.image_map={json.dumps(image_map)}",))
    pullers = _pullers(docs)
    assert set(pullers) == {"gpu", "cpu"}
    for kind, key in (("gpu", "cuda"), ("cpu", "cpu")):
        pod = pullers[kind]["spec"]["template"]["spec"]
        images = [c["image"] for c in pod["initContainers"]]
        assert images == list(dict.fromkeys(p[key] for p in image_map)), kind
        names = [c["name"] for c in pod["initContainers"]]
        assert len(set(names)) == len(names)
        for c in pod["initContainers"]:
            assert c["command"] == ["sh", "-c", "echo pulled"]
            assert c["securityContext"]["runAsUser"] == 65534
        (pause,) = pod["containers"]
        assert pause["image"] == chart_values()["prePuller"]["pause"]["image"]
        assert pod["automountServiceAccountToken"] is False
    # The rendered ConfigMap carries the same map the pullers pull.
    assert [p.cuda for p in rendered_config(docs).image_map] == [p["cuda"] for p in image_map]


def test_pre_puller_node_placement():
    pullers = _pullers(render("prePuller.enabled=true"))
    gpu = pullers["gpu"]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in gpu["tolerations"]
    cpu = pullers["cpu"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu
    (term,) = cpu["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in \
        term["matchExpressions"]


def test_pre_puller_extra_images_go_to_both():
    docs = render("prePuller.enabled=true",
                  set_json=('prePuller.extraImages=["gpushift/sidecar:0.1.0"]',))
    for ds in _pullers(docs).values():
        images = [c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]]
        assert images[-1] == "gpushift/sidecar:0.1.0"


def test_pre_puller_without_images_renders_nothing():
    assert not all_of(render("prePuller.enabled=true", set_json=("config.image_map=[]",)),
                      "DaemonSet")


# ---------------------------------------------------------------------- everything


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_names_and_labels_are_valid(variant):
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    long_release = "a-very-long-release-name-that-goes-on-and-on"
    for release in (RELEASE, long_release):
        for doc in render(*VARIANTS[variant], release=release):
            name = doc["metadata"]["name"]
            assert dns_label.match(name), name
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == release
