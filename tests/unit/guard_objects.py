"""The objects of the migration guard's unit tests (test_guard_*.py): a CPU Notebook as
Kubeflow's UI makes it, the same Notebook after the sidecar's move patch, its pod in the
states the guard tells apart, and the settings they are made with."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

import jsonpatch

from gpushift_core.admin_settings import GpuProfile, ImagePair
from gpushift_core.move_plan import plan_move
from gpushift_webhook.config import WebhookConfig

NS = "kubeflow-user-example-com"
CPU_IMAGE = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
IMAGE_MAP = [ImagePair(cpu=CPU_IMAGE, cuda=CUDA_IMAGE)]
PROFILE = GpuProfile(name="nvidia-2", resource="nvidia.com/gpu", count=2,
                     node_selector={"nvidia.com/gpu.present": "true"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}])
CONFIG = WebhookConfig(image_map=IMAGE_MAP)
T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
TIMEOUT = 60.0
SCHEDULER = ("0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match "
             "Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No "
             "preemption victims found for incoming pod, 2 Preemption is not helpful for "
             "scheduling.")
MIGRATION_ID = "5b7c0a52-3c1e-4f0e-9d0c-2f1f6e0b9a11"


def cpu_notebook(name: str = "nb") -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "100",
                     "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
        "spec": {"template": {"spec": {
            "serviceAccountName": "default-editor",
            "containers": [{
                "name": name, "image": CPU_IMAGE,
                "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi"},
                              "requests": {"cpu": "500m", "memory": "1Gi"}},
                "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}],
            }],
            "volumes": [{"name": "workspace",
                         "persistentVolumeClaim": {"claimName": f"{name}-workspace"}}],
        }}},
    }


def migration(phase: str = "recreating", target: str = "gpu",
              updated: dt.datetime = T0, **extra: Any) -> str:
    return json.dumps({"id": MIGRATION_ID, "phase": phase, "target": target,
                       "updated": updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **extra},
                      separators=(",", ":"))


def moved_as_the_sidecar_does(nb: dict[str, Any], target: str = "gpu",
                              phase: str = "recreating") -> dict[str, Any]:
    """The Notebook after the sidecar's one patch: the move plus the two annotations."""
    plan = plan_move(nb, target, PROFILE if target == "gpu" else None, IMAGE_MAP)
    ops = [op for op in plan.operations if op["op"] != "test"]
    ops.append({"op": "add", "path": "/metadata/annotations/gpushift.io~1notebook-migration",
                "value": migration(phase, target)})
    if target == "gpu":
        ops.append({"op": "add",
                    "path": "/metadata/annotations/gpushift.io~1notebook-previous-profile",
                    "value": json.dumps(plan.previous_profile)})
    out: dict[str, Any] = jsonpatch.apply_patch(nb, ops)
    out["metadata"]["resourceVersion"] = "101"
    return out


def pod(nb: Mapping[str, Any], *, ready: bool = False, scheduled: str | None = None,
        waiting: tuple[str, str] | None = None, phase: str = "Pending") -> dict[str, Any]:
    """Pod <name>-0 made from the Notebook's current spec."""
    name = nb["metadata"]["name"]
    conditions: list[dict[str, Any]] = []
    if scheduled is not None:
        conditions.append({"type": "PodScheduled", "status": "False",
                           "reason": "Unschedulable", "message": scheduled})
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status: dict[str, Any] = {"phase": "Running" if ready else phase,
                              "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [{"name": name, "ready": False, "state": {
            "waiting": {"reason": waiting[0], "message": waiting[1]}}}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-0", "namespace": NS, "uid": str(uuid.uuid4()),
                         "resourceVersion": "7", "labels": {"notebook-name": name}},
            "spec": copy.deepcopy(nb["spec"]["template"]["spec"]),
            "status": status}


def stuck_gpu() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    original = cpu_notebook()
    moved = moved_as_the_sidecar_does(original)
    return original, moved, pod(moved, scheduled=SCHEDULER)
