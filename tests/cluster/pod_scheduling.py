"""Scheduling helpers of the control plane tests (test_controlplane_*.py): the toleration
of the GPU nodes' taint, and the wait for a pod the scheduler refuses."""

from __future__ import annotations

from typing import Any

from gpushift_testing.controlplane import GPU_RESOURCE
from gpushift_testing.kube import wait_for_pod

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def wait_unschedulable(core: Any, ns: str, name: str) -> Any:
    """The pod's PodScheduled condition once the scheduler found it Unschedulable (60 s at
    most)."""

    def unschedulable(pod: Any) -> Any:
        for c in pod.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                return c
        return None

    return wait_for_pod(core, ns, name, "Unschedulable", unschedulable, 60)
