"""`gpushift-report --from-cluster` against the real control plane: Notebooks created for
real and moved to a GPU as the sidecar moves them (Kubeflow's notebook-controller
recreating the pod on kwok's GPU node), the sidecar's activity annotation on one, an
older sidecar's silence on another, idle timeout annotations inside and outside the
admin's bounds, an idle move's migration annotation and its Event. The console script
reports who holds a GPU now, for how long without GPU work, under which timeout, and says
what it cannot know; an unreachable API server is one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import test_sidecar_patching as patching
import yaml
from gpushift_testing import controlplane as cpmod
from gpushift_testing.common import free_port
from gpushift_testing.kube import wait_for
from test_sidecar_patching import MIRROR, NB, move

from gpushift_core.kube import KubeApi

notebook, sidecar = patching.notebook, patching.sidecar
SCRIPT = Path(sys.executable).with_name("gpushift-report")
ACTIVITY = "gpushift.io/notebook-gpu-activity"
TIMEOUT = "gpushift.io/notebook-idle-timeout"


def ready_on_gpu(admin: Any, namespace: str, name: str) -> dict[str, Any]:
    """The pod <name>-0 once it asks for a GPU and is ready, and its Notebook says so."""
    found: dict[str, Any] = {}

    def ready() -> bool:
        nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", name)
        limits = nb["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        if (nb.get("status") or {}).get("readyReplicas") != 1 or "nvidia.com/gpu" not in limits:
            return False
        pod = admin.core.read_namespaced_pod(f"{name}-0", namespace).to_dict()
        gpu = "nvidia.com/gpu" in (pod["spec"]["containers"][0]["resources"]["limits"] or {})
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"] or []}
        found.update(pod)
        return gpu and conditions.get("Ready") == "True" and not pod["metadata"].get(
            "deletion_timestamp")
    wait_for(f"{name} ready on GPU", ready, 120, interval=0.2)
    return found


def run_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "--from-cluster", *args], capture_output=True,
                          text=True, timeout=120, check=False)


async def test_who_holds_a_gpu_now_and_for_how_long_idle(
        control_plane: cpmod.ControlPlane, admin: Any, sidecar: KubeApi, namespace: str,
        notebook: Any, tmp_path: Path) -> None:
    for name in ("worker", "back"):
        notebook(name)
    await move(sidecar, namespace, "worker", "gpu")  # the local cluster has one GPU
    pod = ready_on_gpu(admin, namespace, "worker")
    await sidecar.set_annotation(namespace, "worker", TIMEOUT, "15m")
    await sidecar.set_annotation(namespace, "back", TIMEOUT, "2h")  # above the bounds
    # "back" was moved to CPU by the idle timer: its mirror and its Event
    await sidecar.set_annotation(namespace, "back", MIRROR, json.dumps({
        "id": "m1", "phase": "done", "target": "cpu", "trigger": "idle",
        "updated": "2026-12-04T10:00:00.000000Z"}))
    back = await sidecar.get_notebook(namespace, "back")
    await sidecar.create_event(namespace, back, "MigrationDone", "migration m1 to CPU: done")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"idle": {"timeout_seconds": 240, "min_seconds": 60,
                                               "max_seconds": 1800}}))
    args = ("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace,
            "--config", str(config))

    def report() -> dict[str, dict[str, Any]]:
        proc = run_report(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["settings"]["source"] == str(config)
        assert "Events the API server still keeps" in data["cannotKnow"]
        return {n["notebook"]: n for n in data["notebooks"]}

    # an older sidecar writes no activity: idle time unknown, and said why
    got = report()
    assert set(got) == {"worker", "back"}
    assert got["worker"]["gpus"] == 1 and got["back"]["gpus"] == 0
    assert got["worker"]["idleSeconds"] is None
    assert "no activity annotation" in got["worker"]["idleNote"]
    # activity written by an earlier pod speaks for that pod only
    now = time.time()
    activity = {"pod": "an-earlier-pod", "busy": 42.5, "lastWork": now - 600, "at": now - 20}
    await sidecar.set_annotation(namespace, "worker", ACTIVITY, json.dumps(activity))
    got = report()
    assert got["worker"]["idleSeconds"] is None
    assert got["worker"]["idleNote"] == "activity annotation is from an earlier pod"
    # the sidecar of this pod: its last GPU work 10 minutes ago
    activity["pod"] = pod["metadata"]["uid"]
    await sidecar.set_annotation(namespace, "worker", ACTIVITY, json.dumps(activity))
    got = report()
    worker, moved = got["worker"], got["back"]
    assert 600 <= worker["idleSeconds"] < 600 + (time.time() - now) + 1
    assert worker["idleNote"] == "since its last GPU work"
    assert (worker["idleTimeoutSeconds"], worker["idleTimeoutNote"]) == (900, "annotation")
    assert moved["idleSeconds"] is None and moved["idleNote"] == ""
    assert moved["idleTimeoutSeconds"] == 1800  # clamped into the admin's bounds
    assert "outside the admin's bounds" in moved["idleTimeoutNote"]
    assert moved["lastMove"].startswith("done to CPU (idle)")
    assert moved["eventsKept"] == 1
    assert worker["eventsKept"] == 0  # Kubeflow re-emits its pod's Events: not ours

    # the same as a table, for the admin (and the README's example)
    text = run_report(*args)
    assert text.returncode == 0, text.stderr
    print("\n" + text.stdout)
    lines = text.stdout.splitlines()
    assert lines[0].startswith("GPUs held now (1 of 2 notebooks")
    row = next(line for line in lines if line.startswith(f"{namespace}/worker "))
    cells = row.split()
    assert cells[1:3] == ["1", "nvidia-1"] and cells[3].startswith("10m")
    assert cells[4:6] == ["15m", "no"]
    assert "Without Prometheus this report sees only the present" in text.stdout
    assert "The oldest gpushift Event kept is" in text.stdout


def test_unreachable_api_server_is_one_line_and_exit_2(
        control_plane: cpmod.ControlPlane, tmp_path: Path) -> None:
    kubeconfig = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    for cluster in kubeconfig["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(kubeconfig))
    started = time.monotonic()
    proc = run_report("--kubeconfig", str(broken), "--timeout", "3")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("gpushift-report: the Kubernetes API failed:")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
