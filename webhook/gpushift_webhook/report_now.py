"""`gpushift-report --from-cluster`: who holds a GPU now, for how long without GPU work,
and under which idle timeout, from the Notebooks, their pods and their Events alone, for
clusters without Prometheus (pure: objects in, rows and text out; `report_cluster`
reads them).

What it reads, per Notebook:

* whether it holds a GPU and how many (`gpu_hours.notebook_gpu`: GPUs in the spec, not
  stopped, a ready replica) and the profile its spec shows;
* the sidecar's activity annotation `gpushift.io/notebook-gpu-activity`
  (`gpushift_core.gpu_activity`: the pod's uid, its GPU-work seconds, its last GPU work),
  written as a GPU pod's sidecar starts and then about every minute when it changed; it
  speaks for the pod whose uid it names only (a recreated pod starts over);
* its idle timeout: the admin's, or its annotation clamped into the admin's bounds, and
  whether it is pinned (`gpushift_core.idle_timeout`, what the sidecar's timer uses);
* its last move (the migration annotation) and the gpushift Events about it.

What it cannot know: anything before the Events' retention (the API server's
`--event-ttl`, one hour by default), GPU-hours over any longer time (that needs the
webhook's metrics in Prometheus), and GPU work on a pod whose sidecar does not write the
activity annotation (older sidecars).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpushift_core.admin_settings import GpuProfile, IdleSettings
from gpushift_core.gpu_activity import GpuActivity
from gpushift_core.idle_timeout import pin_requested, resolve_timeout, timeout_annotation
from gpushift_core.labels import GPU_ACTIVITY_ANNOTATION, MIGRATION_ANNOTATION
from gpushift_core.timestamps import parse_utc
from gpushift_webhook.gpu_hours import notebook_gpu
from gpushift_webhook.report import duration_text
from gpushift_webhook.report_text import table

__all__ = [
    "STALE_ACTIVITY_SECONDS",
    "ClusterFacts",
    "HolderNow",
    "NotebookObjects",
    "holder_now",
    "now_data",
    "now_table",
]

STALE_ACTIVITY_SECONDS = 300.0
"""An activity annotation older than this: its sidecar has stopped writing it."""
CANNOT_KNOW = ("Without Prometheus this report sees only the present: who holds a GPU "
               "now and the gpushift Events the API server still keeps (its --event-ttl, "
               "one hour by default). GPU-hours held, busy or given back over any longer "
               "time need the webhook's metrics (gpushift-report --prometheus URL).")


@dataclass(frozen=True)
class ClusterFacts:
    """The admin's settings the report applies."""

    gpu_resources: Sequence[str]
    """Extended resources that count as a GPU."""
    profiles: Sequence[GpuProfile]
    """GPU profiles, to name the one a spec shows."""
    idle: IdleSettings
    """The idle timeout, its bounds and whether pinning is allowed."""
    source: str
    """Where they come from, said in the output (a file, or the defaults)."""


@dataclass(frozen=True)
class NotebookObjects:
    """One Notebook as read from the API, with its pod and its Events."""

    notebook: Mapping[str, Any]
    pod: Mapping[str, Any] | None
    """Its pod <name>-0, None when there is none."""
    events: Sequence[Mapping[str, Any]]
    """The core/v1 Events about it."""


@dataclass(frozen=True)
class HolderNow:
    namespace: str
    notebook: str
    gpus: int
    """GPUs held now (0: none)."""
    profile: str
    idle_seconds: float | None
    """Seconds since its last GPU work on this pod (since the pod started when it did
    none); None when not known (no current activity annotation)."""
    idle_note: str
    """Why `idle_seconds` is what it is, or why it is unknown."""
    timeout_seconds: int
    timeout_note: str
    """"default", "annotation", or why the annotation was not taken as written."""
    pinned: bool
    last_move: str
    """"<phase> to <target> (<trigger>) at <time>", or "" without one."""
    events: int
    """gpushift Events about it still kept."""
    oldest_event: float | None
    """Epoch of the oldest of those, None without any."""


def holder_now(objects: NotebookObjects, facts: ClusterFacts, now: float) -> HolderNow:
    nb = objects.notebook
    meta = nb.get("metadata") or {}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    state = notebook_gpu(nb, facts.gpu_resources, facts.profiles)
    idle_seconds, idle_note = _idle(annotations.get(GPU_ACTIVITY_ANNOTATION), objects.pod,
                                    now) if state.held else (None, "")
    found = timeout_annotation(annotations)
    timeout = (resolve_timeout(facts.idle, None) if found is None
               else resolve_timeout(facts.idle, found[1], found[0]))
    stamps = [t for t in (_event_time(e) for e in objects.events if _ours(e))
              if t is not None]
    return HolderNow(
        str(meta.get("namespace") or ""), str(meta.get("name") or ""), state.gpus,
        state.profile, idle_seconds, idle_note, timeout.seconds,
        timeout.reason or timeout.source,
        facts.idle.allow_pin and pin_requested(annotations),
        _last_move(annotations.get(MIGRATION_ANNOTATION)), len(stamps),
        min(stamps) if stamps else None)


def _idle(text: str | None, pod: Mapping[str, Any] | None,
          now: float) -> tuple[float | None, str]:
    if text is None:
        return None, "no activity annotation (sidecar older than GPU work reporting)"
    activity = GpuActivity.parse(text)
    if activity is None:
        return None, "activity annotation unreadable (not the sidecar's JSON)"
    pod_meta = (pod or {}).get("metadata") or {}
    if pod is None or activity.pod != pod_meta.get("uid"):
        return None, "activity annotation is from an earlier pod"
    age = now - activity.at
    stale = (f"; annotation {duration_text(age)} old: sidecar silent?"
             if age > STALE_ACTIVITY_SECONDS else "")
    if activity.last_work is not None:
        return max(0.0, now - activity.last_work), "since its last GPU work" + stale
    started = parse_utc(((pod.get("status") or {}).get("startTime"))
                        or pod_meta.get("creationTimestamp"))
    if started is None:
        return None, "no GPU work on this pod; its start is unknown" + stale
    return max(0.0, now - started.timestamp()), "no GPU work since the pod started" + stale


def _last_move(text: str | None) -> str:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    return (f"{data.get('phase', '?')} to {str(data.get('target', '?')).upper()} "
            f"({data.get('trigger', '?')}) at {data.get('updated', '?')}")


def _ours(event: Mapping[str, Any]) -> bool:
    """Sent by gpushift (the sidecar, the guard: components "gpushift-..."), not re-emitted
    by Kubeflow's controller about the pod."""
    source = event.get("source")
    component = source.get("component") if isinstance(source, Mapping) else None
    return isinstance(component, str) and component.startswith("gpushift")


def _event_time(event: Mapping[str, Any]) -> float | None:
    for key in ("eventTime", "lastTimestamp", "firstTimestamp"):
        moment = parse_utc(event.get(key))
        if moment is not None:
            return moment.timestamp()
    moment = parse_utc((event.get("metadata") or {}).get("creationTimestamp"))
    return None if moment is None else moment.timestamp()


def _idle_text(h: HolderNow) -> str:
    return "n/a" if h.idle_seconds is None else duration_text(round(h.idle_seconds))


def now_table(holders: Sequence[HolderNow], facts: ClusterFacts, now: float) -> str:
    held = [h for h in holders if h.gpus > 0]
    lines = [f"GPUs held now ({len(held)} of {len(holders)} notebooks; admin settings: "
             f"{facts.source}, idle timeout {duration_text(facts.idle.timeout_seconds)})", ""]
    if held:
        lines += table(
            ["NAMESPACE/NOTEBOOK", "GPUS", "PROFILE", "IDLE FOR", "TIMEOUT", "PINNED",
             "WHY"],
            [[f"{h.namespace}/{h.notebook}", str(h.gpus), h.profile or "-", _idle_text(h),
              duration_text(h.timeout_seconds), "yes" if h.pinned else "no",
              h.idle_note] for h in sorted(held, key=_most_idle)],
            text_columns=(0, 2, 5, 6))
    else:
        lines.append("No notebook holds a GPU now.")
    moved = [h for h in holders if h.last_move]
    if moved:
        lines += ["", "Last move of each notebook (migration annotation):"]
        lines += ["  " + x for x in table(
            ["NAMESPACE/NOTEBOOK", "LAST MOVE", "EVENTS KEPT"],
            [[f"{h.namespace}/{h.notebook}", h.last_move, str(h.events)] for h in moved],
            text_columns=(0, 1))]
    stamps = [h.oldest_event for h in holders if h.oldest_event is not None]
    reach = (f"The oldest gpushift Event kept is {duration_text(round(now - min(stamps)))} "
             "old." if stamps else "No gpushift Event is kept.")
    lines += ["", "Notes:", f"- {CANNOT_KNOW}", f"- {reach}"]
    return "\n".join(lines) + "\n"


def _most_idle(h: HolderNow) -> tuple[float, str, str]:
    return (-(h.idle_seconds if h.idle_seconds is not None else -1.0), h.namespace,
            h.notebook)


def now_data(holders: Sequence[HolderNow], facts: ClusterFacts) -> dict[str, Any]:
    return {
        "settings": {"source": facts.source, "idleTimeoutSeconds": facts.idle.timeout_seconds,
                     "minSeconds": facts.idle.min_seconds,
                     "maxSeconds": facts.idle.max_seconds, "allowPin": facts.idle.allow_pin},
        "notebooks": [{"namespace": h.namespace, "notebook": h.notebook, "gpus": h.gpus,
                       "profile": h.profile, "idleSeconds": h.idle_seconds,
                       "idleNote": h.idle_note, "idleTimeoutSeconds": h.timeout_seconds,
                       "idleTimeoutNote": h.timeout_note, "pinned": h.pinned,
                       "lastMove": h.last_move, "eventsKept": h.events,
                       "oldestEvent": h.oldest_event}
                      for h in sorted(holders, key=lambda h: (h.namespace, h.notebook))],
        "cannotKnow": CANNOT_KNOW,
    }
