"""Label and annotation names shared by the webhook, the chart and (later) the sidecar."""

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
