"""The quota pre-check of a move to GPU: reads the namespace's ResourceQuotas and asks
`quota_check` (pure) whether the move fits.

A quota that cannot be read (403 where the sidecar's role lacks `resourcequotas list`,
an apiserver that does not answer within `timeout_seconds`) does not block the move: it
is logged, and the apiserver's own admission still refuses a GPU pod over the quota,
which the guard then rolls back at once (a FailedCreate Event on the StatefulSet).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from gpushift_core.kube import KubeError
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.quota_check import QuotaRefusal, check_quotas
from gpushift_sidecar.state import Migration, Target

__all__ = ["QuotaGate", "QuotaReader", "QuotaRefused"]

log = logging.getLogger("gpushift.sidecar")

# The user waits for the answer to "Move to GPU"; the check must not hold it for long.
DEFAULT_TIMEOUT_SECONDS = 5.0


class QuotaReader(Protocol):
    async def list_resource_quotas(self, namespace: str) -> list[dict[str, Any]]: ...


class QuotaRefused(Exception):
    """The move would exceed a ResourceQuota; nothing was changed."""

    def __init__(self, refusal: QuotaRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass
class QuotaGate:
    env: SidecarEnv
    kube: QuotaReader | None
    """None: no API client (the move then fails at the patch, with that reason)."""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """How long the quotas may take to read before the move goes ahead unchecked."""

    async def check(self, migration: Migration) -> QuotaRefusal | None:
        """The quota the move to GPU would exceed; None for a move to CPU, a profile the
        admin does not have (the runner fails it with that reason), or quotas that could
        not be read."""
        settings = self.env.settings
        profile = settings.profile(migration.profile or settings.default_profile)
        if migration.target is not Target.GPU or profile is None or self.kube is None:
            return None
        namespace = self.env.pod_namespace
        quotas = await self.read_quotas(migration.id)
        if quotas is None:
            return None
        refusal = check_quotas(quotas, profile.resource, profile.count,
                               held=self.held(profile.resource))
        if refusal is not None:
            log.warning("move to GPU refused by a ResourceQuota", extra={
                "namespace": namespace, "migration": migration.id,
                "quota": refusal.quota, "why": refusal.message})
        return refusal

    async def read_quotas(self, migration_id: str = "") -> list[dict[str, Any]] | None:
        """The namespace's ResourceQuotas; None when there is no client or they could
        not be read in time (logged)."""
        if self.kube is None:
            return None
        namespace = self.env.pod_namespace
        try:
            return await asyncio.wait_for(self.kube.list_resource_quotas(namespace),
                                          self.timeout_seconds)
        except (KubeError, TimeoutError) as exc:
            log.warning("ResourceQuotas not read; not checked", extra={
                "namespace": namespace, "migration": migration_id,
                "why": str(exc) or "no answer in time",
                "status": getattr(exc, "status", None)})
            return None

    def held(self, resource: str) -> int:
        """What this pod holds of `resource` (a move frees it)."""
        gpu = self.env.gpu
        return gpu.count if gpu is not None and gpu.resource == resource else 0
