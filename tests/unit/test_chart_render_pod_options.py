"""The webhook pods' placement and hardening as values (Gatekeeper/Kyverno/cert-manager
parity): topologySpreadConstraints, overridable pod and container securityContext
(OpenShift assigns UIDs), and an optional NetworkPolicy."""

from __future__ import annotations

import json
from typing import Any

from chart_rendering import RELEASE, all_of, one, render, webhook_container

SELECTOR = {"app.kubernetes.io/name": "gpushift", "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "webhook"}
ZONE = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway"}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(docs, "Deployment")["spec"]["template"]["spec"])


def test_no_spread_constraints_by_default_and_given_ones_get_the_webhook_selector():
    assert "topologySpreadConstraints" not in pod_spec(render())
    own = {**ZONE, "topologyKey": "kubernetes.io/hostname",
           "labelSelector": {"matchLabels": {"team": "platform"}}}
    docs = render(set_json=(f"topologySpreadConstraints=[{_json(ZONE)},{_json(own)}]",))
    zone, host = pod_spec(docs)["topologySpreadConstraints"]
    assert zone == {**ZONE, "labelSelector": {"matchLabels": SELECTOR}}
    assert host == own  # a selector of its own is kept


def test_the_hardened_security_contexts_are_the_default():
    docs = render()
    assert pod_spec(docs)["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert webhook_container(docs)["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def test_security_contexts_without_fixed_ids_for_openshift():
    pod = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                 "capabilities": {"drop": ["ALL"]}}
    docs = render(set_json=(f"podSecurityContext={_json(pod)}",
                            f"containerSecurityContext={_json(container)}"))
    assert pod_spec(docs)["securityContext"] == pod
    assert webhook_container(docs)["securityContext"] == container


def test_the_network_policy_lets_in_the_webhook_port_and_out_dns_and_the_api():
    assert all_of(render(), "NetworkPolicy") == []
    policy = one(render("networkPolicy.enabled=true"), "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]
    dns, api = policy["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert api == {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
    # The container listens where the policy lets in.
    ports = webhook_container(render())["ports"]
    assert [p["containerPort"] for p in ports] == [8443]


def test_the_network_policy_narrowed_and_extended():
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    proxy = {"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}], "ports": [{"port": 3128}]}
    policy = one(render("networkPolicy.enabled=true", set_json=(
        f"networkPolicy.ingressFrom=[{_json(peer)}]",
        f"networkPolicy.extraEgress=[{_json(proxy)}]",
        "networkPolicy.apiServerPorts=[8443]")), "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == [peer]
    assert policy["egress"][1] == {"ports": [{"protocol": "TCP", "port": 8443}]}
    assert policy["egress"][2] == proxy
    # No webhook Deployment (the local demo's webhook runs outside): no policy either.
    assert all_of(render("networkPolicy.enabled=true", "webhook.deploy=false",
                         "webhook.urlOverride=https://127.0.0.1:9443/mutate",
                         "webhook.caBundle=Zm9v"), "NetworkPolicy") == []


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
