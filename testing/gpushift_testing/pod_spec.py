"""A pod's containers as local process plans (pure): what the pod runner starts.

Part of the local pod runner, a TEST HARNESS (see pod_runner.py); the product runs on
real Kubernetes. No image is pulled here: every container runs from the project's own
environment (``.venv/bin`` first on PATH), its executable looked up there by name. A
container without a command gets its image's entrypoint where we know it: the gpushift
sidecar image runs ``gpushift-sidecar``, the webhook image (the chart's hook and test
pods) ``gpushift-webhook``, a notebook container runs the command of
Kubeflow's example jupyter images (``jupyter lab ... --ServerApp.base_url=$NB_PREFIX``).
A Jupyter notebook container listens on 127.0.0.1 at the port the runner gives the pod.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpushift_testing import pod_env

# The env marker of a pod on a kwok GPU node: TEST-ONLY. Only this runner sets it, and
# only for pods that kwok plays on a fake GPU node; no real pod ever carries it.
FAKE_GPU_ENV = "GPUSHIFT_FAKE_GPU"
# Every process of a container (and what it starts: Jupyter's kernels leave its process
# group) carries this marker, "<pod uid>/<container>", so the runner can end them all
# when the container stops or its main process exits, as a container runtime would.
CONTAINER_MARK_ENV = "GPUSHIFT_LOCAL_CONTAINER"
IMAGE_HOME = "/home/jovyan"  # HOME of Kubeflow's notebook images
SIDECAR_EXECUTABLE = "gpushift-sidecar"
WEBHOOK_EXECUTABLE = "gpushift-webhook"  # Dockerfile.webhook's ENTRYPOINT (the chart's hooks)
# Kubeflow's example jupyter image (s6 services.d/jupyterlab/run), with ${HOME} = IMAGE_HOME.
KUBEFLOW_JUPYTER = ["jupyter", "lab", f"--notebook-dir={IMAGE_HOME}", "--ip=0.0.0.0",
                    "--no-browser", "--allow-root", "--port=8888", "--ServerApp.token=",
                    "--ServerApp.password=", "--ServerApp.allow_origin=*",
                    "--ServerApp.allow_remote_access=True",
                    "--ServerApp.authenticate_prometheus=False",
                    "--ServerApp.base_url=$(NB_PREFIX)"]
_IP_OPTIONS = ("--ip", "--ServerApp.ip", "--NotebookApp.ip")
_JUPYTER_APPS = {"lab", "server", "notebook"}


@dataclass(frozen=True)
class NodeFacts:
    """What the runner needs to know of a node: kwok plays it; it offers a GPU."""

    name: str
    kwok: bool
    gpu: bool


@dataclass(frozen=True)
class Probe:
    """A startup probe run locally: an exec command or an HTTP GET on 127.0.0.1."""

    argv: list[str] | None
    http: str | None
    period_s: float
    deadline_s: float  # failureThreshold x periodSeconds: then the container is restarted
    timeout_s: float = 1.0  # timeoutSeconds: one probe that runs longer has failed


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    sidecar: bool  # an init container with restartPolicy Always (a native sidecar)
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    probe: Probe | None = None
    jupyter_port: int | None = None  # set on a Jupyter notebook container


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    uid: str
    notebook: str
    node: NodeFacts
    containers: list[ContainerPlan]  # sidecars first, in order, then the main containers
    base_url: str
    skipped: list[str] = field(default_factory=list)  # what does not run here, and why
    # The pod's restartPolicy: Always (a notebook's pod), or Never / OnFailure (a Job's
    # or a test's pod, which runs to completion: see pod_completion.py).
    restart_policy: str = "Always"

    @property
    def jupyter_port(self) -> int | None:
        return next((c.jupyter_port for c in self.containers if c.jupyter_port), None)


@dataclass(frozen=True)
class Layout:
    """Where the pod lives on this machine (decided by the runner)."""

    pod_dir: Path
    volumes: dict[str, Path]  # volume name -> local folder
    venv_bin: Path
    kubeconfig: Path | None = None  # the pod's ServiceAccount, as in-cluster config would be
    extra_env: dict[str, str] = field(default_factory=dict)


def plan_pod(pod: Mapping[str, Any], node: NodeFacts, layout: Layout,
             free_port: Callable[[], int]) -> PodPlan:
    meta, spec = pod["metadata"], pod["spec"]
    inits = list(spec.get("initContainers") or [])
    sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
    skipped = [f"init container {c['name']}: not run (no image here)"
               for c in inits if c.get("restartPolicy") != "Always"]
    mains = list(spec.get("containers") or [])
    ports = {p: free_port() for p in pod_env.listening_ports(sidecars + mains)}
    notebook = str((meta.get("labels") or {}).get("notebook-name", ""))
    plans: list[ContainerPlan] = []
    for index, c in enumerate(sidecars + mains):
        is_sidecar = index < len(sidecars)
        try:
            plans.append(_plan_container(pod, c, is_sidecar, c is mains[0] if mains else False,
                                         node, layout, ports, free_port))
        except pod_env.EnvProblem as e:
            skipped.append(f"container {c.get('name')}: {e}")
    return PodPlan(str(meta["namespace"]), str(meta["name"]), str(meta["uid"]), notebook,
                   node, plans, f"/notebook/{meta['namespace']}/{notebook}", skipped,
                   str(spec.get("restartPolicy") or "Always"))


def _plan_container(pod: Mapping[str, Any], c: Mapping[str, Any], sidecar: bool,
                    notebook: bool, node: NodeFacts, layout: Layout, ports: dict[int, int],
                    free_port: Callable[[], int]) -> ContainerPlan:
    name = str(c["name"])
    own = layout.pod_dir / "containers" / name
    mounts = {IMAGE_HOME: str(own / "home"), "/tmp": str(own / "tmp")}  # the image's own
    volumes = layout.volumes
    for m in c.get("volumeMounts") or []:
        if m["name"] in volumes:
            mounts[str(m["mountPath"])] = str(volumes[m["name"]] / str(m.get("subPath", "")))
    for folder in mounts.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    rewrite = pod_env.path_rewriter(mounts)
    pod_vars = pod_env.container_env(pod, c)
    command = [str(a) for a in c.get("command") or []]
    args = [str(a) for a in c.get("args") or []]
    if not command:
        command, args = _entrypoint(c, sidecar, notebook) + args, []
    argv = [rewrite(pod_env.expand(a, pod_vars)) for a in command + args]
    argv = pod_env.remap_port_args(argv, ports)
    jupyter_port = None
    if notebook and _is_jupyter(argv):
        jupyter_port = _local_port(c, ports, free_port)
        argv = _jupyter_argv(argv, jupyter_port, pod_vars.get("NB_PREFIX", ""))
    env = _base_env(layout, mounts, node, notebook)
    env[CONTAINER_MARK_ENV] = f"{pod['metadata']['uid']}/{name}"
    env.update(pod_env.remap_port_env({k: rewrite(v) for k, v in pod_vars.items()}, ports))
    argv[0] = _executable(argv[0], layout.venv_bin, env["PATH"])
    workdir = rewrite(str(c.get("workingDir") or "")) or mounts[IMAGE_HOME]
    probe = _probe(c.get("startupProbe"), rewrite, ports, layout.venv_bin, env["PATH"])
    return ContainerPlan(name, sidecar, argv, env, Path(workdir), probe, jupyter_port)


def _entrypoint(c: Mapping[str, Any], sidecar: bool, notebook: bool) -> list[str]:
    image = str(c.get("image", ""))
    if c.get("name") == SIDECAR_EXECUTABLE or ("gpushift" in image and "sidecar" in image):
        return [SIDECAR_EXECUTABLE]
    if "gpushift" in image and "webhook" in image:
        return [WEBHOOK_EXECUTABLE]
    if notebook and not sidecar:
        return list(KUBEFLOW_JUPYTER)
    raise pod_env.EnvProblem(f"no command, and the entrypoint of image {image!r} is unknown "
                             "to the local pod runner")


def _base_env(layout: Layout, mounts: Mapping[str, str], node: NodeFacts,
              notebook: bool) -> dict[str, str]:
    """What the image and the kubelet would give: HOME, PATH, in-cluster credentials."""
    system_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {"PATH": f"{layout.venv_bin}{os.pathsep}{system_path}", "HOME": mounts[IMAGE_HOME],
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "TMPDIR": mounts["/tmp"],
           "VIRTUAL_ENV": str(layout.venv_bin.parent)}
    if notebook:  # Kubeflow's image: the runtime directory is not on the volume
        env["JUPYTER_RUNTIME_DIR"] = str(Path(mounts["/tmp"]) / "jupyter_runtime")
    if layout.kubeconfig is not None:
        env["KUBECONFIG"] = str(layout.kubeconfig)
    if node.kwok and node.gpu:
        env[FAKE_GPU_ENV] = node.name  # TEST-ONLY marker, see FAKE_GPU_ENV
    env.update(layout.extra_env)
    return env


def _is_jupyter(argv: list[str]) -> bool:
    exe = Path(argv[0]).name
    return exe in {"jupyter-lab", "jupyter-server", "jupyter-notebook"} or (
        exe == "jupyter" and len(argv) > 1 and argv[1] in _JUPYTER_APPS)


def _local_port(c: Mapping[str, Any], ports: dict[int, int], free_port: Callable[[], int]) -> int:
    declared = [int(p["containerPort"]) for p in c.get("ports") or [] if "containerPort" in p]
    container_port = declared[0] if declared else 8888
    return ports.setdefault(container_port, free_port())


def _jupyter_argv(argv: list[str], port: int, prefix: str) -> list[str]:
    """Listen on 127.0.0.1 at `port` (traitlets refuses an option given twice, so the
    pod's own ip/port options are replaced), base_url = NB_PREFIX unless given, no
    browser."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        key = arg.split("=", 1)[0]
        if key in (*_IP_OPTIONS, "--port", "--ServerApp.port", "--NotebookApp.port"):
            skip = "=" not in arg
            continue
        out.append(arg)
    out += [f"--ServerApp.ip={pod_env.LOOPBACK}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0"]
    if "--no-browser" not in out:
        out.append("--no-browser")
    # The pod runs as jovyan; here the process runs as whoever runs the runner (root in
    # some CI containers), and Jupyter refuses root without this flag.
    if os.geteuid() == 0 and "--allow-root" not in out:
        out.append("--allow-root")
    if prefix and not any(a.split("=", 1)[0].endswith(".base_url") for a in out):
        out.append(f"--ServerApp.base_url={prefix}")
    return out


def _executable(name: str, venv_bin: Path, path: str) -> str:
    """The container's executable in the project's environment, else on PATH."""
    if (venv_bin / Path(name).name).is_file():
        return str(venv_bin / Path(name).name)
    if os.path.isabs(name) and Path(name).is_file():
        return name
    found = shutil.which(Path(name).name, path=path)
    if found is None:
        raise pod_env.EnvProblem(f"executable {name!r} not found in {venv_bin} or on PATH")
    return found


def _probe(spec: Mapping[str, Any] | None, rewrite: Callable[[str], str],
           ports: Mapping[int, int], venv_bin: Path, path: str) -> Probe | None:
    if not spec:
        return None
    period = float(spec.get("periodSeconds", 10))
    deadline = period * float(spec.get("failureThreshold", 3))
    timeout = float(spec.get("timeoutSeconds", 1))
    if "exec" in spec:
        argv = pod_env.remap_port_args([rewrite(str(a)) for a in spec["exec"]["command"]],
                                       ports)
        argv[0] = _executable(argv[0], venv_bin, path)
        return Probe(argv, None, period, deadline, timeout)
    if "httpGet" in spec:
        port = int(spec["httpGet"]["port"])
        url = f"http://{pod_env.LOOPBACK}:{ports.get(port, port)}{spec['httpGet'].get('path', '/')}"
        return Probe(None, url, period, deadline, timeout)
    return None
