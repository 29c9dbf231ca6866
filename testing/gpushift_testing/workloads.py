"""Workloads in the local control plane: hostPath workspaces, pods Running, node kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpushift_testing.common import GPU_RESOURCE
from gpushift_testing.kube import wait_for, wait_for_pod


def create_workspace(core: Any, namespace: str, claim: str, host: Path, *,
                     pv: str | None = None, wait: bool = True) -> str:
    """A hostPath PV on `host` (created) and the PVC `claim` bound to it, as a Kubeflow
    workspace volume; waits for Bound unless `wait` is False. Returns the PV's name."""
    pv = pv or f"{namespace}-{claim}"[:63]  # PersistentVolumes are cluster-scoped
    host.mkdir(parents=True, exist_ok=True)
    core.create_persistent_volume({
        "metadata": {"name": pv, "labels": {"gpushift.io/test": "true"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": str(host)},
                 "claimRef": {"namespace": namespace, "name": claim}},
    })
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "volumeName": pv, "resources": {"requests": {"storage": "1Gi"}}},
    })
    if wait:
        wait_for(f"PVC {namespace}/{claim} Bound",
                 lambda: core.read_namespaced_persistent_volume_claim(claim, namespace)
                 .status.phase == "Bound", 60)
    return pv


def delete_volumes(core: Any, names: list[str]) -> None:
    """Delete the PersistentVolumes `names` (cluster-scoped: not gone with the namespace)."""
    from kubernetes.client.exceptions import ApiException

    for pv in names:
        try:
            core.delete_persistent_volume(pv)
        except ApiException as e:
            if e.status != 404:
                raise


def wait_running(core: Any, namespace: str, name: str, *, not_uid: str = "",
                 timeout: float = 90, interval: float = 0.05,
                 not_deleting: bool = False) -> Any:
    """Pod `name` Running (with a uid other than `not_uid`; with `not_deleting`, not being
    deleted either), polled every `interval` seconds."""

    def running(pod: Any) -> Any:
        ok = pod.metadata.uid != not_uid and pod.status.phase == "Running" and not (
            not_deleting and pod.metadata.deletion_timestamp)
        return pod if ok else None

    return wait_for_pod(core, namespace, name, "Running" + (" (recreated)" if not_uid else ""),
                        running, timeout, interval=interval)


def wait_pending(core: Any, namespace: str, name: str, message: str, *, not_uid: str = "",
                 timeout: float = 60, interval: float = 0.1) -> Any:
    """Pod `name` (with a uid other than `not_uid`) Pending: its PodScheduled condition is
    False with `message` in the scheduler's message (e.g. "Insufficient nvidia.com/gpu")."""

    def pending(pod: Any) -> Any:
        if pod.metadata.uid == not_uid:
            return None
        return pod if any(c.type == "PodScheduled" and c.status == "False"
                          and message in (c.message or "")
                          for c in pod.status.conditions or []) else None

    return wait_for_pod(core, namespace, name, f"Pending on {message}", pending, timeout,
                        interval=interval)


def node_kind(core: Any, node: str) -> str:
    """The `gpushift.io/node-kind` label of `node`: "cpu" or "gpu"."""
    return str(core.read_node(node).metadata.labels.get("gpushift.io/node-kind", ""))


def gpu_limit(pod: Any) -> str | None:
    """The GPU limit of the pod's first container, None without one."""
    limits = pod.spec.containers[0].resources.limits or {}
    value = limits.get(GPU_RESOURCE)
    return None if value is None else str(value)
