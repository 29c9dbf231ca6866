"""`gpushift-webhook uninstall-cleanup`: what the chart's pre-delete hook runs on
`helm uninstall`, before helm deletes the release's objects.

It deletes the MutatingWebhookConfiguration first -- so no pod creation waits on a
webhook that is going away -- and then the webhook's self-managed TLS Secret (CA key
included). Helm does not own that Secret: the webhook creates and rotates it at run
time (`self_managed`). Both are deleted by name only; an object already absent is
fine (the hook runs again after a failed uninstall).

Calls go through the cluster side's one client (`gpushift_core.kube.KubeApi.call`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpushift_core.kube import KubeApi, KubeError

__all__ = ["CleanupTargets", "cleanup"]


@dataclass(frozen=True)
class CleanupTargets:
    webhook_configuration: str
    """The release's MutatingWebhookConfiguration."""
    namespace: str
    """The release namespace (where the Secret is)."""
    secret_name: str | None
    """The self-managed TLS Secret; None when there is none to delete (certManager
    mode: cert-manager owns its Secret)."""


async def cleanup(api: KubeApi, targets: CleanupTargets) -> list[str]:
    """Delete the targets, configuration first; one line per object saying what was
    done. KubeError for a refusal (403: the hook's RBAC), never for an absent object."""
    done = [await _delete(
        f"MutatingWebhookConfiguration {targets.webhook_configuration}",
        api, api.admission_v1.delete_mutating_webhook_configuration,
        targets.webhook_configuration)]
    if targets.secret_name:
        done.append(await _delete(
            f"Secret {targets.namespace}/{targets.secret_name}",
            api, api.core_v1.delete_namespaced_secret, targets.secret_name,
            targets.namespace))
    return done


async def _delete(what: str, api: KubeApi, fn: Any, *args: str) -> str:
    try:
        # A delete by name is safe to repeat (a second one finds nothing), so it is
        # retried like a read when its answer is lost.
        await api.call(fn, *args, _preload_content=False)
    except KubeError as exc:
        if exc.not_found:
            return f"{what}: already absent"
        raise
    return f"{what}: deleted"
