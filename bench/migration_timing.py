"""Time whole migrations by the real sidecar on a local control plane.

    .venv/bin/python bench/migration_timing.py [--migrations 12]

Starts its own control plane (gpushift_testing.controlplane.ControlPlane, in a temp dir;
the binaries come from hack/build-controlplane.sh), a Notebook with a hostPath PV
workspace and a kishu-like checkpoint database, and the real `gpushift-sidecar serve`
process with the pod's facts as the webhook would hand them, under the namespace's
`default-editor` ServiceAccount bound to Kubeflow's kubeflow-edit (the chart's sidecar
rules aggregated in). Then it moves the notebook GPU, CPU, GPU, ... and for each move
measures:

* POST /migrations -> patch applied: the migration's history, `requested` to
  `recreating` (stamped by the sidecar as it sends the patch, checkpoint verified);
* patch -> new pod Ready: `recreating` to the first time the new pod nb-0 shows the
  Ready condition (polled every 10 ms; kwok plays the kubelet, so no image pulls).

After each move a sidecar started as the new pod confirms the restore (so the next
migration can begin); that part is not timed. Prints each move and p50 / max.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testing"))
from gpushift_testing import access  # noqa: E402
from gpushift_testing import controlplane as cpmod  # noqa: E402
from gpushift_testing.kishu_files import kishu_db  # noqa: E402
from gpushift_testing.pki import write_kubeconfig  # noqa: E402
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess, start_sidecar  # noqa: E402
from gpushift_testing.workloads import create_workspace  # noqa: E402

from gpushift_core.admin_settings import GpuProfile, ImagePair  # noqa: E402
from gpushift_webhook.config import WebhookConfig  # noqa: E402

NB = ("kubeflow.org", "v1")
SA = access.EDITOR_SA
CPU_IMAGE = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
PROFILE = GpuProfile(name="nvidia-1", resource=cpmod.GPU_RESOURCE, count=1,
                     node_selector={"nvidia.com/gpu.present": "true"},
                     tolerations=[{"key": cpmod.GPU_RESOURCE, "operator": "Exists",
                                   "effect": "NoSchedule"}])
SETTINGS = WebhookConfig(profiles=[PROFILE], default_profile="nvidia-1",
                         image_map=[ImagePair(cpu=CPU_IMAGE, cuda=CUDA_IMAGE)])


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait(what: str, check: Any, timeout: float = 60, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def start(work: Path, kubeconfig: Path, namespace: str, pod: Any, workspace: Path,
          runtime: str) -> SidecarProcess:
    """The real sidecar of `pod`, with the webhook's env (gpushift_testing.sidecar_process)."""
    return start_sidecar(kubeconfig, namespace, PodFacts.of(pod), workspace, work / runtime,
                         work / f"sidecar-{runtime}.log", SETTINGS.sidecar_settings_json,
                         ready_timeout=30)


def sidecar_kubeconfig(cp: cpmod.ControlPlane, api: Any, namespace: str, out: Path) -> str:
    """default-editor bound to Kubeflow's kubeflow-edit with the chart's sidecar rules
    aggregated in (helm template), as in a profile."""
    from kubernetes import client

    token = access.profile_editor_token(client.CoreV1Api(api),
                                        client.RbacAuthorizationV1Api(api), namespace, SA)
    write_kubeconfig(out, cp.server, cp.ca_file, token, SA)
    return "kubeflow-edit with the chart's sidecar rules aggregated in"


def setup_notebook(api: Any, namespace: str, workspace: Path) -> None:
    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    wait("default ServiceAccount", lambda: core.read_namespaced_service_account(
        "default", namespace), 60, 0.2)
    workspace.mkdir(parents=True)
    create_workspace(core, namespace, "nb-workspace", workspace, pv=f"{namespace}-ws",
                     wait=False)
    custom.create_namespaced_custom_object(*NB, namespace, "notebooks", {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": "nb", "labels": {"app": "nb"}},
        "spec": {"template": {"spec": {
            "serviceAccountName": SA,
            "containers": [{
                "name": "nb", "image": CPU_IMAGE,
                "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi"},
                              "requests": {"cpu": "500m", "memory": "1Gi"}},
                "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}]}],
            "volumes": [{"name": "workspace",
                         "persistentVolumeClaim": {"claimName": "nb-workspace"}}]}}}})


def ready_pod(core: Any, namespace: str, not_uid: str) -> Any:
    pod = core.read_namespaced_pod("nb-0", namespace)
    if pod.metadata.uid == not_uid or pod.metadata.deletion_timestamp is not None:
        return None
    ready = any(c.type == "Ready" and c.status == "True"
                for c in (pod.status.conditions or []))
    return pod if ready else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--migrations", type=int, default=12, help="at least 10; GPU, CPU, ...")
    args = ap.parse_args()
    if args.migrations < 10:
        ap.error("--migrations: at least 10")
    missing = cpmod.missing_binaries()
    if missing:
        print(f"missing control plane binaries {missing}: run hack/build-controlplane.sh",
              file=sys.stderr)
        return 1
    from kubernetes import client

    with tempfile.TemporaryDirectory(prefix="gpushift-bench-") as tmp:
        work = Path(tmp)
        t = time.monotonic()
        cp = cpmod.ControlPlane(work / "cp").start()
        print(f"control plane up in {time.monotonic() - t:.1f}s; notebook controller: "
              f"{cp.notebook_controller_reason}")
        api = cp.api_client()
        core = client.CoreV1Api(api)
        sidecars: list[SidecarProcess] = []
        try:
            namespace = "bench"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            workspace = work / "workspace"
            setup_notebook(api, namespace, workspace)
            kubeconfig = work / "sidecar-kubeconfig"
            rbac = sidecar_kubeconfig(cp, api, namespace, kubeconfig)
            train = workspace / "train.ipynb"
            train.write_text("{}")
            pod = wait("nb-0 Ready", lambda: ready_pod(core, namespace, ""), 120)
            sidecars.append(start(work, kubeconfig, namespace, pod, workspace, "run-0"))
            print(f"sidecar as {SA} with the {rbac}\n")
            print(f"{'#':>3} {'target':6} {'POST->patch':>12} {'patch->Ready':>13}  node")
            to_patch: dict[str, list[float]] = {"gpu": [], "cpu": []}
            to_ready: dict[str, list[float]] = {"gpu": [], "cpu": []}
            steps: dict[str, list[float]] = {}
            for i in range(args.migrations):
                target = "gpu" if i % 2 == 0 else "cpu"
                commit = f"c-{i}"
                kishu_db(train, commit, workspace=workspace)
                current = sidecars[-1]
                old_uid = pod.metadata.uid
                status, body = current.request("POST", "/migrations", {
                    "target": target, "reason": "manual" if target == "gpu" else "idle",
                    "checkpoint": {"notebook_path": str(train), "commit_id": commit}})
                if status != 202:
                    raise SystemExit(f"POST /migrations: {status} {body}")
                try:
                    pod = wait("new pod Ready",
                               lambda u=old_uid: ready_pod(core, namespace, u), 60)
                except RuntimeError:
                    print(current.request("GET", "/migrations/current")[1], file=sys.stderr)
                    print(current.log.read_text()[-4000:], file=sys.stderr)
                    raise
                ready_at = time.time()
                m = current.wait_phase("recreating", "failed", timeout=60, interval=0.02)
                if m["phase"] != "recreating":
                    raise SystemExit(f"migration failed: {m['error']}")
                at = {h["phase"]: parse_time(h["at"]) for h in m["history"]}
                order = [h["phase"] for h in m["history"]]
                for a, b in itertools.pairwise(order):
                    steps.setdefault(f"{a}->{b}", []).append(at[b] - at[a])
                to_patch[target].append(at["recreating"] - at["requested"])
                to_ready[target].append(ready_at - at["recreating"])
                print(f"{i + 1:>3} {target:6} {to_patch[target][-1] * 1000:>10.1f}ms "
                      f"{to_ready[target][-1] * 1000:>11.1f}ms  {pod.spec.node_name}")
                # The old pod goes; the new pod's sidecar finishes the migration.
                current.stop()
                new = start(work, kubeconfig, namespace, pod, workspace, f"run-{i + 1}")
                sidecars.append(new)
                new.wait_phase("restoring", timeout=60, interval=0.02)
                status, body = new.request("POST", "/migrations/current/restore",
                                           {"ok": True, "restored": ["x"]})
                if status != 200 or body["phase"] != "done":
                    raise SystemExit(f"restore: {status} {body}")
            print()
            for label, data in (("POST -> patch applied", to_patch),
                                ("patch -> new pod Ready", to_ready)):
                every = data["gpu"] + data["cpu"]
                print(f"{label:24} p50 {statistics.median(every) * 1000:7.1f} ms   "
                      f"max {max(every) * 1000:7.1f} ms   (n={len(every)}; to GPU p50 "
                      f"{statistics.median(data['gpu']) * 1000:.1f} ms, to CPU p50 "
                      f"{statistics.median(data['cpu']) * 1000:.1f} ms)")
            print("  by step (p50): " + ", ".join(
                f"{k} {statistics.median(v) * 1000:.1f} ms" for k, v in steps.items()))
        finally:
            for s in sidecars:
                s.stop()
            api.close()
            cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
