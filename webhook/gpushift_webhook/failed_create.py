"""The StatefulSet controller's FailedCreate Events, as the guard reads them (pure).

When the apiserver refuses pod `<name>-0` of a moved Notebook (a ResourceQuota, a
LimitRange, Pod Security, a missing RuntimeClass), no pod appears at all: the StatefulSet
controller records a Warning Event `FailedCreate` on StatefulSet `<name>` with the
apiserver's message ("create Pod nb-0 in StatefulSet nb failed error: pods "nb-0" is
forbidden: ...") and tries again with backoff. Waiting does not help, so the guard rolls
a move to GPU back at once with that message (`guard_decision.decide`).

Only an Event newer than the migration's `updated` time counts: one of an earlier move,
or of anything before the move, says nothing about this one. The Event's time is the
latest it carries (`series.lastObservedTime`, `lastTimestamp`, `eventTime`,
`firstTimestamp`, its creation): the controller's recorder folds repeats into one Event
and moves its `lastTimestamp` on. `lastTimestamp` has whole seconds, so it is compared
with `updated` cut to whole seconds: a refusal in the same second as the patch counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from gpushift_core.timestamps import parse_utc

__all__ = ["FAILED_CREATE", "event_time", "newest_failed_create", "selector"]

FAILED_CREATE = "FailedCreate"


def selector(statefulset: str) -> str:
    """The field selector of the FailedCreate Events of StatefulSet `statefulset`."""
    return (f"involvedObject.kind=StatefulSet,involvedObject.name={statefulset},"
            f"reason={FAILED_CREATE}")


def event_time(event: Mapping[str, Any]) -> dt.datetime | None:
    """The latest moment the Event carries; None when it carries none."""
    series = event.get("series") or {}
    meta = event.get("metadata") or {}
    times = [parse_utc(v) for v in (series.get("lastObservedTime"), event.get("lastTimestamp"),
                                 event.get("eventTime"), event.get("firstTimestamp"),
                                 meta.get("creationTimestamp"))]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def newest_failed_create(events: Sequence[Mapping[str, Any]], statefulset: str,
                         since: dt.datetime) -> Mapping[str, Any] | None:
    """The newest FailedCreate Event of StatefulSet `statefulset` at or after `since`
    (cut to whole seconds); None when there is none."""
    floor = since.replace(microsecond=0)
    newest: tuple[dt.datetime, Mapping[str, Any]] | None = None
    for event in events:
        involved = event.get("involvedObject") or {}
        if (event.get("reason") != FAILED_CREATE or involved.get("kind") != "StatefulSet"
                or involved.get("name") != statefulset):
            continue
        moment = event_time(event)
        if moment is None or moment < floor:
            continue
        if newest is None or moment > newest[0]:
            newest = (moment, event)
    return newest[1] if newest is not None else None


