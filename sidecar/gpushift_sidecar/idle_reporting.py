"""What the idle loop shows and records (pure): the state word of `GET /idle`, the
Notebook annotations that configure the timer, the note an idle move carries and the
GPU-seconds that note says were reclaimed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gpushift_core.admin_settings import GpuFacts
from gpushift_core.idle_timeout import IDLE_TIMEOUT_ANNOTATIONS, PIN_ANNOTATIONS
from gpushift_core.labels import annotations_of
from gpushift_sidecar.idle import IdleState
from gpushift_sidecar.state import Migration, Phase

__all__ = ["api_state", "idle_annotations", "idle_note", "moving_away",
           "reclaimed_gpu_seconds"]

_NOTE = re.compile(r"no GPU work for (\d+)s on (\d+) GPU")


def api_state(state: IdleState, moving: bool) -> str:
    """The state the API shows: active, warning, moving, inert or pinned."""
    if state is IdleState.INERT:
        return "inert"
    if moving or state is IdleState.MOVE:
        return "moving"
    if state is IdleState.PINNED:
        return "pinned"
    return "warning" if state is IdleState.WARNING else "active"


def idle_annotations(notebook: Mapping[str, Any]) -> dict[str, str]:
    """The Notebook's annotations that configure the idle timer."""
    keys = (*IDLE_TIMEOUT_ANNOTATIONS, *PIN_ANNOTATIONS)
    return {k: str(v) for k, v in annotations_of(notebook).items() if k in keys}


def idle_note(timeout: int, gpu: GpuFacts | None) -> str:
    """The note an idle move carries: for people, and for the reclaimed-time metric of
    the new pod's sidecar (`reclaimed_gpu_seconds`)."""
    count, resource = (gpu.count, gpu.resource) if gpu is not None else (0, "none")
    return (f"moved to CPU on idle: no GPU work for {timeout}s on {count} GPU(s) "
            f"({resource})")


def reclaimed_gpu_seconds(migration: Migration) -> float:
    """Estimate of the GPU idle time an idle move reclaimed, in GPU-seconds: the idle
    timeout it ran out times the GPUs it released (0 when the note is not there). How
    long the GPU would otherwise have stayed idle cannot be measured; the timeout is
    the idle time the timer saw, a conservative stand-in."""
    for note in migration.notes:
        match = _NOTE.search(note)
        if match:
            return float(int(match.group(1)) * int(match.group(2)))
    return 0.0


def moving_away(migration: Migration | None) -> bool:
    """A migration is taking the notebook away from this pod (not one that arrived)."""
    return (migration is not None and migration.active
            and migration.phase is not Phase.RESTORING)
