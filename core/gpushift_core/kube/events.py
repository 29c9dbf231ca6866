"""The core/v1 Event about a Notebook that `kubectl describe notebook` lists (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = ["EVENT_MESSAGE_MAX", "EVENT_TYPES", "NOTEBOOK_API", "notebook_event"]

NOTEBOOK_API = ("kubeflow.org", "v1")
EVENT_TYPES = ("Normal", "Warning")
EVENT_MESSAGE_MAX = 1024  # what events.k8s.io accepts; core/v1 stores more, kubectl cuts it



def notebook_event(namespace: str, notebook: Mapping[str, Any], reason: str, message: str,
                   type: str, *, component: str, instance: str = "", host: str = "",
                   ) -> dict[str, Any]:
    """The Event about a Notebook (as read from the API), signed by `component` (and the
    pod `instance`, the node `host`); ValueError for a type Kubernetes does not know."""
    if type not in EVENT_TYPES:
        raise ValueError(f"event type must be one of {EVENT_TYPES}, not {type!r}")
    meta = notebook.get("metadata") or {}
    name = str(meta.get("name") or "")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": str(notebook.get("apiVersion") or "/".join(NOTEBOOK_API)),
        "kind": str(notebook.get("kind") or "Notebook"),
        "name": name,
        "namespace": namespace,
    }
    for key in ("uid", "resourceVersion"):
        if meta.get(key):
            involved[key] = str(meta[key])
    source = {"component": component}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_MAX],
        "type": type,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": (instance or host or component)[:128],
    }
