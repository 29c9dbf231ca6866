"""`gpushift-webhook probe-injection`: what the chart's `helm test` pod runs.

It asks the API server to create a notebook-like pod in a namespace where injection is
enabled, as a server-side dry run: the API server runs the mutating admission webhooks
(ours has sideEffects None, so dry runs reach it) and answers with the pod as it would
be stored, and nothing is stored. The pod must come back with the sidecar. With
`failurePolicy: Ignore` a webhook that does not answer is silent otherwise: the pod
would simply be created without the sidecar -- this probe is how that shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpushift_core import labels
from gpushift_core.kube import KubeApi

__all__ = ["PROBE_NAME", "dry_run_create", "probe_pod", "verdict"]

PROBE_NAME = "gpushift-injection-probe"


def probe_pod(image: str) -> dict[str, Any]:
    """A pod the webhook injects in an enabled namespace: Kubeflow's `notebook-name`
    label (the webhook configuration's objectSelector), one container. Its image is
    never pulled (a dry run)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"{PROBE_NAME}-",
                     "labels": {labels.NOTEBOOK_NAME_LABEL: PROBE_NAME}},
        "spec": {"containers": [{"name": PROBE_NAME, "image": image}]},
    }


def verdict(pod: Mapping[str, Any], namespace: str, sidecar_name: str) -> str | None:
    """None when `pod` (the API server's answer) has the sidecar; else what is wrong,
    as a message for the admin."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    has_sidecar = any(isinstance(c, Mapping) and c.get("name") == sidecar_name
                      for c in containers)
    marked = labels.INJECTED_ANNOTATION in labels.annotations_of(pod)
    if has_sidecar and marked:
        return None
    missing = " and ".join(
        part for part, absent in ((f"no container {sidecar_name!r}", not has_sidecar),
                                  (f"no {labels.INJECTED_ANNOTATION} annotation", not marked))
        if absent)
    return (f"the webhook did not inject a notebook pod in namespace {namespace}: the API "
            f"server's dry run returned it with {missing}. Check that the namespace is "
            f"enabled (label {labels.ENABLED_LABEL}=true in opt-in mode; not =false in "
            "cluster-wide mode), that the webhook's pods are Ready, and the API server's "
            "log for failed calls to webhook pods.gpushift.io (failurePolicy Ignore lets "
            "pods through without the sidecar when the webhook does not answer)")


async def dry_run_create(api: KubeApi, namespace: str, pod: Mapping[str, Any]
                         ) -> dict[str, Any]:
    """The pod as the API server would create it (admission included), stored nowhere.
    A dry run changes nothing, so it is retried like a read."""
    return await api.read_json(api.core_v1.create_namespaced_pod, namespace, dict(pod),
                               dry_run="All")
