"""The published GPU capacity, as the sidecar reads it: for `GET /profiles` and for the
`no_free_gpu` pre-check of a move to GPU.

The webhook's leader publishes what is free per profile in the ConfigMap the admin
settings name (`capacity_configmap`; `gpushift_core.capacity_document`). This reads it
with the pod's own ServiceAccount (the chart lets every ServiceAccount get that one
ConfigMap) within `timeout_seconds`. Whatever goes wrong -- nothing published, the
ConfigMap missing or unreadable, a document older than its `staleAfterSeconds` -- makes
the capacity unknown, with a sentence saying why (`CapacityRead.note`), and an unknown
capacity never refuses a move: the guard still rolls back a pod that finds no GPU.

The pre-check is deliberately simple and conservative: a move to GPU is refused only when
fresh capacity says no node the profile allows has `count` free (`largestFree < count`)
and this pod holds none of the profile's resource. A pod that holds GPUs of that
resource frees them on its own node when it moves, which the published numbers count as
taken, so it is never refused here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.capacity_document import (
    CAPACITY_KEY,
    CapacityDocument,
    parse_document,
    split_configmap_ref,
)
from gpushift_core.kube import KubeError
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.state import Migration, Target

__all__ = ["CapacityGate", "CapacityRead", "ConfigMapReader", "NoFreeGpu", "NoFreeGpuRefused"]

log = logging.getLogger("gpushift.sidecar")

# The user waits for the picker and for "Move to GPU"; the read must not hold them.
DEFAULT_TIMEOUT_SECONDS = 5.0


class ConfigMapReader(Protocol):
    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class CapacityRead:
    """One read of the published capacity."""

    document: CapacityDocument | None
    """The document as read (also when stale); None when none could be read."""
    note: str | None
    """Why the capacity is unknown (None: it is known and fresh)."""

    @property
    def known(self) -> bool:
        return self.document is not None and self.note is None

    def entry(self, profile: str) -> dict[str, Any] | None:
        """The profile's published entry, when the capacity is known and has one."""
        if not self.known or self.document is None:
            return None
        return self.document.profiles.get(profile)


@dataclass(frozen=True)
class NoFreeGpu:
    """Fresh capacity says no node the profile allows has `count` free."""

    profile: str
    """The profile the move asked for."""
    resource: str
    """Its extended resource."""
    count: int
    """How many it needs, on one node."""
    free: int
    """Free on all its nodes, as published."""
    largest_free: int
    """The most free on one of its nodes (below `count`)."""
    nodes: int
    """Nodes that could take it."""
    at: str
    """When the capacity was published (UTC, ISO 8601)."""

    @property
    def message(self) -> str:
        return (f"No GPU is free for profile {self.profile}: it needs {self.count} "
                f"{self.resource} "
                f"on one node, and the most free on one of its {self.nodes} node(s) is "
                f"{self.largest_free} ({self.free} free in all, as of {self.at}). Try "
                "another profile, or again later.")

    @property
    def short(self) -> str:
        """The reason in the picker, beside the row's own "N free on M nodes"."""
        return f"None of its nodes has {self.count} free now."

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "resource": self.resource, "count": self.count,
                "free": self.free, "largestFree": self.largest_free, "nodes": self.nodes,
                "capacityAt": self.at}


class NoFreeGpuRefused(Exception):
    """The move to GPU was refused: no GPU free for its profile; nothing was changed."""

    def __init__(self, refusal: NoFreeGpu) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass
class CapacityGate:
    env: SidecarEnv
    kube: ConfigMapReader | None
    """None: no API client (the capacity is then unknown)."""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """How long the ConfigMap may take to read before the capacity counts as unknown."""
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    """The clock staleness is judged on."""

    async def read(self) -> CapacityRead:
        ref = self.env.settings.capacity_configmap
        if not ref:
            return CapacityRead(None, "Free GPUs are not published on this cluster "
                                      "(the chart's capacity.enabled is off).")
        if self.kube is None:
            return CapacityRead(None, "Free GPUs cannot be read: this sidecar has no "
                                      "Kubernetes API access.")
        namespace, name = split_configmap_ref(ref)
        try:
            config_map = await asyncio.wait_for(self.kube.get_config_map(namespace, name),
                                                self.timeout_seconds)
        except (KubeError, TimeoutError) as exc:
            why = str(exc) or "no answer in time"
            log.warning("GPU capacity not read", extra={"configmap": ref, "why": why})
            return CapacityRead(None, f"Free GPUs could not be read ({why}).")
        text = ((config_map or {}).get("data") or {}).get(CAPACITY_KEY)
        if not isinstance(text, str):
            return CapacityRead(None, f"Free GPUs are not published yet (ConfigMap {ref} "
                                      f"has no {CAPACITY_KEY}).")
        try:
            document = parse_document(text)
        except ValueError as exc:
            return CapacityRead(None, f"Free GPUs could not be read: {exc}.")
        if document.stale(self.now()):
            return CapacityRead(document, (
                f"Free GPUs were last published at {_iso(document.at)}, more than "
                f"{document.stale_after_seconds:.0f} s ago: what is free now is unknown."))
        return CapacityRead(document, None)

    def refusal(self, read: CapacityRead, profile: GpuProfile) -> NoFreeGpu | None:
        """The no_free_gpu refusal of a move to `profile`, or None (see the module)."""
        entry = read.entry(profile.name)
        if entry is None or read.document is None:
            return None
        held = self.env.gpu
        if held is not None and held.resource == profile.resource:
            return None
        try:
            largest, free, nodes = (int(entry["largestFree"]), int(entry["free"]),
                                    int(entry["nodes"]))
        except (KeyError, TypeError, ValueError):
            return None
        if largest >= profile.count:
            return None
        return NoFreeGpu(profile.name, profile.resource, profile.count, free, largest,
                         nodes, _iso(read.document.at))

    async def check(self, migration: Migration) -> NoFreeGpu | None:
        """The refusal of a move to GPU; None for a move to CPU, an unknown profile (the
        runner fails it with that reason) or an unknown capacity."""
        settings = self.env.settings
        profile = settings.profile(migration.profile or settings.default_profile)
        if migration.target is not Target.GPU or profile is None:
            return None
        refusal = self.refusal(await self.read(), profile)
        if refusal is not None:
            log.warning("move to GPU refused: no GPU free", extra={
                "migration": migration.id, "profile": profile.name, "why": refusal.message})
        return refusal


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
