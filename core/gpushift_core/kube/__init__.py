"""The one Kubernetes client of the cluster side (`client.KubeApi`), its connection
(`connection`: the pod's ServiceAccount or a kubeconfig, one urllib3 pool; the official
`kubernetes` package is not used), its transport (timeouts, backoff) and its errors,
which carry the API's Status."""

from gpushift_core.kube.client import (
    NOTEBOOK_API,
    BuildOps,
    KubeApi,
    PatchResult,
    copied_to_pod,
)
from gpushift_core.kube.errors import KubeError, MaybeSent, PatchConflictError, Unreachable
from gpushift_core.kube.events import notebook_event
from gpushift_core.kube.transport import Retry

__all__ = [
    "NOTEBOOK_API",
    "BuildOps",
    "KubeApi",
    "KubeError",
    "MaybeSent",
    "PatchConflictError",
    "PatchResult",
    "Retry",
    "Unreachable",
    "copied_to_pod",
    "notebook_event",
]
