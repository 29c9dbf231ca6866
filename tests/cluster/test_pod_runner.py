"""The local pod runner (test harness) against the real control plane: a Notebook in an
opted-in namespace is injected by the real webhook (chart installed by helm), scheduled
on a kwok node, and its sidecar and JupyterLab run as local processes behind the
notebook proxy; a patch moves it to the kwok GPU node; deleting it stops everything.

The first tests plan pods without a cluster (pure), to pin down the rules."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_webhook_cluster as webhook_cluster
from gpushift_testing import access, demo_setup
from gpushift_testing.kube import wait_for
from gpushift_testing.notebook_proxy import NotebookProxy, Routes
from gpushift_testing.pod_processes import process_family, running
from gpushift_testing.pod_runner import PodRunner
from gpushift_testing.pod_spec import FAKE_GPU_ENV, Layout, NodeFacts, plan_pod
from gpushift_testing.workloads import delete_volumes, node_kind

from gpushift_core.move_plan import plan_move
from gpushift_webhook.config import WebhookConfig

gpushift = webhook_cluster.gpushift  # the chart installed by helm, the webhook local
NB = demo_setup.NOTEBOOK_API
SIDECAR = "gpushift-sidecar"


# ----------------------------------------------------------------------------- pure plans


def injected_pod(command: list[str] | None) -> dict[str, Any]:
    notebook: dict[str, Any] = {
        "name": "nb", "image": "kubeflownotebookswg/jupyter-scipy:v1.9.2",
        "env": [{"name": "NB_PREFIX", "value": "/notebook/ns/nb"},
                {"name": "GPUSHIFT_RUNTIME_DIR", "value": "/var/run/gpushift"},
                {"name": "GPUSHIFT_SIDECAR_URL", "value": "http://127.0.0.1:8765"}],
        "ports": [{"containerPort": 8888}],
        "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"},
                         {"name": "gpushift-runtime", "mountPath": "/var/run/gpushift"}],
        "workingDir": "/home/jovyan"}
    if command:
        notebook["command"] = command
    sidecar = {
        "name": SIDECAR, "image": "gpushift/sidecar:0.1.0", "restartPolicy": "Always",
        "args": ["serve", "--port", "8765"],
        "env": [{"name": "GPUSHIFT_POD_NAME", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.name"}}},
                {"name": "GPUSHIFT_NODE_NAME", "valueFrom": {"fieldRef": {
                    "fieldPath": "spec.nodeName"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GPUSHIFT_API_PORT", "value": "8765"},
                {"name": "GPUSHIFT_RUNTIME_DIR", "value": "/var/run/gpushift"},
                {"name": "TMPDIR", "value": "/var/run/gpushift"},
                {"name": "GREETING", "value": "pod $(GPUSHIFT_POD_NAME) $$(KEPT)"}],
        "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"},
                         {"name": "gpushift-runtime", "mountPath": "/var/run/gpushift"}],
        "startupProbe": {"exec": {"command": [SIDECAR, "probe", "--port", "8765"]},
                         "periodSeconds": 1, "failureThreshold": 120}}
    return {"metadata": {"name": "nb-0", "namespace": "ns", "uid": "u-1",
                         "labels": {"notebook-name": "nb"}},
            "spec": {"nodeName": "kwok-gpu-0", "initContainers": [sidecar],
                     "containers": [notebook]}}


def plan(tmp_path: Path, command: list[str] | None, gpu: bool = True) -> Any:
    ports = iter(range(20000, 20010))
    layout = Layout(tmp_path / "pod", {"workspace": tmp_path / "ws",
                                       "gpushift-runtime": tmp_path / "rt"},
                    Path(__import__("sys").executable).parent)
    return plan_pod(injected_pod(command), NodeFacts("kwok-gpu-0", True, gpu), layout,
                    lambda: next(ports))


def test_plan_runs_the_sidecar_first_with_local_paths_ports_and_downward_api(tmp_path):
    p = plan(tmp_path, None)
    sidecar, notebook = p.containers
    assert (sidecar.name, sidecar.sidecar, notebook.sidecar) == (SIDECAR, True, False)
    assert sidecar.argv[1:] == ["serve", "--port", "20000"]
    assert Path(sidecar.argv[0]).name == SIDECAR and Path(sidecar.argv[0]).is_file()
    assert sidecar.probe is not None and sidecar.probe.argv is not None
    assert sidecar.probe.argv[1:] == ["probe", "--port", "20000"]
    env = sidecar.env
    assert (env["GPUSHIFT_POD_NAME"], env["GPUSHIFT_NODE_NAME"], env["POD_IP"]) == (
        "nb-0", "kwok-gpu-0", "127.0.0.1")
    assert env["GPUSHIFT_API_PORT"] == "20000"
    assert env["GPUSHIFT_RUNTIME_DIR"] == env["TMPDIR"] == str(tmp_path / "rt")
    assert env["GREETING"] == "pod nb-0 $(KEPT)"
    assert notebook.env["GPUSHIFT_SIDECAR_URL"] == "http://127.0.0.1:20000"
    assert notebook.env["HOME"] == str(tmp_path / "ws") == str(notebook.cwd)
    assert env[FAKE_GPU_ENV] == notebook.env[FAKE_GPU_ENV] == "kwok-gpu-0"
    # No command: Kubeflow's example image's jupyter line, on 127.0.0.1 and a free port.
    assert notebook.argv[1] == "lab" and notebook.jupyter_port == 20001
    assert f"--notebook-dir={tmp_path / 'ws'}" in notebook.argv
    assert "--ServerApp.base_url=/notebook/ns/nb" in notebook.argv
    assert "--ip=0.0.0.0" not in notebook.argv and "--port=8888" not in notebook.argv
    local = [a for a in notebook.argv if "20001" in a or "ip=" in a or "port_retries" in a]
    assert local == ["--ServerApp.ip=127.0.0.1", "--ServerApp.port=20001",
                     "--ServerApp.port_retries=0"]


def test_plan_gives_the_fake_gpu_marker_only_on_a_kwok_gpu_node(tmp_path):
    p = plan(tmp_path, ["jupyter", "server", "--port", "8888"], gpu=False)
    assert all(FAKE_GPU_ENV not in c.env for c in p.containers)
    notebook = p.containers[1]
    assert notebook.argv[1:3] == ["server", "--ServerApp.ip=127.0.0.1"]
    assert "8888" not in notebook.argv


# ----------------------------------------------------------------------------- the cluster


@pytest.fixture
def local(control_plane, namespace, tmp_path) -> Iterator[tuple[PodRunner, NotebookProxy]]:
    """The runner (this test's namespace only) and the proxy, stopped at the end."""
    routes = Routes()
    proxy = NotebookProxy(routes).start()
    runner = PodRunner(control_plane.kubeconfig, tmp_path / "runner", namespaces=[namespace],
                       routes=routes, grace=5).start()
    try:
        yield runner, proxy
    finally:
        runner.stop()
        proxy.stop()


def logs(state: Path) -> str:
    return "\n".join(f"===== {p}\n{p.read_text()[-3000:]}"
                     for p in sorted(state.glob("pods/*/*/logs/*.log")))


def call(url: str, token: str, method: str = "GET",
         body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def family(local_pod: Any) -> list[int]:
    return [p for pid in local_pod.pids().values() for p in process_family(pid)]


def gone(pids: list[int]) -> bool:
    return not any(map(running, pids))


def test_fake_gpu_notebook_runs_locally_moves_to_the_gpu_node_and_stops(
        gpushift, admin, namespace, tmp_path, local):
    runner, proxy = local
    state = runner.state_dir
    demo_setup.opt_in_namespace(admin.core, namespace, create=False)
    # default-editor bound to Kubeflow's kubeflow-edit (the sidecar's rules aggregated in)
    access.profile_editor_token(admin.core, admin.rbac, namespace)
    workspace = tmp_path / "nb-workspace"
    pv = demo_setup.create_workspace_claim(admin.core, namespace, "nb-workspace", workspace)
    token = uuid.uuid4().hex
    demo_setup.create_notebook(admin.custom, namespace,
                               demo_setup.notebook_body("nb", "nb-workspace", token))
    url = demo_setup.notebook_url(proxy.port, namespace, "nb")
    try:
        wait_for("JupyterLab answering through the proxy",
                 lambda: call(url + "api/status", token)[0] == 200, 120,
                 describe=lambda: logs(state))
        cpu = runner.local_pod(namespace, "nb-0")
        pod = admin.core.read_namespaced_pod("nb-0", namespace)
        assert cpu is not None and cpu.plan.uid == pod.metadata.uid
        assert node_kind(admin.core, pod.spec.node_name) == "cpu"
        assert [c.name for c in cpu.plan.containers] == [SIDECAR, "nb"]
        side, nb = cpu.container(SIDECAR), cpu.container("nb")
        assert side.started_at < nb.started_at  # the notebook waited for the probe
        assert FAKE_GPU_ENV not in side.plan.env and FAKE_GPU_ENV not in nb.plan.env
        runtime = Path(nb.plan.env["GPUSHIFT_RUNTIME_DIR"])
        assert runtime == Path(side.plan.env["GPUSHIFT_RUNTIME_DIR"]) != Path("/var/run/gpushift")
        config = json.loads((runtime / "runtime-config.json").read_text())
        assert (config["PodName"], config["PodNamespace"], config["usingGPU"]) == (
            "nb-0", namespace, False)
        assert nb.plan.env["GPUSHIFT_SIDECAR_URL"] == (
            f"http://127.0.0.1:{side.plan.env['GPUSHIFT_API_PORT']}")
        # Jupyter writes through the proxy onto the PV's folder; a kernel runs.
        status, _ = call(url + "api/contents/hello.txt", token, "PUT",
                         {"type": "file", "format": "text", "content": "kept"})
        assert status in (200, 201)
        assert (workspace / "hello.txt").read_text() == "kept"
        status, kernel = call(url + "api/kernels", token, "POST", {"name": "python3"})
        assert status == 201, kernel
        old = family(cpu)
        assert len(old) >= 3, old  # sidecar, jupyter, the kernel

        # --- the move as the sidecar patches it: GPU limit + toleration of the GPU node
        notebook = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
        profile = WebhookConfig().profiles[0]
        move = plan_move(notebook, "gpu", profile, WebhookConfig().image_map)
        t0 = time.monotonic()
        admin.custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", "nb",
                                                    move.operations,
                                                    _content_type="application/json-patch+json")
        answers: list[int] = []

        def moved() -> Any:
            answers.append(call(url + "api/status", token)[0])
            now = runner.local_pod(namespace, "nb-0")
            return now if (now and now.plan.uid != cpu.plan.uid and answers[-1] == 200
                           ) else None

        gpu = wait_for("the new pod's JupyterLab through the same URL", moved, 120,
                       describe=lambda: logs(state))
        moved_s = time.monotonic() - t0
        assert gpu.plan.node.gpu and node_kind(admin.core, gpu.plan.node.name) == "gpu"
        for c in gpu.processes:
            assert c.plan.env[FAKE_GPU_ENV] == gpu.plan.node.name
        assert gone(old), [p for p in old if not gone([p])]
        assert 503 in answers and set(answers) <= {200, 503}, answers
        status, body = call(url + "api/contents/hello.txt", token)
        assert (status, body["content"]) == (200, "kept")
        runtime = Path(gpu.container("nb").plan.env["GPUSHIFT_RUNTIME_DIR"])
        config = json.loads((runtime / "runtime-config.json").read_text())
        assert config["usingGPU"] is True
        print(f"\nmove: patch -> the new pod's JupyterLab answering: {moved_s:.1f}s")

        # --- the notebook process killed (a fault test's tool): restarted like a container,
        # its kernel (in a session of its own) ended with it, the URL answers again.
        assert call(url + "api/kernels", token, "POST", {"name": "python3"})[0] == 201
        jupyter = gpu.container("nb")
        kernels = [p for p in process_family(jupyter.pid) if p != jupyter.pid]
        assert kernels
        killed = runner.signal_container(namespace, "nb-0", "nb", signal.SIGKILL)
        wait_for("the notebook container restarted and answering", lambda: (
            jupyter.restarts == 1 and jupyter.pid != killed
            and call(url + "api/status", token)[0] == 200), 60, describe=lambda: logs(state))
        assert gone(kernels)
        assert runner.local_pod(namespace, "nb-0") is gpu  # the same pod, not a new one

        # --- the Notebook deleted: its processes stop, the URL answers 503
        now = family(gpu)
        admin.custom.delete_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
        wait_for("the pod's processes stopped",
                 lambda: runner.local_pod(namespace, "nb-0") is None and gone(now), 60,
                 describe=lambda: logs(state))
        assert call(url + "api/status", token)[0] == 503
        assert "Traceback" not in (gpu.log_dir / f"{SIDECAR}.log").read_text()
    finally:
        delete_volumes(admin.core, [pv])
