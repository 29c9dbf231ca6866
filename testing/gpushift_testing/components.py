"""Command lines and health checks of etcd, kube-apiserver, controller-manager, scheduler, kwok."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from gpushift_testing.common import KWOK_NODE_ANNOTATION, LOCALHOST, POD_CIDR, SERVICE_CIDR
from gpushift_testing.pki import Pki

# the ports picked at start, by name
PORT_NAMES = (
    "etcd-client",
    "etcd-peer",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kwok",
    "nbc-metrics",
    "nbc-probe",
)


def etcd_argv(binary: Path, data_dir: Path, ports: dict[str, int]) -> list[str]:
    c, peer = ports["etcd-client"], ports["etcd-peer"]
    return [
        str(binary),
        "--name=gpushift",
        f"--data-dir={data_dir}",
        f"--listen-client-urls=http://{LOCALHOST}:{c}",
        f"--advertise-client-urls=http://{LOCALHOST}:{c}",
        f"--listen-peer-urls=http://{LOCALHOST}:{peer}",
        f"--initial-advertise-peer-urls=http://{LOCALHOST}:{peer}",
        f"--initial-cluster=gpushift=http://{LOCALHOST}:{peer}",
        "--initial-cluster-state=new",
        "--quota-backend-bytes=2147483648",
        "--snapshot-count=10000",
        "--unsafe-no-fsync",  # throwaway test data: skip fsync, much faster on slow disks
        "--logger=zap",
        "--log-level=warn",
    ]


def etcd_healthy(ports: dict[str, int]) -> bool:
    url = f"http://{LOCALHOST}:{ports['etcd-client']}/health"
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(json.loads(r.read()).get("health") == "true")


def apiserver_argv(
    binary: Path, cert_dir: Path, ports: dict[str, int], pki: Pki, token_file: Path
) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://{LOCALHOST}:{ports['etcd-client']}",
        f"--bind-address={LOCALHOST}",
        f"--advertise-address={LOCALHOST}",
        f"--secure-port={ports['apiserver']}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
        f"--token-auth-file={token_file}",
        "--authorization-mode=Node,RBAC",
        "--endpoint-reconciler-type=none",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # the default plugins (incl. MutatingAdmissionWebhook) plus these:
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def api_get(server: str, ca_file: Path, token: str, path: str) -> tuple[int, bytes]:
    """GET `path` from the apiserver as the holder of `token`: (status, body)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    req = urllib.request.Request(server + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def healthz(port: int) -> bool:
    """GET https://127.0.0.1:<port>/healthz of a component with a self-signed serving cert."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed serving certs of the components
    url = f"https://{LOCALHOST}:{port}/healthz"
    with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
        return bool(r.status == 200)


def controller_manager_argv(
    binary: Path, cert_dir: Path, ports: dict[str, int], pki: Pki, kubeconfig: Path
) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOCALHOST}",
        f"--secure-port={ports['controller-manager']}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        "--controllers=*",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allocate-node-cidrs=false",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(
    binary: Path, cert_dir: Path, ports: dict[str, int], kubeconfig: Path
) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOCALHOST}",
        f"--secure-port={ports['scheduler']}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def kwok_argv(binary: Path, stages: Path, ports: dict[str, int], kubeconfig: Path) -> list[str]:
    key, value = KWOK_NODE_ANNOTATION
    return [
        str(binary),
        f"--config={stages}",
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        f"--cidr={POD_CIDR}",
        f"--node-ip={LOCALHOST}",
        f"--server-address={LOCALHOST}:{ports['kwok']}",
        "--node-lease-duration-seconds=40",
    ]
