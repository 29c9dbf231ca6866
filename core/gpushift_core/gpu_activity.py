"""The GPU work of a notebook's pod, as its sidecar tells it to the cluster side (pure).

The sidecar of a GPU pod adds up the seconds its pod did GPU work and writes them to the
Notebook annotation `gpushift.io/notebook-gpu-activity` (`GPU_ACTIVITY_ANNOTATION`); the
webhook Deployment, which follows every Notebook, turns the increases into
`gpushift_gpu_busy_seconds_total`. The value is compact JSON:

    {"pod": "<pod uid>", "busy": <seconds of GPU work on that pod>,
     "lastWork": <epoch seconds of the last GPU work, or null>, "at": <epoch seconds>}

`busy` only grows while the pod lives; a new pod starts again from 0 under its own uid,
so a reader counts the increase for the same pod and the whole value for a new one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpushift_core.labels import GPU_ACTIVITY_ANNOTATION, annotations_of, json_object

__all__ = ["GpuActivity", "read_gpu_activity"]


@dataclass(frozen=True)
class GpuActivity:
    pod: str
    """The uid of the pod whose work this is."""
    busy: float
    """Seconds of GPU work on that pod so far."""
    last_work: float | None
    """When it last did GPU work (epoch seconds; None: not yet)."""
    at: float
    """When the sidecar wrote this (epoch seconds)."""

    def to_annotation(self) -> str:
        return json.dumps({"pod": self.pod, "busy": round(self.busy, 3),
                           "lastWork": (None if self.last_work is None
                                        else round(self.last_work, 3)),
                           "at": round(self.at, 3)}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: object) -> GpuActivity | None:
        """None for anything but the JSON above (it is only a report: never raise)."""
        data = json_object(text)
        if data is None or not isinstance(data.get("pod"), str):
            return None
        busy, at, last = (_number(data.get(k)) for k in ("busy", "at", "lastWork"))
        if busy is None or at is None or busy < 0:
            return None
        return cls(data["pod"], busy, last, at)


def read_gpu_activity(notebook: Mapping[str, Any]) -> GpuActivity | None:
    """The Notebook's activity annotation, parsed (None when absent or unreadable)."""
    return GpuActivity.parse(annotations_of(notebook).get(GPU_ACTIVITY_ANNOTATION))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
