"""Objects shared by the migration tests: the admin's settings, a sidecar's environment,
a Notebook as the API returns it, migrations in a given phase."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sidecar_environ import make_environ

from gpushift_core.admin_settings import GpuProfile, ImagePair
from gpushift_core.kube import Retry
from gpushift_core.kube.connection import ApiError
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_mirror import Mirror
from gpushift_sidecar.state import (
    Migration,
    Phase,
    Reason,
    Target,
)
from gpushift_webhook.config import WebhookConfig

GPU = "nvidia.com/gpu"
CPU_IMAGE = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
PROFILE = GpuProfile(name="nvidia-1", node_selector={"nvidia.com/gpu.present": "true"},
                     tolerations=[{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}])
SETTINGS = WebhookConfig(profiles=[PROFILE, GpuProfile(name="nvidia-2", count=2)],
                         default_profile="nvidia-1",
                         image_map=[ImagePair(cpu=CPU_IMAGE, cuda=CUDA_IMAGE)])
SOURCE_UID = "uid-source"
NEW_UID = "uid-new"
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
FAST = Retry(deadline_seconds=0.5, initial_seconds=0.01, max_seconds=0.02)


def environ(tmp_path, *, uid: str = SOURCE_UID, gpu: tuple[str, int] | None = None,
            runtime: str = "run") -> dict[str, str]:
    return make_environ(tmp_path, gpu=gpu, GPUSHIFT_POD_UID=uid,
                        GPUSHIFT_RUNTIME_DIR=str(tmp_path / runtime),
                        GPUSHIFT_SETTINGS=SETTINGS.sidecar_settings_json)


def notebook_cr() -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": "my-notebook", "namespace": "kubeflow-user", "uid": "nb-uid",
                     "resourceVersion": "100",
                     "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
        "spec": {"template": {"spec": {"containers": [{
            "name": "my-notebook", "image": CPU_IMAGE,
            "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi"},
                          "requests": {"cpu": "500m", "memory": "1Gi"}}}]}}},
    }



def status(code: int, reason: str, message: str) -> ApiError:
    return ApiError(code, reason, json.dumps({
        "kind": "Status", "reason": reason, "message": message, "code": code,
        "details": {"name": "my-notebook"}}))



def phases(m: Migration) -> list[str]:
    return [h.phase.value for h in m.history]


def migration_in(env: SidecarEnv, phase: Phase, target: Target = Target.GPU) -> Migration:
    now = T0
    m = Migration.new(env, target=target, reason=Reason.MANUAL,
                      profile="nvidia-1" if target is Target.GPU else None,
                      checkpoint=None, pending_cell=None, now=now)
    order = [Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING, Phase.RECREATING,
             Phase.RESTORING]
    for p in order[:order.index(phase) + 1] if phase in order else []:
        m = m.advance(p, now=now)
    return m


def mirror(m: Migration, phase: str, **extra: str) -> Mirror:
    raw = json.dumps({"id": m.id, "phase": phase, "target": m.target.value, **extra})
    parsed = Mirror.parse(raw)
    assert parsed is not None
    return parsed
