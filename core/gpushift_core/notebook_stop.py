"""Kubeflow's Stop, as gpushift reads it (pure).

The dashboard's Stop and the culler set the Notebook annotation
`kubeflow-resource-stopped`; the notebook-controller then scales the StatefulSet to 0
replicas, and Start removes the annotation. A stopped Notebook has no pod on purpose: no
move starts on it (the sidecar refuses), and a move in flight is not stuck but cancelled
(the guard ends it so; `gpushift_webhook.guard_decision`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpushift_core.labels import KUBEFLOW_STOPPED_ANNOTATION, annotations_of

__all__ = ["STOPPED_DURING_MOVE", "stop_refusal", "stopped"]

# The reason a move in flight ends `cancelled` with (the guard's and the sidecar's).
STOPPED_DURING_MOVE = (f"the notebook was stopped ({KUBEFLOW_STOPPED_ANNOTATION}) during "
                       "the move")


def stopped(notebook: Mapping[str, Any] | None) -> bool:
    """Whether the Notebook carries Kubeflow's stop annotation (any value: Kubeflow's
    controller tests only for the key)."""
    return KUBEFLOW_STOPPED_ANNOTATION in annotations_of(notebook)


def stop_refusal(notebook: Mapping[str, Any] | None) -> str | None:
    """Why no move may start on this Notebook (None: it is not stopped)."""
    if not stopped(notebook):
        return None
    since = str(annotations_of(notebook).get(KUBEFLOW_STOPPED_ANNOTATION) or "")
    return (f"the notebook is stopped ({KUBEFLOW_STOPPED_ANNOTATION}"
            f"{' since ' + since if since else ''}): start it before moving it")
