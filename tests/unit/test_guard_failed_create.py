"""The guard on a pod the apiserver refused (FailedCreate on the StatefulSet): the pure
reading of the Events (failed_create), the decision (a newer one rolls a move to GPU back
at once with the apiserver's message; an older one, a CPU target, a GPU pod that exists
are left to the timeout), and one pass against an in-memory API (the Events it lists,
the rollback, an Event list it may not read)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from guard_fake_api import FakeApi
from guard_objects import (
    CONFIG,
    MIGRATION_ID,
    NS,
    T0,
    TIMEOUT,
    cpu_notebook,
    moved_as_the_sidecar_does,
    pod,
)

from gpushift_core.kube import KubeError
from gpushift_core.labels import MIGRATION_ANNOTATION
from gpushift_webhook.failed_create import event_time, newest_failed_create, selector
from gpushift_webhook.guard import MigrationGuard
from gpushift_webhook.guard_decision import ActionKind, decide
from gpushift_webhook.metrics import WebhookMetrics

LIMIT_RANGE = ('create Pod nb-0 in StatefulSet nb failed error: pods "nb-0" is forbidden: '
               "maximum nvidia.com/gpu usage per Container is 0, but limit is 2")
QUOTA = ('create Pod nb-0 in StatefulSet nb failed error: pods "nb-0" is forbidden: exceeded '
         "quota: gpu, requested: requests.nvidia.com/gpu=2, used: requests.nvidia.com/gpu=0, "
         "limited: requests.nvidia.com/gpu=1")


def failed_create(last: dt.datetime, message: str = LIMIT_RANGE, *, name: str = "nb",
                  kind: str = "StatefulSet", reason: str = "FailedCreate",
                  first: dt.datetime | None = None) -> dict[str, Any]:
    """A core/v1 Event as the StatefulSet controller's recorder writes it (whole seconds)."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.17f0", "namespace": NS,
                         "creationTimestamp": (first or last).strftime(stamp)},
            "involvedObject": {"apiVersion": "apps/v1", "kind": kind, "name": name,
                               "namespace": NS},
            "reason": reason, "message": message, "type": "Warning",
            "source": {"component": "statefulset-controller"},
            "firstTimestamp": (first or last).strftime(stamp),
            "lastTimestamp": last.strftime(stamp), "count": 1}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# ----------------------------------------------------------------------------- pure


def test_the_selector_names_the_statefulset_and_the_reason():
    assert selector("nb") == ("involvedObject.kind=StatefulSet,involvedObject.name=nb,"
                              "reason=FailedCreate")


def test_an_event_time_is_the_latest_it_carries():
    repeated = failed_create(at(30), first=at(-600))
    assert event_time(repeated) == at(30)
    series = {**failed_create(at(1)), "series": {"lastObservedTime": "2025-03-01T12:00:45.5Z",
                                                 "count": 3}}
    assert event_time(series) == at(45.5)
    assert event_time({"reason": "FailedCreate"}) is None


@pytest.mark.parametrize(("events", "expected"), [
    ([], None),
    ([failed_create(at(-1))], None),  # before the move (a second earlier)
    ([failed_create(at(0.0))], LIMIT_RANGE),  # the same second as the patch counts
    ([failed_create(at(3)), failed_create(at(9), QUOTA)], QUOTA),  # the newest
    ([failed_create(at(3), name="other")], None),
    ([failed_create(at(3), kind="ReplicaSet")], None),
    ([failed_create(at(3), reason="SuccessfulCreate")], None),
    ([failed_create(at(5), first=at(-3600))], LIMIT_RANGE),  # an old Event seen again
])
def test_only_a_failed_create_of_this_statefulset_since_the_move_counts(events, expected):
    found = newest_failed_create(events, "nb", T0 + dt.timedelta(microseconds=700_000))
    assert (None if found is None else found["message"]) == expected


# ----------------------------------------------------------------------------- decide


def test_a_newer_failed_create_rolls_back_at_once_with_the_apiservers_message():
    moved = moved_as_the_sidecar_does(cpu_notebook())
    action = decide(moved, None, at(2), TIMEOUT, failed_creates=[failed_create(at(1))])
    assert action.kind is ActionKind.ROLLBACK
    assert (action.reason, action.reason_class) == (LIMIT_RANGE, "failed_create")
    assert action.delete_pod_uid is None and action.migration is not None
    assert action.migration.id == MIGRATION_ID


def test_an_older_failed_create_is_ignored_and_the_timeout_decides():
    moved = moved_as_the_sidecar_does(cpu_notebook())
    old = [failed_create(at(-120))]
    assert decide(moved, None, at(2), TIMEOUT, failed_creates=old).kind is ActionKind.NONE
    late = decide(moved, None, at(TIMEOUT + 1), TIMEOUT, failed_creates=old)
    assert late.kind is ActionKind.ROLLBACK and late.reason_class == "pod_missing"


def test_a_gpu_pod_that_exists_after_all_waits_for_the_timeout():
    moved = moved_as_the_sidecar_does(cpu_notebook())
    pending = pod(moved)  # a later try of the StatefulSet got through
    action = decide(moved, pending, at(5), TIMEOUT, failed_creates=[failed_create(at(1))])
    assert action.kind is ActionKind.NONE
    ready = pod(moved, ready=True)
    assert decide(moved, ready, at(5), TIMEOUT,
                  failed_creates=[failed_create(at(1))]).kind is ActionKind.NONE


def test_a_move_to_cpu_is_left_to_the_timeout():
    gpu_nb = moved_as_the_sidecar_does(cpu_notebook())
    to_cpu = moved_as_the_sidecar_does(gpu_nb, target="cpu")
    action = decide(to_cpu, None, at(2), TIMEOUT, failed_creates=[failed_create(at(1))])
    assert action.kind is ActionKind.NONE


@pytest.mark.parametrize("phase", ["requested", "checkpointing", "restoring", "done"])
def test_unguarded_phases_ignore_failed_creates(phase):
    moved = moved_as_the_sidecar_does(cpu_notebook(), phase=phase)
    action = decide(moved, None, at(2), TIMEOUT, failed_creates=[failed_create(at(1))])
    assert action.kind is ActionKind.NONE


# ----------------------------------------------------------------------------- one pass


async def test_one_pass_reads_the_events_and_rolls_back_with_the_message():
    original = cpu_notebook()
    api = FakeApi()
    api.add_notebook(moved_as_the_sidecar_does(original))
    api.object_events.append(failed_create(at(1), QUOTA))
    metrics = WebhookMetrics()
    guard = MigrationGuard(api, CONFIG, clock=lambda: at(2), timeout_seconds=TIMEOUT,
                           metrics=metrics)
    [outcome] = await guard.pass_once()
    assert (outcome.action, outcome.applied, outcome.reason) == (
        ActionKind.ROLLBACK, True, QUOTA)
    nb = api.notebooks[(NS, "nb")]
    assert nb["spec"] == original["spec"]
    written = json.loads(nb["metadata"]["annotations"][MIGRATION_ANNOTATION])
    assert (written["id"], written["phase"], written["reason"]) == (
        MIGRATION_ID, "rolled_back", QUOTA)
    assert api.deletes == []  # there is no pod to delete
    [event] = api.events
    assert event["reason"] == "MigrationRolledBack" and QUOTA in event["message"]
    assert (NS, selector("nb")) in api.event_lists
    assert metrics.registry.get_sample_value("gpushift_webhook_guard_rollbacks_total",
                                             {"reason": "failed_create"}) == 1
    # Rolled back: the Events are not read again, nothing more happens.
    api.event_lists.clear()
    [again] = await guard.pass_once()
    assert again.action is ActionKind.NONE and api.event_lists == []


async def test_events_are_not_listed_while_a_gpu_pod_exists():
    api = FakeApi()
    moved = moved_as_the_sidecar_does(cpu_notebook())
    api.add_notebook(moved)
    api.add_pod(pod(moved))
    api.object_events.append(failed_create(at(1)))
    guard = MigrationGuard(api, CONFIG, clock=lambda: at(2), timeout_seconds=TIMEOUT)
    [outcome] = await guard.pass_once()
    assert outcome.action is ActionKind.NONE and api.event_lists == []


async def test_events_it_may_not_list_leave_the_move_to_the_timeout(caplog):
    api = FakeApi()
    api.add_notebook(moved_as_the_sidecar_does(cpu_notebook()))
    api.object_events.append(failed_create(at(1)))
    api.events_error = KubeError(403, "Forbidden", "events is forbidden")
    now = [at(2)]
    guard = MigrationGuard(api, CONFIG, clock=lambda: now[0], timeout_seconds=TIMEOUT)
    [outcome] = await guard.pass_once()
    assert outcome.action is ActionKind.NONE and api.patches == []
    assert "Events not listed" in caplog.text
    # No pod: the timeout counts from the first pass that found none.
    now[0] = at(TIMEOUT + 2)
    [outcome] = await guard.pass_once()
    assert outcome.action is ActionKind.ROLLBACK and "not created" in outcome.reason
