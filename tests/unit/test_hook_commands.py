"""The chart hooks' subcommands of `gpushift-webhook` without an API server: the
injection probe's pod and verdict (pure), and bad input answered with a message and an
exit status, never a traceback. Against a real API server:
tests/cluster/test_chart_hooks_cluster.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonpatch
import pytest

from gpushift_core import labels
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.injection import Outcome, plan_injection
from gpushift_webhook.injection_probe import probe_pod, verdict

WEBHOOK = str(Path(sys.executable).parent / "gpushift-webhook")


def test_the_probe_pod_is_one_the_webhook_injects():
    pod = probe_pod("img")
    decision = plan_injection(pod, "team-a", WebhookConfig())
    assert decision.outcome is Outcome.INJECTED, decision.reason
    injected = jsonpatch.apply_patch(pod, decision.operations)
    assert verdict(injected, "team-a", WebhookConfig().sidecar.name) is None


def test_a_pod_without_the_sidecar_fails_with_what_is_missing():
    message = verdict(probe_pod("img"), "team-a", "gpushift-sidecar")
    assert message is not None
    assert "namespace team-a" in message
    assert "no container 'gpushift-sidecar'" in message
    assert f"no {labels.INJECTED_ANNOTATION} annotation" in message


def test_a_sidecar_without_the_annotation_is_not_enough():
    pod = probe_pod("img")
    pod["spec"]["initContainers"] = [{"name": "gpushift-sidecar"}]
    message = verdict(pod, "ns", "gpushift-sidecar")
    assert message is not None and "no container" not in message


@pytest.mark.parametrize(("args", "status", "says"), [
    (["probe-injection"], 2, "probe-injection needs --namespace"),
    (["uninstall-cleanup", "--namespace", "x"], 2, "--webhook-configuration"),
    (["probe-injection", "--namespace", "x", "--kubeconfig", "/nonexistent/kubeconfig"], 1,
     "cannot configure the Kubernetes client"),
])
def test_bad_input_is_a_message_not_a_traceback(args, status, says, tmp_path):
    proc = subprocess.run([WEBHOOK, *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == status, proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
