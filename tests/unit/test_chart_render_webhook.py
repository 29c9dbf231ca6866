"""The webhook's objects in the rendered chart: the Deployment (defaults, probes,
hardening, mounts, cert-manager mode, anti-affinity), its arguments as the webhook's own
CLI parses them (certificates, the migration guard and its Lease), the Service, PDB and
metrics extras, and the MutatingWebhookConfiguration (fields, namespace selectors, URL
override, CA bundle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_rendering import (
    CHART,
    HARDENED,
    NAMESPACE,
    RELEASE,
    VARIANTS,
    all_of,
    app_version,
    chart_values,
    mutating_webhook,
    one,
    pod_specs,
    render,
    run_helm,
    webhook_container,
)

from gpushift_webhook import cli

# --------------------------------------------------------------------- Deployment


def test_deployment_defaults():
    docs = render()
    deploy = one(docs, "Deployment", f"{RELEASE}-webhook")
    assert deploy["metadata"]["namespace"] == NAMESPACE
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount",
                                            f"{RELEASE}-webhook")["metadata"]["name"]
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
    role = one(docs, "Role", f"{fullname}-webhook")
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
    role = one(docs, "Role", f"{fullname}-webhook")
    named = [r for r in role["rules"] if "leases" in r["resources"] and "resourceNames" in r]
    assert named and all(r["resourceNames"] == [args.guard_lease_name] for r in named)
    assert {"get", "update"} <= {v for r in named for v in r["verbs"]}


@pytest.mark.parametrize("release", [RELEASE, "team"])
def test_capacity_is_published_into_the_config_map_its_role_names(release, tmp_path,
                                                                  monkeypatch):
    docs = render(release=release, set_json=("capacity.intervalSeconds=12",))
    fullname = release if "gpushift" in release else f"{release}-gpushift"
    config, args = _run_cli(docs, tmp_path, monkeypatch)
    assert args.capacity is True and args.capacity_interval == 12
    settings = args.capacity_settings
    assert (settings.namespace, settings.name) == (NAMESPACE, f"{fullname}-gpu-capacity")
    assert settings.interval_seconds == 12 and settings.refresh_seconds == 300
    # Every sidecar is told where it is.
    assert config.capacity_configmap == f"{NAMESPACE}/{fullname}-gpu-capacity"
    assert config.admin_settings().to_json()["capacity_configmap"] == config.capacity_configmap
    role = one(docs, "Role", f"{fullname}-webhook")
    named = [r for r in role["rules"] if "configmaps" in r["resources"] and "resourceNames" in r]
    assert named and all(r["resourceNames"] == [settings.name] for r in named)


def test_capacity_off(tmp_path, monkeypatch):
    config, args = _run_cli(render("capacity.enabled=false"), tmp_path, monkeypatch)
    assert args.capacity is False and config.capacity_configmap == ""
    assert "capacity_configmap" not in config.admin_settings().to_json()


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


@pytest.mark.parametrize("mode", ["opt-in", "cluster-wide"])
def test_the_guard_acts_in_the_namespaces_the_webhook_configuration_selects(
        mode, tmp_path, monkeypatch):
    """The guard gets the chart's enablement.mode, the one its namespaceSelector uses."""
    docs = render(f"enablement.mode={mode}")
    _, args = _run_cli(docs, tmp_path, monkeypatch)
    assert args.enablement_mode == mode
    exprs = {e["key"]: e for e in mutating_webhook(docs)["namespaceSelector"][
        "matchExpressions"]}
    assert exprs["gpushift.io/enabled"]["operator"] == (
        "In" if mode == "opt-in" else "NotIn")


def test_the_webhook_pods_get_no_istio_proxy():
    """As Kubeflow's own admission webhook: the API server calls it directly."""
    for variant in ((), ("certs.mode=certManager",), ("metrics.scrapeAnnotations=true",)):
        meta = one(render(*variant), "Deployment")["spec"]["template"]["metadata"]
        assert meta["annotations"]["sidecar.istio.io/inject"] == "false", variant


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


def test_opted_out_pods_are_kept_from_the_webhook_where_the_api_server_can():
    """Kubernetes 1.28+: a match condition keeps pods annotated gpushift.io/inject=false
    from the webhook (`test_webhook_cluster` shows the API server applies it); older API
    servers would refuse the field, and the webhook checks the annotation itself."""
    (condition,) = mutating_webhook(render(kube_version="1.36.0"))["matchConditions"]
    assert condition["name"] == "not-opted-out"
    assert "object.metadata.annotations['gpushift.io/inject'].lowerAscii() != 'false'" in (
        condition["expression"])
    assert "matchConditions" in mutating_webhook(render(kube_version="1.28.0"))
    assert "matchConditions" not in mutating_webhook(render(kube_version="1.27.9"))


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
