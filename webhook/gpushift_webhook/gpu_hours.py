"""GPU-hours per namespace, notebook and profile, from the Notebooks as the watch sees
them (pure: Notebooks and times in, totals out).

The sidecar's own metrics live on each pod's loopback and end with the pod, and a move
recreates the pod; the webhook Deployment follows every Notebook for the guard anyway
(`notebook_watch`), so it keeps the totals, and they survive every move. What counts:

* **held**: a Notebook whose pod spec asks for a GPU (a nonzero limit of one of the
  admin's GPU resources), that is not stopped (Kubeflow's `kubeflow-resource-stopped`)
  and whose StatefulSet has a ready replica (`status.readyReplicas`, the
  notebook-controller's), in GPU-seconds (a notebook with 2 GPUs holds 2 per second).
  It ends when the spec loses its GPU (the move's patch), the Notebook is stopped or
  deleted, or no replica is ready. The profile is the one the spec's scheduling fields
  show (`gpushift_core.pod_profile`; "" when none fits).
* **reclaimed**: after a move to CPU whose trigger was `idle` (the migration annotation
  says so), the time the notebook then spends off the GPU — until it holds one again or
  is stopped or deleted — times the GPUs it last held (1 when this process never saw it
  hold one). What an idle move gave back to the cluster.
* **busy**: the seconds of GPU work the sidecar of the notebook's GPU pod reports in
  the annotation `gpushift.io/notebook-gpu-activity` (`gpushift_core.gpu_activity`: a
  GPU cell running, or NVML utilisation at or above the admin's threshold), times the
  GPUs it holds (or last held): each increase of the same pod's count, a new pod's whole
  count. What a pod reported before this process first saw the Notebook is not counted.
  held minus busy is the GPU time held idle.
* **moves**: each move once, when its migration annotation reaches an end (`done`,
  `failed`, `rolled_back`, `cancelled`), by target, trigger and outcome. A move that
  ended before this process first saw the Notebook is not counted. With it, the seconds
  the move spent in each phase (the sidecar's `phases` in the annotation, when present)
  go into `phase_durations`, by target and phase.

Every replica keeps its own totals from the moment it started following: sum nothing
across replicas; take the `max` over replicas (the chart's rules and dashboard do). A
deleted Notebook's totals are kept for `retain_deleted_seconds`, so the last scrape
sees its final values, then dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpushift_core.admin_settings import GpuFacts, GpuProfile
from gpushift_core.gpu_activity import GpuActivity, read_gpu_activity
from gpushift_core.labels import MIGRATION_ANNOTATION, annotations_of, json_object
from gpushift_core.notebook_stop import stopped
from gpushift_core.pod_profile import profile_of_pod

__all__ = ["DURATION_BUCKETS", "Durations", "GpuHours", "MoveKey", "NotebookGpu",
           "notebook_gpu"]

ENDED = ("done", "failed", "rolled_back", "cancelled")
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Upper bounds (seconds) of the phase-duration histogram's buckets (+Inf besides)."""

Key = tuple[str, str]
MoveKey = tuple[str, str, str, str]
"""(namespace, target, trigger, outcome) of counted moves."""


@dataclass(frozen=True)
class NotebookGpu:
    """What one Notebook says about its GPU, read by `notebook_gpu`."""

    held: bool
    """It holds a GPU now (see the module's doc)."""
    profile: str
    """The profile its spec shows ("" when it holds none or no profile fits)."""
    migration: tuple[str, str, str, str] | None
    """(id, phase, target, trigger) of its migration annotation; None without one."""
    gpus: int = 0
    """How many GPUs it holds (0 when it holds none)."""
    phases: tuple[tuple[str, float], ...] = ()
    """Seconds its migration spent in each phase (once it ended; () without them)."""


@dataclass
class Durations:
    """A histogram's data: counts per bucket of DURATION_BUCKETS (the last: above all),
    their sum and count."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
                     len(DURATION_BUCKETS))
        self.buckets[index] += 1
        self.total += seconds
        self.count += 1


def notebook_gpu(notebook: Mapping[str, Any], gpu_resources: Sequence[str],
                 profiles: Sequence[GpuProfile]) -> NotebookGpu:
    spec = ((notebook.get("spec") or {}).get("template") or {}).get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    gpu = _gpu_of(spec, gpu_resources)
    status = notebook.get("status")
    ready = isinstance(status, Mapping) and _int(status.get("readyReplicas")) > 0
    held = gpu is not None and ready and not stopped(notebook)
    profile = profile_of_pod(spec, gpu, profiles) if held else ""
    return NotebookGpu(held, profile, _migration(notebook),
                       gpu.count if held and gpu is not None else 0, _phases(notebook))


@dataclass
class _Notebook:
    held_since: float | None = None
    profile: str = ""
    gpus: int = 0
    """GPUs held since `held_since`; after it ends, the GPUs it last held (what an idle
    move gives back)."""
    reclaimed_since: float | None = None
    ended_migration: str = ""
    """Id of the last migration seen ended (counted once)."""
    deleted_at: float | None = None
    activity_pod: str = ""
    """The pod of the last GPU activity report seen, and its busy seconds then."""
    activity_busy: float = 0.0

    def held_for(self, now: float) -> float:
        """GPU-seconds held since `held_since` (0 when not holding)."""
        return 0.0 if self.held_since is None else self.gpus * max(0.0, now - self.held_since)

    def reclaimed_for(self, now: float) -> float:
        """GPU-seconds given back since `reclaimed_since` (0 when not off after idle)."""
        return 0.0 if self.reclaimed_since is None else self.gpus * max(
            0.0, now - self.reclaimed_since)


@dataclass
class GpuHours:
    """The totals; `observe` every change of a Notebook, read them with `held_seconds`,
    `reclaimed_seconds` and `moves`."""

    gpu_resources: Sequence[str]
    profiles: Sequence[GpuProfile] = ()
    retain_deleted_seconds: float = 3600.0
    _notebooks: dict[Key, _Notebook] = field(default_factory=dict)
    _held: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _reclaimed: dict[Key, float] = field(default_factory=dict)
    _moves: dict[MoveKey, int] = field(default_factory=dict)
    _busy: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _durations: dict[tuple[str, str], Durations] = field(default_factory=dict)

    def observe(self, key: Key, notebook: Mapping[str, Any] | None, now: float) -> None:
        """The Notebook `key` as it is at `now` (None: deleted)."""
        seen = key in self._notebooks
        nb = self._notebooks.setdefault(key, _Notebook())
        state = (notebook_gpu(notebook, self.gpu_resources, self.profiles)
                 if notebook is not None else NotebookGpu(False, "", None))
        if nb.held_since is not None and (not state.held or state.profile != nb.profile
                                          or state.gpus != nb.gpus):
            self._add_held(key, nb, now)
        if state.held:
            self._end_reclaim(key, nb, now)
            if nb.held_since is None:
                nb.held_since, nb.profile, nb.gpus = now, state.profile, state.gpus
        elif notebook is None or stopped(notebook):
            self._end_reclaim(key, nb, now)
        elif state.migration is not None and nb.reclaimed_since is None and (
                state.migration[2], state.migration[3]) == ("cpu", "idle") \
                and _spec_gpu(notebook, self.gpu_resources) is None:
            nb.reclaimed_since = now
            nb.gpus = nb.gpus or 1  # moved before this replica saw it hold: at least one
        self._count_move(key, nb, state, counted_before=seen)
        activity = read_gpu_activity(notebook) if notebook is not None else None
        if activity is not None:
            self._count_busy(key, nb, activity, counted_before=seen)
        nb.deleted_at = now if notebook is None else None

    def replace(self, notebooks: Mapping[Key, Mapping[str, Any]], now: float) -> None:
        """A fresh list: every Notebook in it observed, every one missing from it deleted."""
        for key in [k for k, nb in self._notebooks.items()
                    if k not in notebooks and nb.deleted_at is None]:
            self.observe(key, None, now)
        for key, notebook in notebooks.items():
            self.observe(key, notebook, now)

    # -- reading -------------------------------------------------------------------------

    def held_seconds(self, now: float) -> dict[tuple[str, str, str], float]:
        """GPU-seconds held, by (namespace, notebook, profile), up to `now`."""
        out = dict(self._held)
        for (namespace, name), nb in self._notebooks.items():
            if nb.held_since is not None:
                k = (namespace, name, nb.profile)
                out[k] = out.get(k, 0.0) + nb.held_for(now)
        return out

    def reclaimed_seconds(self, now: float) -> dict[Key, float]:
        """GPU-seconds given back by idle moves, by (namespace, notebook), up to `now`."""
        out = dict(self._reclaimed)
        for key, nb in self._notebooks.items():
            if nb.reclaimed_since is not None:
                out[key] = out.get(key, 0.0) + nb.reclaimed_for(now)
        return out

    def busy_seconds(self) -> dict[tuple[str, str, str], float]:
        """GPU-seconds of GPU work, by (namespace, notebook, profile), as reported."""
        return dict(self._busy)

    def phase_durations(self) -> dict[tuple[str, str], Durations]:
        """Seconds ended moves spent in each phase, by (target, phase)."""
        return dict(self._durations)

    def holding(self) -> dict[tuple[str, str], int]:
        """Notebooks holding a GPU now, by (namespace, profile)."""
        out: dict[tuple[str, str], int] = {}
        for (namespace, _), nb in self._notebooks.items():
            if nb.held_since is not None:
                out[namespace, nb.profile] = out.get((namespace, nb.profile), 0) + 1
        return out

    def moves(self) -> dict[MoveKey, int]:
        return dict(self._moves)

    def prune(self, now: float) -> None:
        """Forget Notebooks deleted more than `retain_deleted_seconds` ago."""
        gone = {k for k, nb in self._notebooks.items() if nb.deleted_at is not None
                and now - nb.deleted_at > self.retain_deleted_seconds}
        for key in gone:
            del self._notebooks[key]
            self._reclaimed.pop(key, None)
        for totals in (self._held, self._busy):
            for k in [k for k in totals if (k[0], k[1]) in gone]:
                del totals[k]

    # -- bookkeeping ---------------------------------------------------------------------

    def _add_held(self, key: Key, nb: _Notebook, now: float) -> None:
        assert nb.held_since is not None
        k = (key[0], key[1], nb.profile)
        self._held[k] = self._held.get(k, 0.0) + nb.held_for(now)
        nb.held_since = None

    def _end_reclaim(self, key: Key, nb: _Notebook, now: float) -> None:
        if nb.reclaimed_since is not None:
            self._reclaimed[key] = self._reclaimed.get(key, 0.0) + nb.reclaimed_for(now)
            nb.reclaimed_since = None

    def _count_move(self, key: Key, nb: _Notebook, state: NotebookGpu, *,
                    counted_before: bool) -> None:
        if state.migration is None:
            return
        mid, phase, target, trigger = state.migration
        if phase not in ENDED or mid == nb.ended_migration:
            return
        nb.ended_migration = mid
        if counted_before:  # an end seen at first sight happened before we looked
            k = (key[0], target, trigger, phase)
            self._moves[k] = self._moves.get(k, 0) + 1
            for name, seconds in state.phases:
                self._durations.setdefault((target, name), Durations()).observe(seconds)

    def _count_busy(self, key: Key, nb: _Notebook, activity: GpuActivity, *,
                    counted_before: bool) -> None:
        if activity.pod == nb.activity_pod:
            added = max(0.0, activity.busy - nb.activity_busy)
        else:  # a new pod counts from 0; at first sight, its past is not ours to count
            added = activity.busy if counted_before else 0.0
        if activity.pod != nb.activity_pod or activity.busy > nb.activity_busy:
            nb.activity_pod, nb.activity_busy = activity.pod, activity.busy
        if added > 0:
            k = (key[0], key[1], nb.profile)
            self._busy[k] = self._busy.get(k, 0.0) + added * (nb.gpus or 1)


def _gpu_of(spec: Mapping[str, Any], gpu_resources: Sequence[str]) -> GpuFacts | None:
    for container in spec.get("containers") or []:
        limits = ((container if isinstance(container, Mapping) else {}).get(
            "resources") or {}).get("limits") or {}
        for resource in gpu_resources:
            count = _int(limits.get(resource)) if isinstance(limits, Mapping) else 0
            if count > 0:
                return GpuFacts(resource, count)
    return None


def _spec_gpu(notebook: Mapping[str, Any], gpu_resources: Sequence[str]) -> GpuFacts | None:
    spec = ((notebook.get("spec") or {}).get("template") or {}).get("spec")
    return _gpu_of(spec if isinstance(spec, Mapping) else {}, gpu_resources)


def _migration(notebook: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    data = json_object(annotations_of(notebook).get(MIGRATION_ANNOTATION))
    if data is None or not isinstance(data.get("id"), str):
        return None
    return (data["id"], str(data.get("phase") or ""), str(data.get("target") or ""),
            str(data.get("trigger") or ""))


def _phases(notebook: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    data = json_object(annotations_of(notebook).get(MIGRATION_ANNOTATION))
    phases = data.get("phases") if data is not None else None
    if not isinstance(phases, dict):
        return ()
    return tuple((str(name), float(seconds)) for name, seconds in sorted(phases.items())
                 if isinstance(seconds, int | float) and not isinstance(seconds, bool)
                 and 0 <= seconds < 1e7)


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
