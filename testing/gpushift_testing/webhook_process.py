"""The webhook as a local process registered in a local control plane (tests and demo).

The chart is installed with real helm, with the Deployment left out and the webhook
configuration's clientConfig pointed at this process (`webhook.urlOverride`); the
process runs in self-managed certificate mode, so the caBundle is its own doing.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from gpushift_testing.binaries import binary_paths
from gpushift_testing.common import free_port
from gpushift_testing.kube import wait_for
from gpushift_testing.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "gpushift"
NAMESPACE = "gpushift-system"
RELEASE = "gpushift"


@dataclass
class LocalWebhook:
    """`gpushift-webhook serve --self-managed-certs` on 127.0.0.1, against `kubeconfig`."""

    kubeconfig: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    @property
    def log(self) -> Path:
        return self.workdir / "webhook.log"

    def start(self, *extra: str) -> LocalWebhook:
        self.stop()
        self.args = extra
        cert_dir = self.workdir / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        argv = [str(Path(sys.executable).parent / "gpushift-webhook"), "serve",
                "--host", "127.0.0.1", "--port", str(self.port), "--cert-dir", str(cert_dir),
                "--namespace", NAMESPACE, "--self-managed-certs", "--ip-san", "127.0.0.1",
                "--webhook-configuration", RELEASE, "--kubeconfig", str(self.kubeconfig),
                "--cert-interval", "1", "--reload-interval", "0.5", *extra]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def ready(self) -> bool:
        """GET /readyz, trusting the CA the process wrote next to its certificate."""
        context = ssl.create_default_context(cafile=str(self.workdir / "certs" / "ca.crt"))
        url = f"https://127.0.0.1:{self.port}/readyz"
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, ssl.SSLError):
            return False

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def helm(helm_bin: Path, kubeconfig: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run([str(helm_bin), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def install_chart(helm_bin: Path, kubeconfig: Path, webhook: LocalWebhook,
                  *sets: str, set_strings: tuple[str, ...] = ()) -> str:
    """helm upgrade --install of charts/gpushift pointing at the local webhook; `sets`
    and `set_strings` (values kept as strings, e.g. a label "true") go to helm."""
    values: list[str] = []
    for s in ("webhook.deploy=false", f"webhook.urlOverride={webhook.url}", *sets):
        values += ["--set", s]
    for s in set_strings:
        values += ["--set-string", s]
    return helm(helm_bin, kubeconfig, "upgrade", "--install", RELEASE, str(CHART),
                "--namespace", NAMESPACE, "--create-namespace", "--wait", "--timeout", "60s",
                *values)


def ca_bundle_published(admission_api: Any) -> bool:
    mwc = admission_api.read_mutating_webhook_configuration(RELEASE)
    return all(w.client_config.ca_bundle for w in mwc.webhooks or [])


def serve_local_webhook(kubeconfig: Path, api_client: Any, workdir: Path,
                        *extra: str, sets: tuple[str, ...] = (),
                        set_strings: tuple[str, ...] = ()) -> LocalWebhook:
    """The chart installed with real helm (with `sets`, `set_strings`: see
    `install_chart`) and the webhook started locally with `extra` arguments; returns
    once the apiserver holds its caBundle and it answers /readyz. The caller stops it
    (`LocalWebhook.stop`)."""
    helm_bin = binary_paths()["helm"]
    assert helm_bin.is_file(), f"helm missing: run hack/build-controlplane.sh helm ({helm_bin})"
    hook = LocalWebhook(kubeconfig, workdir)
    install_chart(helm_bin, kubeconfig, hook, *sets, set_strings=set_strings)
    hook.start(*extra)
    admission = client.AdmissionregistrationV1Api(api_client)
    wait_for("the webhook's caBundle in the MutatingWebhookConfiguration",
             lambda: ca_bundle_published(admission), 60, describe=hook.logs)
    wait_for("the webhook ready", hook.ready, 30, describe=hook.logs)
    return hook
