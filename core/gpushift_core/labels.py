"""Label and annotation names shared by the webhook, the chart and the sidecar, and
how they read an object's annotations (`annotations_of`) and an annotation's JSON
object (`json_object`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PREFIX = "gpushift.io"

# Namespace label: "true" opts a namespace in; "false" opts it out in cluster-wide mode.
ENABLED_LABEL = f"{PREFIX}/enabled"
# Pod annotation: "false" leaves the pod alone.
INJECT_ANNOTATION = f"{PREFIX}/inject"
# Pod annotation written on injection; its value is the gpushift version.
INJECTED_ANNOTATION = f"{PREFIX}/injected"

# Kubeflow's notebook-controller puts this label on every notebook pod.
NOTEBOOK_NAME_LABEL = "notebook-name"

# Where Kubernetes mounts the pod's ServiceAccount token. A container added by a
# webhook does not get this mount from the ServiceAccount admission plug-in (it ran
# before us), so the sidecar copies it from the notebook container.
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"

# Notebook annotations of a migration in flight (the sidecar writes them in the same JSON
# patch that moves the Notebook; the guard reads them and writes the rollback). Both keys
# contain "notebook": Kubeflow's notebook-controller copies every other Notebook
# annotation into the pod template, so changing one would recreate the pod.
# Compact JSON {"id", "phase", "target", "updated"} (+ "reason" once rolled back/failed).
MIGRATION_ANNOTATION = f"{PREFIX}/notebook-migration"
# JSON of the move's previous-profile record (gpushift_core.move_plan.plan_move).
PREVIOUS_PROFILE_ANNOTATION = f"{PREFIX}/notebook-previous-profile"
# The GPU work of the Notebook's current GPU pod, written by its sidecar about once a
# minute (JSON, gpushift_core.gpu_activity): the webhook's busy GPU-seconds come from it.
GPU_ACTIVITY_ANNOTATION = f"{PREFIX}/notebook-gpu-activity"

# Kubeflow's own Notebook annotations (notebook-controller, controllers/culling_controller.go).
# Set by the dashboard's Stop and by the culler (value: RFC 3339 time), removed by Start:
# the notebook-controller then scales the StatefulSet to 0 replicas.
KUBEFLOW_STOPPED_ANNOTATION = "kubeflow-resource-stopped"
# The culler's clock. gpushift never writes either: a move must not make a notebook look
# busy or idle to the culler.
KUBEFLOW_LAST_ACTIVITY_ANNOTATION = "notebooks.kubeflow.org/last-activity"
KUBEFLOW_LAST_ACTIVITY_CHECK_ANNOTATION = "notebooks.kubeflow.org/last_activity_check_timestamp"
# Set by Kubeflow's spawner on the Notebook: "jupyter", "group-one" (VSCode), "group-two"
# (RStudio). It contains "notebook", so the notebook-controller does not copy it into the
# pod: the webhook learns it from its cache of Notebooks, the sidecar from its Notebook.
KUBEFLOW_SERVER_TYPE_ANNOTATION = "notebooks.kubeflow.org/server-type"

# Env var on the Notebook's notebook container, written by the guard when the gpushift
# sidecar could not start in its pod (image pull failure, crash loop): its value is the
# reason, a sentence. The webhook does not inject a pod whose notebook container carries
# it, and the server extension shows the optimizer off with that reason. It is in the
# Notebook's spec (the controller copies container specs into the StatefulSet's pod
# template; it never copies a later annotation), and the guard removes it while the
# Notebook is stopped, so the next Start tries the sidecar again.
OPTIMIZER_OFF_ENV = "GPUSHIFT_OPTIMIZER_OFF"


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The annotations of a Kubernetes object as read from the API ({} when it has none,
    or when its metadata or annotations are not mappings: nothing is validated yet)."""
    meta = (obj or {}).get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def json_object(value: object) -> dict[str, Any] | None:
    """The JSON object an annotation's value holds; None when the value is not a string
    or not a JSON object (annotations are written by anyone: never raise)."""
    if not isinstance(value, str):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
