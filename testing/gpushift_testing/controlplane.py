"""A real local Kubernetes control plane for gpushift's cluster tests and demo.

Runs, as plain processes on 127.0.0.1 with ports picked at run time:

- etcd (Debian's etcd-server),
- kube-apiserver, kube-controller-manager, kube-scheduler (built from k8s.io/kubernetes),
- kwok, which plays the kubelets of fake nodes: 2 CPU nodes and GPU nodes that offer
  ``nvidia.com/gpu`` (tainted ``nvidia.com/gpu=present:NoSchedule``), and moves their pods
  to Running,
- Kubeflow's notebook-controller with the real Notebook CRD, when its binary is available.

The binaries come from ``hack/build-controlplane.sh`` (cache outside the repo, see
``hack/controlplane-versions.env``). Each process logs to ``<workdir>/logs/<name>.log``.

    cp = ControlPlane("/tmp/cp").start()
    api = cp.api_client()          # kubernetes.client.ApiClient, admin
    print(cp.kubeconfig)           # for kubectl / helm
    cp.stop()

CLI (demo): ``python -m gpushift_testing.controlplane up --workdir DIR``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"
VERSIONS_FILE = HACK / "controlplane-versions.env"
BUILD_SCRIPT = HACK / "build-controlplane.sh"

LOCALHOST = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says why."""


# --------------------------------------------------------------------------- binaries


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
    """Where each binary is expected (it may not exist yet)."""
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
        "notebook-controller": b / f"notebook-controller-{v['NOTEBOOK_CONTROLLER_REF']}",
    }
    override = os.environ.get("GPUSHIFT_NOTEBOOK_CONTROLLER")
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


def notebook_crd_path() -> Path:
    """The Notebook CRD: $GPUSHIFT_NOTEBOOK_CRD, else <repo>/../shared/kubeflow/..."""
    env = os.environ.get("GPUSHIFT_NOTEBOOK_CRD")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "kubeflow" / "kubeflow.org_notebooks.yaml"


# --------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Children get SIGTERM when the Python process that started them dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    os.setsid()


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except OSError as e:
        return [f"<cannot read {path}: {e}>"]
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_err: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as e:
            last_err = e
        else:
            if result:
                return result
        time.sleep(interval)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}: {last_err!r}")


# --------------------------------------------------------------------------- PKI


@dataclass
class _Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca: Path
    front_proxy_client_cert: Path
    front_proxy_client_key: Path


def _make_pki(d: Path) -> _Pki:
    """Cluster CA + apiserver serving cert, front-proxy CA + client, service-account key."""

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=3650)

    def write_key(k: ec.EllipticCurvePrivateKey, name: str) -> Path:
        path = d / name
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def write_cert(c: x509.Certificate, name: str) -> Path:
        path = d / name
        path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return path

    def usage(*, cert_sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=cert_sign,
            crl_sign=cert_sign,
            encipher_only=False,
            decipher_only=False,
        )

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def issue(
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
        cn: str,
        eku: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        ca_key, ca_cert = ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca = make_ca("gpushift-test-ca")
    srv_key, srv_cert = issue(
        ca,
        "kube-apiserver",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address(LOCALHOST)),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ],
    )
    fp_ca = make_ca("gpushift-test-front-proxy-ca")
    fp_key, fp_cert = issue(fp_ca, "front-proxy-client", ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    sa_pub = d / "sa.pub"
    sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return _Pki(
        ca_cert=write_cert(ca[1], "ca.crt"),
        ca_key=write_key(ca[0], "ca.key"),
        serving_cert=write_cert(srv_cert, "apiserver.crt"),
        serving_key=write_key(srv_key, "apiserver.key"),
        sa_key=write_key(sa_key, "sa.key"),
        sa_pub=sa_pub,
        front_proxy_ca=write_cert(fp_ca[1], "front-proxy-ca.crt"),
        front_proxy_client_cert=write_cert(fp_cert, "front-proxy-client.crt"),
        front_proxy_client_key=write_key(fp_key, "front-proxy-client.key"),
    )


# --------------------------------------------------------------------------- processes


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update(self.env)
        with self.log.open("ab") as logf:
            logf.write(f"### {' '.join(self.argv)}\n".encode())
            logf.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            tail = "\n".join(_tail(self.log, 30))
            raise ControlPlaneError(
                f"{self.name} exited with code {self.popen.returncode}; last log lines:\n{tail}"
            )


# --------------------------------------------------------------------------- control plane


@dataclass
class NodeSpec:
    name: str
    kind: str  # "cpu" or "gpu"
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok (+ notebook-controller).

    ``notebook_controller``: True requires it (start fails without the binary), False skips
    it, None (default) starts it when its binary exists; ``notebook_controller_reason``
    says why it is not running.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        cpu_nodes: int = 2,
        gpu_nodes: int = 1,
        gpus_per_node: int = 1,
        notebook_controller: bool | None = None,
        notebook_crd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.nodes = [
            NodeSpec(f"kwok-cpu-{i}", "cpu", cpu="4", memory="16Gi") for i in range(cpu_nodes)
        ]
        self.nodes += [
            NodeSpec(f"kwok-gpu-{i}", "gpu", gpus=gpus_per_node) for i in range(gpu_nodes)
        ]
        self.want_notebook_controller = notebook_controller
        self.notebook_crd = Path(notebook_crd) if notebook_crd else notebook_crd_path()
        self.notebook_controller_reason = "not started yet"
        self.bins = binary_paths()
        self.versions = read_versions()
        self.logdir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.token = ""
        self.server = ""
        self.ca_file = self.workdir / "pki" / "ca.crt"
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.procs: dict[str, _Proc] = {}
        self._stopped = False
        self._started = False
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- public API

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def notebook_controller_running(self) -> bool:
        p = self.procs.get("notebook-controller")
        return p is not None and p.alive()

    def start(self, timeout: float = 180.0) -> ControlPlane:
        """Start everything and wait until nodes are Ready; returns self."""
        if self._started:
            return self
        self._started = True
        missing = missing_binaries()
        if missing:
            raise ControlPlaneError(
                f"missing binaries {missing}; run {BUILD_SCRIPT} (expected in {bin_dir()})"
            )
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            self._start(t0, timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Terminate all processes (SIGTERM, then SIGKILL after `grace`). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        procs = [p for p in reversed(list(self.procs.values())) if p.alive()]
        for p in procs:
            assert p.popen is not None
            with contextlib.suppress(ProcessLookupError):
                p.popen.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            assert p.popen is not None
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.kill()
                p.popen.wait(5)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient authenticated as the admin (system:masters)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def logs_tail(self, lines: int = 40, names: Iterable[str] | None = None) -> str:
        """The last `lines` lines of each component's log, for printing on failure."""
        out = []
        for name, p in self.procs.items():
            if names is not None and name not in names:
                continue
            state = "running" if p.alive() else f"exited {p.popen.returncode if p.popen else '-'}"
            out.append(f"===== {name} ({state}) {p.log} =====")
            out.extend(_tail(p.log, lines))
        return "\n".join(out)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component, from /proc."""
        return {n: _rss_bytes(p.pid) for n, p in self.procs.items() if p.alive() and p.pid}

    def total_rss_bytes(self) -> int:
        return sum(self.rss_bytes().values())

    def check_alive(self) -> None:
        """Raise ControlPlaneError if a component has died."""
        for p in self.procs.values():
            p.check_alive()

    def summary(self) -> str:
        rss = self.rss_bytes()
        parts = [f"{n}={v / 2**20:.0f}MiB" for n, v in rss.items()]
        times = ", ".join(f"{k}={v:.1f}s" for k, v in self.timings.items())
        return (
            f"control plane at {self.server} (kubeconfig {self.kubeconfig})\n"
            f"  start: {times}\n"
            f"  RSS total {sum(rss.values()) / 2**20:.0f} MiB: {', '.join(parts)}\n"
            f"  notebook-controller: {self.notebook_controller_reason}"
        )

    # ----------------------------------------------------------------- startup

    def _phase(self, name: str, t0: float) -> None:
        self.timings[name] = time.monotonic() - t0

    def _start(self, t0: float, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = [
            "etcd-client",
            "etcd-peer",
            "apiserver",
            "controller-manager",
            "scheduler",
            "kwok",
            "nbc-metrics",
            "nbc-probe",
        ]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        pki = _make_pki(self.workdir / "pki")
        self.ca_file = pki.ca_cert
        self.server = f"https://{LOCALHOST}:{self.ports['apiserver']}"
        kubeconfigs = self._write_auth()
        self._phase("pki", t0)

        self._start_etcd()
        _wait("etcd /health", self._etcd_healthy, 30)
        self._phase("etcd", t0)

        self._start_apiserver(pki)
        _wait("kube-apiserver /readyz", self._apiserver_ready, 90, 0.25)
        self._phase("apiserver", t0)

        self._start_controller_manager(pki, kubeconfigs["controller-manager"])
        self._start_scheduler(kubeconfigs["scheduler"])
        self._start_kwok()

        api = self.api_client()
        core = client.CoreV1Api(api)
        self._install_notebook_crd(api)
        self._create_nodes(core)
        remaining = max(30.0, timeout - (time.monotonic() - t0))
        _wait("fake nodes Ready and untainted", lambda: self._nodes_ready(core), remaining, 0.3)
        self._phase("nodes", t0)
        _wait(
            "controller-manager and scheduler /healthz",
            lambda: self._healthz("controller-manager") and self._healthz("scheduler"),
            30,
        )
        _wait(
            "default ServiceAccount",
            lambda: core.read_namespaced_service_account("default", "default"),
            60,
            0.3,
        )
        self._phase("controllers", t0)

        self._maybe_start_notebook_controller(kubeconfigs["admin"])
        self._phase("notebook-controller", t0)
        self.check_alive()

    def _write_auth(self) -> dict[str, Path]:
        """Static token file and one kubeconfig per identity."""
        users = {
            "admin": ("admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", ""),
            "scheduler": ("system:kube-scheduler", ""),
        }
        tokens = {name: secrets.token_hex(24) for name in users}
        self.token = tokens["admin"]
        rows = []
        for name, (user, groups) in users.items():
            rows.append(
                f'{tokens[name]},{user},{user},"{groups}"'
                if groups
                else f"{tokens[name]},{user},{user}"
            )
        token_file = self.workdir / "pki" / "tokens.csv"
        token_file.write_text("\n".join(rows) + "\n")
        token_file.chmod(0o600)

        out = {}
        for name in users:
            path = self.kubeconfig if name == "admin" else self.workdir / f"{name}.kubeconfig"
            cfg = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gpushift-local",
                        "cluster": {
                            "server": self.server,
                            "certificate-authority": str(self.ca_file),
                        },
                    }
                ],
                "users": [{"name": name, "user": {"token": tokens[name]}}],
                "contexts": [
                    {
                        "name": "gpushift-local",
                        "context": {"cluster": "gpushift-local", "user": name},
                    }
                ],
                "current-context": "gpushift-local",
                "preferences": {},
            }
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            path.chmod(0o600)
            out[name] = path
        return out

    def _add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> _Proc:
        p = _Proc(name, argv, self.logdir / f"{name}.log", env or {})
        self.procs[name] = p
        p.start()
        return p

    def _start_etcd(self) -> None:
        c, peer = self.ports["etcd-client"], self.ports["etcd-peer"]
        self._add(
            "etcd",
            [
                str(self.bins["etcd"]),
                "--name=gpushift",
                f"--data-dir={self.workdir / 'etcd'}",
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
            ],
        )

    def _etcd_healthy(self) -> bool:
        self.procs["etcd"].check_alive()
        url = f"http://{LOCALHOST}:{self.ports['etcd-client']}/health"
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(json.loads(r.read()).get("health") == "true")

    def _start_apiserver(self, pki: _Pki) -> None:
        d = self.workdir / "apiserver"
        d.mkdir(exist_ok=True)
        self._add(
            "kube-apiserver",
            [
                str(self.bins["kube-apiserver"]),
                f"--etcd-servers=http://{LOCALHOST}:{self.ports['etcd-client']}",
                f"--bind-address={LOCALHOST}",
                f"--advertise-address={LOCALHOST}",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={d}",
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
                f"--token-auth-file={self.workdir / 'pki' / 'tokens.csv'}",
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
            ],
        )

    def _urlopen_api(self, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(  # noqa: S310
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=3, context=ctx) as r:  # noqa: S310
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _apiserver_ready(self) -> bool:
        self.procs["kube-apiserver"].check_alive()
        status, _ = self._urlopen_api("/readyz")
        return status == 200

    def _healthz(self, name: str) -> bool:
        proc = self.procs["kube-" + name]
        proc.check_alive()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving certs of the components
        url = f"https://{LOCALHOST}:{self.ports[name]}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            return bool(r.status == 200)

    def _start_controller_manager(self, pki: _Pki, kubeconfig: Path) -> None:
        d = self.workdir / "controller-manager"
        d.mkdir(exist_ok=True)
        self._add(
            "kube-controller-manager",
            [
                str(self.bins["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOCALHOST}",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={d}",
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
            ],
        )

    def _start_scheduler(self, kubeconfig: Path) -> None:
        d = self.workdir / "scheduler"
        d.mkdir(exist_ok=True)
        self._add(
            "kube-scheduler",
            [
                str(self.bins["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOCALHOST}",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={d}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_kwok(self) -> None:
        home = self.workdir / "kwok-home"  # kwok also reads ~/.kwok/kwok.yaml: keep it empty
        home.mkdir(exist_ok=True)
        key, value = KWOK_NODE_ANNOTATION
        self._add(
            "kwok",
            [
                str(self.bins["kwok"]),
                f"--config={self.bins['kwok-stages']}",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={LOCALHOST}",
                f"--server-address={LOCALHOST}:{self.ports['kwok']}",
                "--node-lease-duration-seconds=40",
            ],
            env={"HOME": str(home)},
        )

    def _node_body(self, n: NodeSpec) -> dict[str, Any]:
        key, value = KWOK_NODE_ANNOTATION
        labels = {
            "kubernetes.io/hostname": n.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            "gpushift.io/node-kind": n.kind,
        }
        capacity = {"cpu": n.cpu, "memory": n.memory, "pods": "110", "ephemeral-storage": "100Gi"}
        taints = []
        if n.gpus:
            labels["nvidia.com/gpu.present"] = "true"
            labels["nvidia.com/gpu.count"] = str(n.gpus)
            capacity[GPU_RESOURCE] = str(n.gpus)
            taints.append(dict(GPU_TAINT))
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n.name,
                "labels": labels,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": taints} if taints else {},
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }

    def _create_nodes(self, core: Any) -> None:
        for n in self.nodes:
            core.create_node(self._node_body(n))

    def _nodes_ready(self, core: Any) -> bool:
        self.procs["kwok"].check_alive()
        self.procs["kube-controller-manager"].check_alive()
        names = {n.name for n in self.nodes}
        ready = set()
        for node in core.list_node().items:
            conds = {c.type: c.status for c in (node.status.conditions or [])}
            taints = {t.key for t in (node.spec.taints or [])}
            if conds.get("Ready") == "True" and not any(
                t.startswith("node.kubernetes.io/") for t in taints
            ):
                ready.add(node.metadata.name)
        return names <= ready

    def _install_notebook_crd(self, api: Any) -> None:
        """Create the Notebook CRD (too big for client-side apply) and wait until Established."""
        if not self.notebook_crd.is_file():
            self.notebook_crd_installed = False
            self.notebook_controller_reason = f"Notebook CRD not found at {self.notebook_crd}"
            return
        body = yaml.safe_load(self.notebook_crd.read_text())
        ext = client.ApiextensionsV1Api(api)
        ext.create_custom_resource_definition(body)
        name = body["metadata"]["name"]

        def established() -> bool:
            crd = ext.read_custom_resource_definition(name)
            return any(
                c.type == "Established" and c.status == "True"
                for c in ((crd.status.conditions if crd.status else None) or [])
            )

        _wait(f"CRD {name} Established", established, 30)
        self.notebook_crd_installed = True

    def _maybe_start_notebook_controller(self, kubeconfig: Path) -> None:
        path = self.bins["notebook-controller"]
        want = self.want_notebook_controller
        if want is False:
            self.notebook_controller_reason = "disabled"
            return
        problem = ""
        if not getattr(self, "notebook_crd_installed", False):
            problem = self.notebook_controller_reason
        elif not path.is_file():
            problem = (
                f"notebook-controller binary not found at {path} (build it with "
                f"{BUILD_SCRIPT} notebook-controller, or set GPUSHIFT_NOTEBOOK_CONTROLLER)"
            )
        if problem:
            self.notebook_controller_reason = problem
            if want:
                raise ControlPlaneError(problem)
            return
        self._add(
            "notebook-controller",
            [
                str(path),
                f"--kubeconfig={kubeconfig}",
                f"--metrics-addr={LOCALHOST}:{self.ports['nbc-metrics']}",
                f"--probe-addr={LOCALHOST}:{self.ports['nbc-probe']}",
                "--enable-leader-election=false",
            ],
            env={
                "USE_ISTIO": "false",
                "ENABLE_CULLING": "false",
                "CLUSTER_DOMAIN": "cluster.local",
            },
        )

        def ready() -> bool:
            self.procs["notebook-controller"].check_alive()
            url = f"http://{LOCALHOST}:{self.ports['nbc-probe']}/readyz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)

        _wait("notebook-controller /readyz", ready, 60)
        self.notebook_controller_reason = f"running ({path})"


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gpushift_testing.controlplane",
        description="Local Kubernetes control plane (etcd, apiserver, controllers, kwok nodes).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start it and wait for Ctrl-C")
    up.add_argument("--workdir", required=True, help="directory for certs, etcd data, logs")
    up.add_argument("--gpu-nodes", type=int, default=1)
    up.add_argument("--gpus-per-node", type=int, default=1)
    up.add_argument("--cpu-nodes", type=int, default=2)
    up.add_argument("--no-build", action="store_true", help="fail instead of building")
    up.add_argument(
        "--no-notebook-controller", action="store_true", help="do not start the notebook-controller"
    )
    sub.add_parser("build", help="run hack/build-controlplane.sh")
    sub.add_parser("paths", help="print where the binaries are expected")
    args = ap.parse_args(argv)

    if args.cmd == "build":
        return build(check=False).returncode
    if args.cmd == "paths":
        for name, p in binary_paths().items():
            print(f"{name:24} {p} {'' if p.is_file() else '(missing)'}")
        return 0

    if missing_binaries() and not args.no_build:
        print("building missing binaries (hack/build-controlplane.sh) ...", file=sys.stderr)
        build()
    cp = ControlPlane(
        args.workdir,
        cpu_nodes=args.cpu_nodes,
        gpu_nodes=args.gpu_nodes,
        gpus_per_node=args.gpus_per_node,
        notebook_controller=False if args.no_notebook_controller else None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        cp.start()
        print(cp.summary(), flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"kubectl: {cp.bins['kubectl']}  helm: {cp.bins['helm']}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(2):
            cp.check_alive()
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as e:
        print(f"error: {e}\n{cp.logs_tail(20)}", file=sys.stderr)
        return 1
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
