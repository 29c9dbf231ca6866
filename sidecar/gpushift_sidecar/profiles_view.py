"""`GET /profiles`: the admin's GPU profiles as JupyterLab's "Move to GPU…" picker shows
them, each with what is free now, the namespace's quota left and whether a move to it
can start (pure; the reads are `capacity_gate` and `quota_gate`).

```json
{"default": "nvidia-1", "current": null, "capacityAt": "2026-12-04T21:00:00Z",
 "capacityNote": null,
 "profiles": [{"name": "nvidia-1", "resource": "nvidia.com/gpu", "count": 1,
   "gpuType": "NVIDIA-A100-SXM4-40GB", "free": 5, "largestFree": 4, "nodes": 2,
   "quotaLeft": 3, "current": false, "available": true, "why": null}]}
```

`free`, `largestFree` and `nodes` are null while the capacity is unknown (`capacityNote`
says why); `gpuType` then comes from the profile's node selector, if it names the model.
`quotaLeft` is null when no ResourceQuota of the namespace bounds the resource (or the
quotas could not be read); it counts what this pod holds of the resource as freed by the
move. A profile is not `available`, with `why` a sentence for the user, when the pod is
on it already, when no node has `count` free now (`capacity_gate.CapacityGate.refusal`,
the same rule as the move's 409 `no_free_gpu`), or when the quota would be exceeded (the
same rule as the move's 409 `quota_exceeded`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.gpu_capacity import GPU_TYPE_LABELS
from gpushift_sidecar.capacity_gate import CapacityGate, CapacityRead
from gpushift_sidecar.quota_check import check_quotas, quota_left

__all__ = ["profiles_document"]


def profiles_document(gate: CapacityGate, read: CapacityRead,
                      quotas: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The answer of `GET /profiles` (see the module)."""
    settings = gate.env.settings
    current = settings.matching_profile(gate.env.gpu)
    document = read.document
    return {
        "default": settings.default_profile or None,
        "current": None if current is None else current.name,
        "capacityAt": None if document is None else _iso(document.at),
        "capacityNote": read.note,
        "profiles": [_entry(gate, read, quotas, p, current is not None
                            and p.name == current.name) for p in settings.profiles],
    }


def _entry(gate: CapacityGate, read: CapacityRead,
           quotas: Sequence[Mapping[str, Any]] | None, profile: GpuProfile,
           is_current: bool) -> dict[str, Any]:
    published = read.entry(profile.name)
    gpu = gate.env.gpu
    held = gpu.count if gpu is not None and gpu.resource == profile.resource else 0
    left = None if quotas is None else quota_left(quotas, profile.resource, held=held)
    why: str | None = None
    if is_current:
        why = f"This notebook runs on {profile.name} already."
    elif (no_gpu := gate.refusal(read, profile)) is not None:
        why = no_gpu.short
    elif quotas is not None and (over := check_quotas(
            quotas, profile.resource, profile.count, held=held)) is not None:
        why = f"Your namespace's GPU quota does not allow it: {over.message}."
    return {
        "name": profile.name,
        "resource": profile.resource,
        "count": profile.count,
        "gpuType": _gpu_type(published, profile),
        "free": _number(published, "free"),
        "largestFree": _number(published, "largestFree"),
        "nodes": _number(published, "nodes"),
        "quotaLeft": left,
        "current": is_current,
        "available": why is None,
        "why": why,
    }


def _gpu_type(published: Mapping[str, Any] | None, profile: GpuProfile) -> str | None:
    if published is not None:
        value = published.get("gpuType")
        return value if isinstance(value, str) and value else None
    return next((profile.node_selector[label] for label in GPU_TYPE_LABELS
                 if profile.node_selector.get(label)), None)


def _number(published: Mapping[str, Any] | None, key: str) -> int | None:
    value = None if published is None else published.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
