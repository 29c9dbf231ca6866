"""Reads the Notebooks, their pods and their Events for `gpushift-report --from-cluster`,
through the project's one Kubernetes client (transport only: `report_now` computes).

Reads only: list Notebooks (every namespace), get each holder's pod `<name>-0`, list the
Events about Notebooks once per namespace. The webhook's ServiceAccount may do all three;
an admin's kubeconfig needs the same reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpushift_core.kube import KubeApi
from gpushift_webhook.report_now import NotebookObjects

__all__ = ["read_notebooks"]


async def read_notebooks(api: KubeApi, namespaces: Sequence[str] = ()) -> list[NotebookObjects]:
    """Every Notebook (of `namespaces`, all when empty) with its pod and its Events."""
    notebooks = [nb for nb in await api.list_notebooks()
                 if not namespaces or _meta(nb).get("namespace") in namespaces]
    events: dict[str, list[dict[str, Any]]] = {}
    out: list[NotebookObjects] = []
    for nb in notebooks:
        namespace, name = str(_meta(nb).get("namespace")), str(_meta(nb).get("name"))
        if namespace not in events:
            events[namespace] = await api.list_events(namespace, "involvedObject.kind=Notebook")
        # The pod of a Notebook is its StatefulSet's only replica (Kubeflow's naming).
        pod = await api.find_pod(namespace, f"{name}-0")
        about = [e for e in events[namespace]
                 if (e.get("involvedObject") or {}).get("name") == name]
        out.append(NotebookObjects(nb, pod, about))
    return out


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}
