"""Fixtures for tests against a real local control plane (testing/gpushift_testing).

The binaries are built on first use by hack/build-controlplane.sh into
${GPUSHIFT_CACHE:-~/.cache/gpushift} (a cold build takes minutes). Notebooks are
reconciled by Kubeflow's notebook-controller, built from ../shared/kubeflow/notebook-controller
($GPUSHIFT_NOTEBOOK_CONTROLLER names another binary); the summary at the end of the run
says what ran.

Also here: the fixtures the Helm chart's modules (test_chart_cluster_*.py) share, `tools`
and `kube`.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT / "testing") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "testing"))

from chart_tools import Tools  # noqa: E402
from gpushift_testing import access, sidecar_process  # noqa: E402
from gpushift_testing import controlplane as cpmod  # noqa: E402
from gpushift_testing.kube import delete_namespaces, wait_for  # noqa: E402
from gpushift_testing.pki import write_kubeconfig  # noqa: E402
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess  # noqa: E402

_PLANE: cpmod.ControlPlane | None = None
_SUMMARY: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cpmod.ControlPlane]:
    global _PLANE  # noqa: PLW0603
    missing = cpmod.missing_binaries()
    if missing:
        t = time.monotonic()
        print(f"\nbuilding control plane binaries {missing} (cold: several minutes) ...")
        proc = cpmod.build(check=False)
        print(proc.stdout)
        if cpmod.missing_binaries():
            pytest.fail(
                f"hack/build-controlplane.sh did not produce {cpmod.missing_binaries()} "
                f"(exit {proc.returncode}):\n{proc.stdout}"
            )
        print(f"built in {time.monotonic() - t:.0f}s")
    plane = cpmod.ControlPlane(tmp_path_factory.mktemp("controlplane"))
    _PLANE = plane
    try:
        plane.start()
    except cpmod.ControlPlaneError as e:
        pytest.fail(f"control plane did not start: {e}\n{plane.logs_tail(30)}")
    _SUMMARY.append(plane.summary())
    try:
        yield plane
    finally:
        _SUMMARY.append(f"  RSS total after the tests: {plane.total_rss_bytes() / 2**20:.0f} MiB")
        plane.stop()
        _PLANE = None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARY:
        terminalreporter.write_sep("-", "local control plane")
    for line in _SUMMARY:
        terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Attach the components' log tails to the report of a failed test that used them."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _PLANE is not None and "control_plane" in getattr(item, "fixturenames", ()):
        rep.sections.append(("control plane component logs (tail)", _PLANE.logs_tail(40)))


@pytest.fixture
def core(control_plane: cpmod.ControlPlane) -> Iterator[Any]:
    from kubernetes import client

    api = control_plane.api_client()
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


@pytest.fixture
def custom(control_plane: cpmod.ControlPlane) -> Iterator[Any]:
    from kubernetes import client

    api = control_plane.api_client()
    try:
        yield client.CustomObjectsApi(api)
    finally:
        api.close()


@pytest.fixture
def apps(control_plane: cpmod.ControlPlane) -> Iterator[Any]:
    from kubernetes import client

    api = control_plane.api_client()
    try:
        yield client.AppsV1Api(api)
    finally:
        api.close()


@pytest.fixture
def admin(control_plane: cpmod.ControlPlane) -> Iterator[Any]:
    """The admin's API groups on one client: core, custom, apps, rbac, coordination, raw."""
    from kubernetes import client

    api = control_plane.api_client()
    yield type("Admin", (), {"core": client.CoreV1Api(api),
                             "custom": client.CustomObjectsApi(api),
                             "apps": client.AppsV1Api(api),
                             "rbac": client.RbacAuthorizationV1Api(api),
                             "coordination": client.CoordinationV1Api(api),
                             "raw": api})
    api.close()


@pytest.fixture
def sidecar_kubeconfig(control_plane: cpmod.ControlPlane, admin: Any, namespace: str,
                       tmp_path: Path) -> Callable[[str], Path]:
    """make(server) -> a kubeconfig of `default-editor`, bound to Kubeflow's kubeflow-edit
    with the chart's sidecar ClusterRole aggregated into it, as in a profile namespace."""
    # A bound token, as the kubelet projects into the pod (and the webhook into the sidecar).
    token = access.profile_editor_token(admin.core, admin.rbac, namespace)

    def make(server: str = control_plane.server) -> Path:
        name = f"kubeconfig-{len(list(tmp_path.glob('kubeconfig-*')))}"
        return write_kubeconfig(tmp_path / name, server, control_plane.ca_file, token,
                                       access.EDITOR_SA)

    return make


@pytest.fixture
def sidecar_args() -> list[str]:
    """Arguments of `gpushift-sidecar serve` besides --kubeconfig (a module may override)."""
    return []


@pytest.fixture
def start_sidecar(tmp_path: Path, namespace: str, sidecar_kubeconfig: Callable[..., Path],
                  control_plane: cpmod.ControlPlane, sidecar_settings: Any,
                  sidecar_args: list[str]) -> Iterator[Callable[..., SidecarProcess]]:
    """start(pod facts, workspace, runtime) -> the real sidecar process of that pod, with
    the webhook's env (`sidecar_settings`, a WebhookConfig the module provides); killed
    at the end of the test."""
    kubeconfig = sidecar_kubeconfig(control_plane.server)
    started: list[SidecarProcess] = []

    def start(pod: PodFacts, workspace: Path, runtime: str,
              checkpoint_timeout: float = 10) -> SidecarProcess:
        sidecar = sidecar_process.start_sidecar(
            kubeconfig, namespace, pod, workspace, tmp_path / runtime,
            sidecar_process.log_path(tmp_path, runtime), sidecar_settings.sidecar_settings_json,
            args=["--checkpoint-timeout", str(checkpoint_timeout), *sidecar_args],
            tmpdir=tmp_path)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop(signal.SIGKILL)


@pytest.fixture
def namespace(
    control_plane: cpmod.ControlPlane, core: Any, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount) per test, deleted afterwards."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gpushift.io/test": "true"}}})
    # Pods are refused until the controller-manager has made the default ServiceAccount.
    wait_for(
        f"ServiceAccount {name}/default",
        lambda: core.read_namespaced_service_account("default", name),
        timeout=60,
    )
    try:
        yield name
    finally:
        delete_namespaces(core, [name])


# ---------------------------------------------------------- the chart (test_chart_cluster_*)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """helm and kubectl, with their state in a folder of this module's."""
    return Tools(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def kube(control_plane: cpmod.ControlPlane, tools: Tools,
         chart_namespaces: dict[str, dict[str, str]]) -> Iterator[Any]:
    """API clients (admin) of the control plane, and the namespaces this module uses:
    `chart_namespaces` ({name: labels}), which each module that uses `kube` defines. The
    modules' namespaces differ: one module's may still be terminating when the next runs."""
    from kubernetes import client

    api = control_plane.api_client()
    tools.kubeconfig = control_plane.kubeconfig
    apis = type("Apis", (), {
        "raw": api,
        "core": client.CoreV1Api(api),
        "apps": client.AppsV1Api(api),
        "policy": client.PolicyV1Api(api),
        "rbac": client.RbacAuthorizationV1Api(api),
        "admission": client.AdmissionregistrationV1Api(api),
        "authz": client.AuthorizationV1Api(api),
    })
    created = []
    for ns, labels in chart_namespaces.items():
        body = {"metadata": {"name": ns, "labels": {"gpushift.io/test": "true", **labels}}}
        apis.core.create_namespace(body)
        created.append(ns)
    try:
        yield apis
    finally:
        delete_namespaces(apis.core, created)
        api.close()
