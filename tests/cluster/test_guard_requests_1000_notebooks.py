"""The guard's requests with 1,000 Notebooks, counted by the API server itself.

A control plane of its own without the notebook-controller (the Notebooks are data
here: 1,000 of them, stopped as the culler leaves most notebooks of a big cluster, in 4
opted-in namespaces). One `gpushift-webhook serve --guard` at a 1 s interval for 30 s,
counted by `apiserver_request_total`: with the chart's webhook RBAC (the Notebook
watch) and with that RBAC, `watch` taken out (one paged list from the watch cache per
interval, shared by the guard and the server types). Printed per minute.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpushift_testing import controlplane as cpmod
from guard_processes import running_guards
from kubernetes import client
from test_notebook_watch_cluster import delta

from gpushift_core.labels import ENABLED_LABEL, KUBEFLOW_STOPPED_ANNOTATION

COUNT, NAMESPACES, WINDOW = 1000, 4, 15


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cpmod.ControlPlane]:
    if cpmod.missing_binaries():
        pytest.fail(f"control plane binaries missing: {cpmod.missing_binaries()}")
    plane = cpmod.ControlPlane(tmp_path_factory.mktemp("load-plane"), notebook_controller=False)
    try:
        plane.start()
    except cpmod.ControlPlaneError as e:
        pytest.fail(f"control plane did not start: {e}\n{plane.logs_tail(30)}")
    try:
        yield plane
    finally:
        plane.stop()


def requests(plane: cpmod.ControlPlane) -> dict[str, float]:
    """apiserver_request_total by resource and verb ("notebooks LIST")."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(plane.ca_file))
    request = urllib.request.Request(f"{plane.server}/metrics",
                                     headers={"Authorization": f"Bearer {plane.token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            resource = line.split('resource="', 1)[1].split('"', 1)[0]
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            key = f"{resource} {verb}"
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def per_minute(counts: dict[str, int]) -> dict[str, float]:
    return {k: round(v * 60 / WINDOW, 1) for k, v in sorted(counts.items())}


def create_notebooks(plane: cpmod.ControlPlane) -> None:
    api = plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    jobs = []
    for n in range(NAMESPACES):
        ns = f"load-{n}"
        core.create_namespace({"metadata": {"name": ns, "labels": {ENABLED_LABEL: "true"}}})
        jobs += [(ns, f"nb-{i}") for i in range(COUNT // NAMESPACES)]

    def create(job: tuple[str, str]) -> None:
        ns, name = job
        custom.create_namespaced_custom_object("kubeflow.org", "v1", ns, "notebooks", {
            "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
            "metadata": {"name": name, "annotations": {
                KUBEFLOW_STOPPED_ANNOTATION: "2026-01-01T00:00:00Z"}},
            "spec": {"template": {"spec": {"containers": [{
                "name": name, "image": "kubeflownotebookswg/jupyter-scipy:v1.9.2"}]}}}})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, jobs))
    listed = custom.list_cluster_custom_object("kubeflow.org", "v1", "notebooks")
    assert len(listed["items"]) == COUNT


def measure(plane: cpmod.ControlPlane) -> dict[str, int]:
    time.sleep(8)  # started, listed, leading (a 6 s Lease)
    before = requests(plane)
    time.sleep(WINDOW)
    return delta(requests(plane), before)


def test_guard_requests_with_1000_notebooks(control_plane: cpmod.ControlPlane,
                                            tmp_path: Path) -> None:
    t0 = time.monotonic()
    create_notebooks(control_plane)
    print(f"\n{COUNT} Notebooks created in {time.monotonic() - t0:.0f} s")
    with running_guards(control_plane, tmp_path / "watching", ["watching"],
                        release="loadwatch", lease="loadwatch-gpushift-guard",
                        namespace_prefix="load-watch", ready_timeout=10, image_map=[],
                        lease_duration=6, renew=1):
        with_watch = measure(control_plane)
    with running_guards(control_plane, tmp_path / "polling", ["polling"], release="loadtest",
                        lease="loadtest-gpushift-guard", namespace_prefix="load-guard",
                        ready_timeout=10, image_map=[], lease_duration=6,
                        renew=1, without_watch=True) as guards:
        polling = measure(control_plane)
        log = guards.procs["polling"].log.read_text()
    print(f"requests per minute, {COUNT} Notebooks, guard interval 1 s:\n"
          f"  with the watch: {per_minute(with_watch)}\n"
          f"  list only (the chart's RBAC without watch): {per_minute(polling)}")
    assert "Notebook watch forbidden" in log
    assert with_watch.get("notebooks LIST", 0) == 0, with_watch
    assert polling.get("notebooks LIST", 0) >= WINDOW * 0.7, polling
    # Stopped Notebooks cost no pod read.
    assert with_watch.get("pods GET", 0) == 0 and polling.get("pods GET", 0) == 0
