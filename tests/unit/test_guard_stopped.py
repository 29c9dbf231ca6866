"""Kubeflow's Stop and culler with the migration guard (pure part, and one pass against
the in-memory API): a move on a stopped Notebook is cancelled, not rolled back; a
Notebook stopped on a GPU goes back to its CPU profile while stopped (one created on a
GPU is left as it is); a Notebook that is not stopped is guarded as before. No patch of
the guard touches Kubeflow's culler annotations."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import jsonpatch
import pytest
from guard_fake_api import FakeApi
from guard_objects import (
    CONFIG,
    MIGRATION_ID,
    NS,
    PROFILE,
    SCHEDULER,
    T0,
    TIMEOUT,
    cpu_notebook,
    migration,
    moved_as_the_sidecar_does,
    pod,
    stuck_gpu,
)

from gpushift_core.labels import (
    KUBEFLOW_LAST_ACTIVITY_ANNOTATION,
    KUBEFLOW_LAST_ACTIVITY_CHECK_ANNOTATION,
    KUBEFLOW_STOPPED_ANNOTATION,
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
)
from gpushift_core.move_plan import plan_move
from gpushift_core.notebook_stop import STOPPED_DURING_MOVE, stop_refusal, stopped
from gpushift_webhook.guard import MigrationGuard
from gpushift_webhook.guard_decision import ActionKind, decide, rollback_patch
from gpushift_webhook.guard_stopped import action_patch, stop_patch

STOPPED_AT = "2025-03-01T12:00:05Z"
CULLER = {KUBEFLOW_LAST_ACTIVITY_ANNOTATION: "2025-03-01T11:59:00Z",
          KUBEFLOW_LAST_ACTIVITY_CHECK_ANNOTATION: "2025-03-01T12:00:00Z"}


def stop(nb: dict[str, Any]) -> dict[str, Any]:
    """The Notebook after Kubeflow's Stop (or the culler), with the culler's clock."""
    out = copy.deepcopy(nb)
    out["metadata"]["annotations"].update({KUBEFLOW_STOPPED_ANNOTATION: STOPPED_AT, **CULLER})
    return out


def with_phase(nb: dict[str, Any], phase: str, target: str = "gpu") -> dict[str, Any]:
    out = copy.deepcopy(nb)
    out["metadata"]["annotations"][MIGRATION_ANNOTATION] = migration(phase, target)
    return out


def applied(nb: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(nb, ops)
    return result


# ----------------------------------------------------------------------------- reading


def test_stopped_is_the_key_whatever_its_value() -> None:
    nb = cpu_notebook()
    assert not stopped(nb) and stop_refusal(nb) is None
    assert not stopped(None) and not stopped({"metadata": {"annotations": None}})
    nb["metadata"]["annotations"][KUBEFLOW_STOPPED_ANNOTATION] = ""
    assert stopped(nb)
    assert stop_refusal(stop(cpu_notebook())) == (
        f"the notebook is stopped (kubeflow-resource-stopped since {STOPPED_AT}): start it "
        "before moving it")


# ----------------------------------------------------------------------------- decide()


@pytest.mark.parametrize("phase", ["requested", "checkpointing", "checkpointed", "patching",
                                   "recreating"])
@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_a_move_on_a_stopped_notebook_is_cancelled_at_once(phase: str, target: str) -> None:
    _, moved, _ = stuck_gpu()
    nb = stop(with_phase(moved, phase, target))
    for p in (None, pod(nb, scheduled=SCHEDULER)):
        action = decide(nb, p, T0, TIMEOUT)  # no timeout to wait for: nothing comes
        assert action.kind is ActionKind.CANCEL, action
        assert action.reason == STOPPED_DURING_MOVE == (
            "the notebook was stopped (kubeflow-resource-stopped) during the move")
        assert action.migration is not None and action.migration.id == MIGRATION_ID


@pytest.mark.parametrize("phase", ["restoring", "done", "failed", "rolled_back",
                                   "cancelled"])
def test_stopped_on_a_gpu_with_a_record_goes_back_to_cpu(phase: str) -> None:
    _, moved, _ = stuck_gpu()
    action = decide(stop(with_phase(moved, phase)), None, T0, TIMEOUT)
    assert action.kind is ActionKind.TO_CPU, action


def test_stopped_on_a_gpu_it_was_created_with_is_left_alone() -> None:
    created_on_gpu = copy.deepcopy(moved_as_the_sidecar_does(cpu_notebook()))
    del created_on_gpu["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION]
    created_on_gpu["metadata"]["annotations"][MIGRATION_ANNOTATION] = migration("done")
    action = decide(stop(created_on_gpu), None, T0, TIMEOUT)
    assert action.kind is ActionKind.NONE and "left as it is" in action.why
    no_migration = copy.deepcopy(created_on_gpu)
    del no_migration["metadata"]["annotations"][MIGRATION_ANNOTATION]
    assert decide(stop(no_migration), None, T0, TIMEOUT).kind is ActionKind.NONE


def test_stopped_on_cpu_is_nothing_to_do() -> None:
    nb = stop(with_phase(cpu_notebook(), "done", "cpu"))
    assert decide(nb, None, T0, TIMEOUT).kind is ActionKind.NONE


def test_not_stopped_is_guarded_as_before() -> None:
    _, moved, stuck = stuck_gpu()
    late = T0 + dt.timedelta(seconds=TIMEOUT + 1)
    assert decide(moved, stuck, T0, TIMEOUT).kind is ActionKind.NONE
    assert decide(moved, stuck, late, TIMEOUT).kind is ActionKind.ROLLBACK
    culler_only = copy.deepcopy(moved)
    culler_only["metadata"]["annotations"].update(CULLER)  # the clock is not a Stop
    assert decide(culler_only, stuck, late, TIMEOUT).kind is ActionKind.ROLLBACK


# ----------------------------------------------------------------------------- the patch


def test_cancelling_a_move_to_gpu_puts_the_cpu_profile_back_in_one_patch() -> None:
    original, moved, _ = stuck_gpu()
    nb = stop(moved)
    action = decide(nb, None, T0, TIMEOUT)
    patch = action_patch(nb, action, T0, CONFIG)
    assert patch is not None and patch.kind is ActionKind.CANCEL
    assert patch.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                                   "value": "101"}
    after = applied(nb, patch.operations)
    assert after["spec"] == original["spec"]
    annotations = after["metadata"]["annotations"]
    assert PREVIOUS_PROFILE_ANNOTATION not in annotations
    written = json.loads(annotations[MIGRATION_ANNOTATION])
    assert written == patch.annotation
    assert (written["id"], written["phase"], written["target"], written["reason"]) == (
        MIGRATION_ID, "cancelled", "gpu", STOPPED_DURING_MOVE)
    assert annotations[KUBEFLOW_STOPPED_ANNOTATION] == STOPPED_AT  # Start is the user's
    assert "to CPU" in patch.summary
    # Once cancelled and back on CPU there is nothing more to do.
    assert decide(after, None, T0, TIMEOUT).kind is ActionKind.NONE


def test_cancelling_a_move_to_cpu_is_the_annotation_alone() -> None:
    _, on_gpu, _ = stuck_gpu()
    moved_back = applied(on_gpu, [op for op in plan_move(
        on_gpu, "cpu", previous=json.loads(
            on_gpu["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION])).operations
        if op["op"] != "test"])
    nb = stop(with_phase(moved_back, "recreating", "cpu"))
    patch = stop_patch(nb, decide(nb, None, T0, TIMEOUT), T0, CONFIG)
    paths = [op["path"] for op in patch.operations]
    assert paths == ["/metadata/resourceVersion",
                     "/metadata/annotations/gpushift.io~1notebook-migration"]
    assert patch.summary == ""


def test_to_cpu_while_stopped_keeps_the_mirror_and_drops_the_record() -> None:
    original, moved, _ = stuck_gpu()
    nb = stop(with_phase(moved, "done"))
    action = decide(nb, None, T0, TIMEOUT)
    patch = stop_patch(nb, action, T0, CONFIG)
    after = applied(nb, patch.operations)
    assert after["spec"] == original["spec"]
    assert PREVIOUS_PROFILE_ANNOTATION not in after["metadata"]["annotations"]
    assert after["metadata"]["annotations"][MIGRATION_ANNOTATION] == migration("done")
    assert patch.annotation == {}
    assert decide(after, None, T0, TIMEOUT).kind is ActionKind.NONE
    with pytest.raises(ValueError, match="not a stop"):
        stop_patch(nb, decide(moved, None, T0, TIMEOUT), T0, CONFIG)


def _culler_keys_touched(ops: list[dict[str, Any]]) -> list[str]:
    escaped = {k.replace("/", "~1") for k in (*CULLER, KUBEFLOW_STOPPED_ANNOTATION)}
    return [op["path"] for op in ops
            if op["path"] in ("/metadata", "/metadata/annotations")
            or op["path"].rsplit("/", 1)[-1] in escaped]


def test_no_move_nor_guard_patch_touches_the_culler_clock_or_the_stop() -> None:
    """Kubeflow's culler decides on `last-activity`; gpushift never writes it (nor the
    check time stamp, nor the stop annotation): a move does not make a notebook look busy
    or idle."""
    original = cpu_notebook()
    original["metadata"]["annotations"].update(CULLER)
    moved = with_phase(moved_as_the_sidecar_does(original), "recreating")
    record = json.loads(moved["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION])
    late = T0 + dt.timedelta(seconds=TIMEOUT + 1)
    cancelled, done = stop(moved), stop(with_phase(moved, "done"))
    patches = {
        "to gpu": (original, plan_move(original, "gpu", PROFILE).operations),
        "to cpu with the record": (moved, plan_move(moved, "cpu",
                                                    previous=record).operations),
        "to cpu without": (moved, plan_move(moved, "cpu", profiles=[PROFILE]).operations),
        "rollback": (moved, rollback_patch(moved, decide(moved, None, late, TIMEOUT), late,
                                           CONFIG).operations),
        "cancel": (cancelled, stop_patch(cancelled, decide(cancelled, None, T0, TIMEOUT),
                                         T0, CONFIG).operations),
        "to cpu while stopped": (done, stop_patch(done, decide(done, None, T0, TIMEOUT),
                                                  T0, CONFIG).operations),
    }
    for what, (nb, ops) in patches.items():
        assert ops, what
        assert _culler_keys_touched(ops) == [], what
        after = applied(nb, ops)
        assert {k: after["metadata"]["annotations"][k] for k in CULLER} == CULLER, what


# ----------------------------------------------------------------------------- one pass


async def test_one_pass_cancels_the_move_and_tells_it_as_a_normal_event() -> None:
    original, moved, _ = stuck_gpu()
    api = FakeApi()
    api.add_notebook(stop(moved))
    guard = MigrationGuard(api, CONFIG, clock=lambda: T0, timeout_seconds=TIMEOUT)
    [outcome] = await guard.pass_once()
    assert (outcome.action, outcome.applied, outcome.pod_deleted) == (
        ActionKind.CANCEL, True, False)
    nb = api.notebooks[(NS, "nb")]
    assert nb["spec"] == original["spec"]
    assert json.loads(nb["metadata"]["annotations"][MIGRATION_ANNOTATION])["phase"] == \
        "cancelled"
    [event] = api.events
    assert (event["reason"], event["type"]) == ("MigrationCancelled", "Normal")
    assert event["message"].startswith(
        "The move to GPU was cancelled: the notebook was stopped (kubeflow-resource-"
        "stopped) during the move; its CPU profile was restored while it is stopped")
    assert api.deletes == []
    for _ in range(2):  # idempotent
        [again] = await guard.pass_once()
        assert again.action is ActionKind.NONE
    assert len(api.patches) == 1 and len(api.events) == 1


async def test_one_pass_takes_a_notebook_stopped_on_a_gpu_back_to_cpu() -> None:
    original, moved, _ = stuck_gpu()
    api = FakeApi()
    api.add_notebook(stop(with_phase(moved, "done")))
    guard = MigrationGuard(api, CONFIG, clock=lambda: T0, timeout_seconds=TIMEOUT)
    [outcome] = await guard.pass_once()
    assert (outcome.action, outcome.applied) == (ActionKind.TO_CPU, True)
    assert api.notebooks[(NS, "nb")]["spec"] == original["spec"]
    [event] = api.events
    assert (event["reason"], event["type"]) == ("NotebookStoppedOnGpu", "Normal")
    assert "Start brings it up on CPU" in event["message"]
    [again] = await guard.pass_once()
    assert again.action is ActionKind.NONE and len(api.patches) == 1


async def test_a_start_that_comes_first_leaves_the_notebook_to_the_move() -> None:
    """The patch is decided again on a fresh read: a Notebook started in between is
    guarded as any other (here: still waiting for its new pod)."""
    _, moved, _ = stuck_gpu()
    api = FakeApi()
    api.add_notebook(stop(moved))
    guard = MigrationGuard(api, CONFIG, clock=lambda: T0, timeout_seconds=TIMEOUT)
    listed = await api.list_notebooks()
    api.notebooks[(NS, "nb")] = copy.deepcopy(moved)  # Start: the annotation is gone
    api.notebooks[(NS, "nb")]["metadata"]["resourceVersion"] = "102"
    outcome = await guard._one(listed[0], NS, "nb", T0)
    assert outcome.action is ActionKind.NONE and api.patches == [] and api.events == []
