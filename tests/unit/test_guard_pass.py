"""One pass of the migration guard against an in-memory API: the rollback with its pod
deletion, Event, metrics and log (and idempotence), pod preconditions and races with
other writers, a move to CPU marked failed, and a standby replica doing nothing."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import uuid
from typing import Any

from guard_fake_api import FakeApi
from guard_objects import (
    CONFIG,
    MIGRATION_ID,
    NS,
    SCHEDULER,
    T0,
    TIMEOUT,
    cpu_notebook,
    migration,
    moved_as_the_sidecar_does,
    pod,
    stuck_gpu,
)

from gpushift_core.labels import MIGRATION_ANNOTATION
from gpushift_webhook.guard import MigrationGuard
from gpushift_webhook.guard_decision import ActionKind
from gpushift_webhook.metrics import WebhookMetrics


def guard_for(api: FakeApi, now: dt.datetime, **kwargs: Any) -> MigrationGuard:
    return MigrationGuard(api, CONFIG, clock=lambda: now, timeout_seconds=TIMEOUT, **kwargs)


async def test_one_pass_rolls_back_deletes_the_stuck_pod_and_tells_the_story(caplog):
    original, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)
    metrics = WebhookMetrics()
    guard = guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT + 1), metrics=metrics)
    with caplog.at_level(logging.INFO, logger="gpushift.guard"):
        [outcome] = await guard.pass_once()
    assert (outcome.action, outcome.applied, outcome.pod_deleted) == (
        ActionKind.ROLLBACK, True, True)
    nb = api.notebooks[(NS, "nb")]
    assert nb["spec"] == original["spec"]
    written = json.loads(nb["metadata"]["annotations"][MIGRATION_ANNOTATION])
    assert (written["id"], written["phase"], written["reason"]) == (
        MIGRATION_ID, "rolled_back", SCHEDULER)
    assert (NS, "nb-0") not in api.pods
    assert api.deletes == [(stuck["metadata"]["uid"], "7")]
    assert len(api.patches) == 1
    [event] = api.events
    assert (event["reason"], event["type"]) == ("MigrationRolledBack", "Warning")
    assert "Insufficient nvidia.com/gpu" in event["message"]
    sample = metrics.registry.get_sample_value
    assert sample("gpushift_webhook_guard_rollbacks_total",
                  {"reason": "insufficient_resources"}) == 1
    assert sample("gpushift_webhook_guard_stuck_pods_deleted_total") == 1
    decisions = [r for r in caplog.records if r.getMessage() == "guard decision"]
    assert decisions and decisions[0].__dict__["migration_id"] == MIGRATION_ID
    assert decisions[0].__dict__["action"] == "rollback"
    assert {"namespace", "notebook", "phase", "reason"} <= set(decisions[0].__dict__)

    # Idempotent: the StatefulSet's new CPU pod appears; passes change nothing more.
    api.add_pod(pod(nb))
    for _ in range(2):
        [again] = await guard.pass_once()
        assert again.action is ActionKind.NONE
    assert len(api.patches) == 1 and len(api.events) == 1 and len(api.deletes) == 1


async def test_a_pod_that_turns_ready_just_before_the_patch_is_kept():
    _, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)
    ready = pod(moved, ready=True)
    ready["metadata"]["uid"] = stuck["metadata"]["uid"]

    def turn_ready() -> None:  # after the pass read the pod the first time
        api.after_get_pod = None
        api.add_pod(copy.deepcopy(ready))

    api.after_get_pod = turn_ready
    [outcome] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT)).pass_once()
    assert outcome.action is ActionKind.NONE
    assert api.notebooks[(NS, "nb")] == moved and not api.patches and not api.deletes


async def test_a_pod_recreated_in_between_is_not_deleted():
    _, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)
    other = pod(moved, scheduled=SCHEDULER)  # same name, another uid

    def replace_pod(attempt: int) -> None:
        api.add_pod(copy.deepcopy(other))

    api.before_patch = replace_pod
    [outcome] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT)).pass_once()
    assert outcome.applied and not outcome.pod_deleted
    assert api.pods[(NS, "nb-0")]["metadata"]["uid"] == other["metadata"]["uid"]
    assert "stuck pod" not in api.events[0]["message"]
    # The next pass finds it stuck on the rolled-back GPU spec and deletes that one.
    api.before_patch = None
    [cleanup] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT + 5)).pass_once()
    assert cleanup.action is ActionKind.DELETE_POD and cleanup.pod_deleted
    assert (NS, "nb-0") not in api.pods


async def test_a_new_move_patched_after_the_list_keeps_its_pending_pod():
    """The pass lists Notebooks, then reads each pod. A new move to GPU patched in
    between has a Pending GPU pod that must not be taken for the rolled-back move's."""
    _, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)
    [rollback] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT)).pass_once()
    assert rollback.pod_deleted
    # The StatefulSet made one more pod from the old (GPU) template: a DELETE_POD case...
    leftover = copy.deepcopy(stuck)
    leftover["metadata"]["uid"] = str(uuid.uuid4())
    api.add_pod(leftover)
    # ...but a new move lands right after the guard listed the Notebooks.
    new_move = copy.deepcopy(moved)
    new_move["metadata"]["annotations"][MIGRATION_ANNOTATION] = json.dumps(
        {"id": str(uuid.uuid4()), "phase": "recreating", "target": "gpu",
         "updated": (T0 + dt.timedelta(seconds=TIMEOUT + 4)).isoformat()})

    def new_move_lands() -> None:
        api.notebooks[(NS, "nb")] = copy.deepcopy(new_move)

    api.after_get_pod = new_move_lands
    [outcome] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT + 5)).pass_once()
    assert not outcome.pod_deleted
    assert api.pods[(NS, "nb-0")]["metadata"]["uid"] == leftover["metadata"]["uid"]
    assert not any(e["reason"] == "MigrationPodDeleted" for e in api.events)


async def test_a_concurrent_writer_makes_the_rollback_read_again():
    original, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)

    def other_writer(attempt: int) -> None:
        if attempt == 1:
            nb = api.notebooks[(NS, "nb")]
            nb["metadata"]["annotations"]["team.example/owner"] = "bob"
            nb["metadata"]["resourceVersion"] = "555"

    api.before_patch = other_writer
    [outcome] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT)).pass_once()
    assert outcome.applied
    nb = api.notebooks[(NS, "nb")]
    assert nb["spec"] == original["spec"]
    assert nb["metadata"]["annotations"]["team.example/owner"] == "bob"
    assert api.patches[0][0]["value"] == "555"


async def test_a_sidecar_that_moved_on_in_between_is_left_alone():
    _, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)

    def sidecar_advances(attempt: int) -> None:
        nb = api.notebooks[(NS, "nb")]
        nb["metadata"]["annotations"][MIGRATION_ANNOTATION] = migration("restoring")
        nb["metadata"]["resourceVersion"] = "556"

    api.before_patch = sidecar_advances
    [outcome] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT)).pass_once()
    assert not outcome.applied and not api.patches and not api.events


async def test_cpu_target_pass_marks_failed_with_a_warning_and_keeps_the_pod():
    gpu = cpu_notebook()
    gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] = "1"
    moved = moved_as_the_sidecar_does(gpu, target="cpu")
    stuck = pod(moved, scheduled="0/3 nodes are available: 3 Insufficient cpu.")
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)
    metrics = WebhookMetrics()
    [outcome] = await guard_for(api, T0 + dt.timedelta(seconds=TIMEOUT),
                                metrics=metrics).pass_once()
    assert (outcome.action, outcome.applied, outcome.pod_deleted) == (ActionKind.FAIL, True,
                                                                      False)
    assert api.notebooks[(NS, "nb")]["spec"] == moved["spec"]
    assert (NS, "nb-0") in api.pods and not api.deletes
    [event] = api.events
    assert (event["reason"], event["type"]) == ("MigrationFailed", "Warning")
    assert metrics.registry.get_sample_value(
        "gpushift_webhook_guard_failed_migrations_total",
        {"reason": "insufficient_resources"}) == 1
    assert not metrics.registry.get_sample_value(
        "gpushift_webhook_guard_rollbacks_total", {"reason": "insufficient_resources"})


async def test_a_standby_guard_does_nothing():
    _, moved, stuck = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    api.add_pod(stuck)
    guard = guard_for(api, T0 + dt.timedelta(hours=1), is_leader=lambda: False)
    assert await guard.pass_once() == []
    assert not api.patches and not api.events and not api.deletes


async def test_a_missing_pod_is_rolled_back_only_once_it_stayed_missing_for_the_timeout():
    # The pod of an arrived move deleted (an admin's troubleshooting): the first pass that
    # finds no pod starts the wait; a replacement in time ends it.
    _, moved, _ = stuck_gpu()
    api = FakeApi()
    api.add_notebook(moved)
    now = [T0 + dt.timedelta(seconds=10 * TIMEOUT)]
    guard = MigrationGuard(api, CONFIG, clock=lambda: now[0], timeout_seconds=TIMEOUT)
    [first] = await guard.pass_once()
    assert first.action is ActionKind.NONE and not api.patches
    now[0] += dt.timedelta(seconds=TIMEOUT - 1)
    [second] = await guard.pass_once()
    assert second.action is ActionKind.NONE and not api.patches
    now[0] += dt.timedelta(seconds=1)
    [third] = await guard.pass_once()
    assert (third.action, third.applied) == (ActionKind.ROLLBACK, True)
    written = json.loads(api.notebooks[(NS, "nb")]["metadata"]["annotations"][
        MIGRATION_ANNOTATION])
    assert written["reason"] == f"pod nb-0 not created after {int(TIMEOUT)} s"
