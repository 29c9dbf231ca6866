"""The published GPU capacity: the JSON the webhook writes into ConfigMap key
`capacity.json` and every sidecar reads (pure; one format for both sides).

```json
{"version": 1, "at": "2026-12-04T21:00:00Z", "intervalSeconds": 30,
 "staleAfterSeconds": 390,
 "profiles": {"nvidia-1": {"resource": "nvidia.com/gpu", "count": 1,
   "gpuType": "NVIDIA-A100-SXM4-40GB", "nodes": 2, "allocatable": 8, "requested": 3,
   "free": 5, "largestFree": 4}}}
```

The publisher writes only when something but `at` changed, and writes `at` again at least
every `refresh_seconds` (5 min) so that a reader can tell a live publisher from a dead one:
a document whose `at` is older than `staleAfterSeconds` (the refresh period plus three
publishing intervals) is stale, and readers treat the capacity as unknown.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.gpu_capacity import profile_capacity
from gpushift_core.timestamps import parse_utc

__all__ = [
    "CAPACITY_KEY",
    "CapacityDocument",
    "build_document",
    "parse_document",
    "same_content",
    "split_configmap_ref",
]

CAPACITY_KEY = "capacity.json"
VERSION = 1


@dataclass(frozen=True)
class CapacityDocument:
    """A capacity.json as read back."""

    at: dt.datetime
    """When the publisher last wrote it (UTC)."""
    stale_after_seconds: float
    """Older than this, the capacity is unknown."""
    profiles: dict[str, dict[str, Any]]
    """Each profile's entry (`ProfileCapacity.to_json`), by profile name."""

    def stale(self, now: dt.datetime) -> bool:
        return (now - self.at).total_seconds() > self.stale_after_seconds


def build_document(profiles: Sequence[GpuProfile], nodes: Sequence[Mapping[str, Any]],
                   pods: Sequence[Mapping[str, Any]], now: dt.datetime, *,
                   interval_seconds: float, refresh_seconds: float) -> dict[str, Any]:
    """The document for these profiles, nodes and non-terminated pods."""
    return {
        "version": VERSION,
        "at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "intervalSeconds": interval_seconds,
        "staleAfterSeconds": refresh_seconds + 3 * interval_seconds,
        "profiles": {p.name: profile_capacity(p, nodes, pods).to_json() for p in profiles},
    }


def same_content(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two documents say the same but for `at`."""
    if a is None or b is None:
        return a is b
    return {k: v for k, v in a.items() if k != "at"} == {
        k: v for k, v in b.items() if k != "at"}


def parse_document(text: str) -> CapacityDocument:
    """The document from its JSON; ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"capacity.json is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"capacity.json is not version {VERSION} of the format")
    at = parse_utc(data.get("at"))
    if at is None:
        raise ValueError("capacity.json has no valid `at`")
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or not all(isinstance(v, dict)
                                                 for v in profiles.values()):
        raise ValueError("capacity.json: `profiles` is not an object of objects")
    stale_after = data.get("staleAfterSeconds")
    if not isinstance(stale_after, int | float) or stale_after <= 0:
        raise ValueError("capacity.json: `staleAfterSeconds` is not a positive number")
    return CapacityDocument(at, float(stale_after), {str(k): dict(v)
                                                     for k, v in profiles.items()})


def split_configmap_ref(ref: str) -> tuple[str, str]:
    """("namespace", "name") of "namespace/name"; ValueError when it is not that."""
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"{ref!r} is not <namespace>/<name>")
    return namespace, name
