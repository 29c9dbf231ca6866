"""One "pod" for the browser tests: the real `gpushift-sidecar serve` (no Kubernetes API,
so a move fails at the patch step and says so) and a real JupyterLab with the gpushift
server extension, wired as the webhook wires them in a notebook pod.

    python pod_server.py {cpu|gpu|off|hub} PORT

`cpu`: a CPU pod (background checkpoints every 2 s, skipped above 8 MiB). `gpu`: a GPU
pod (nvidia.com/gpu x1) on a fake GPU (GPUSHIFT_FAKE_GPU: this machine has none) with a
short idle timeout. `off`: a pod the webhook did not
inject (no sidecar). `hub`: a CPU pod whose JupyterLab runs as under JupyterHub (its page
carries the hub's prefix, as JupyterHub's single-user server sets it). Runs until
SIGTERM/SIGINT, then stops both processes. Files go to ui-tests/.jupyter-run/<kind>/
(logs: sidecar.log, server.log), or to $GPUSHIFT_UI_RUN_ROOT/<kind>/: the suite of the
lowest JupyterLab runs beside this one with its own folders and ports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# Short idle timer on the GPU pod: 10 s active, then a 30 s warning, then the move. The
# bounds hold as the admin's schema wants them (warning < min <= timeout <= max): the
# sidecar refuses settings the webhook would refuse.
GPU_IDLE = {"timeout_seconds": 40, "warning_seconds": 30, "min_seconds": 40,
            "max_seconds": 600, "allow_pin": False, "utilization_threshold_percent": 5}
# The CPU pod's background checkpoints (the admin's side; the server's own settings are
# in jupyter_server_test_config.py): soon after a cell, and skipped above a small state,
# so that the browser tests see both within seconds.
CPU_BACKGROUND = {"background_interval_seconds": 2, "background_max_state_mib": 8}
PROFILE = {"name": "nvidia-1", "resource": "nvidia.com/gpu", "count": 1,
           "node_selector": {}, "tolerations": [], "runtime_class_name": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sidecar_env(kind: str, run: Path, workspace: Path, port: int) -> dict[str, str]:
    settings = {"default_profile": "nvidia-1", "profiles": [PROFILE], "image_map": [],
                "gpu_resources": ["nvidia.com/gpu"], "idle": GPU_IDLE}
    if kind == "cpu":
        settings["checkpoints"] = CPU_BACKGROUND
    gpu = kind == "gpu"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({
        "PYTHONUNBUFFERED": "1",
        "GPUSHIFT_POD_NAME": f"ui-{kind}-0", "GPUSHIFT_POD_NAMESPACE": "kubeflow-user",
        "GPUSHIFT_POD_UID": f"uid-{kind}-{time.time_ns()}", "GPUSHIFT_NODE_NAME": "node-a",
        "GPUSHIFT_NOTEBOOK_NAME": f"ui-{kind}", "GPUSHIFT_NOTEBOOK_CONTAINER": f"ui-{kind}",
        "GPUSHIFT_GPU_RESOURCE": "nvidia.com/gpu" if gpu else "",
        "GPUSHIFT_GPU_COUNT": "1" if gpu else "0",
        "GPUSHIFT_RUNTIME_DIR": str(run / "runtime"), "GPUSHIFT_WORKSPACE_DIR": str(workspace),
        "GPUSHIFT_API_PORT": str(port), "GPUSHIFT_SETTINGS": json.dumps(settings),
        # No Kubernetes API here (and never this machine's own kubeconfig, if any): the
        # sidecar says so, and a move fails at the patch step with that reason.
        "KUBECONFIG": str(run / "no-kubeconfig"),
    })
    return env


def wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"sidecar did not write {path}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def main() -> int:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind not in ("cpu", "gpu", "off", "hub"):
        sys.exit("usage: pod_server.py {cpu|gpu|off|hub} PORT")
    run = Path(os.environ.get("GPUSHIFT_UI_RUN_ROOT") or HERE / ".jupyter-run") / kind
    shutil.rmtree(run, ignore_errors=True)
    workspace = run / "workspace"
    workspace.mkdir(parents=True)
    children: list[subprocess.Popen[bytes]] = []
    server_env = {**os.environ, "JUPYTERLAB_GALATA_ROOT_DIR": str(workspace),
                  "GPUSHIFT_UI_RUN_DIR": str(run), "GPUSHIFT_UI_PORT": str(port),
                  "KISHU_PATH_ROOT": str(run / "kishu"),
                  "GPUSHIFT_UI_HUB": "1" if kind == "hub" else "",
                  "GPUSHIFT_UI_BACKGROUND": "1" if kind == "cpu" else ""}
    for key in ("GPUSHIFT_RUNTIME_DIR", "GPUSHIFT_SIDECAR_URL", "GPUSHIFT_FAKE_GPU"):
        server_env.pop(key, None)
    if kind != "off":
        sidecar_port = free_port()
        log = run / "sidecar.log"
        with log.open("wb") as out:
            sidecar = subprocess.Popen([str(BIN / "gpushift-sidecar"), "serve"], stdout=out,
                                       stderr=subprocess.STDOUT,
                                       env=sidecar_env(kind, run, workspace, sidecar_port))
        children.append(sidecar)
        wait_for_file(run / "runtime" / "runtime-config.json", sidecar, log)
        server_env.update({"GPUSHIFT_RUNTIME_DIR": str(run / "runtime"),
                           "GPUSHIFT_SIDECAR_URL": f"http://127.0.0.1:{sidecar_port}"})
        if kind == "gpu":
            server_env["GPUSHIFT_FAKE_GPU"] = "ui-test"
    with (run / "server.log").open("wb") as out:
        server = subprocess.Popen([str(BIN / "jupyter"), "lab", "--config",
                                   str(HERE / "jupyter_server_test_config.py")],
                                  stdout=out, stderr=subprocess.STDOUT, env=server_env)
    children.append(server)

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    stop()
    return 1


if __name__ == "__main__":
    sys.exit(main())
