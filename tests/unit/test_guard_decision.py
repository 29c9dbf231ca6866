"""The migration guard's pure part: decide() on a Notebook and its pod (roll back, fail,
delete the stuck pod, or wait), the rollback patch it writes, and the migration record it
reads."""

from __future__ import annotations

import copy
import datetime as dt
import json

import jsonpatch
import pytest
from guard_objects import (
    CONFIG,
    CPU_IMAGE,
    CUDA_IMAGE,
    IMAGE_MAP,
    MIGRATION_ID,
    PROFILE,
    SCHEDULER,
    T0,
    TIMEOUT,
    cpu_notebook,
    moved_as_the_sidecar_does,
    pod,
    stuck_gpu,
)

from gpushift_core.labels import MIGRATION_ANNOTATION, PREVIOUS_PROFILE_ANNOTATION
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.guard_decision import (
    ActionKind,
    decide,
    read_migration,
    rollback_patch,
    stuck_reason,
)

# ----------------------------------------------------------------------------- decide()


def test_ready_pod_of_the_target_needs_nothing():
    _, moved, _ = stuck_gpu()
    action = decide(moved, pod(moved, ready=True), T0 + dt.timedelta(hours=1), TIMEOUT)
    assert action.kind is ActionKind.NONE and "Ready" in action.why


def test_pending_past_the_timeout_is_rolled_back_with_the_schedulers_message():
    _, moved, stuck = stuck_gpu()
    action = decide(moved, stuck, T0 + dt.timedelta(seconds=TIMEOUT + 1), TIMEOUT)
    assert action.kind is ActionKind.ROLLBACK
    assert action.reason == SCHEDULER
    assert "Insufficient nvidia.com/gpu" in action.reason
    assert action.reason_class == "insufficient_resources"
    assert action.delete_pod_uid == stuck["metadata"]["uid"]
    assert action.migration is not None and action.migration.id == MIGRATION_ID


def test_pending_before_the_timeout_waits():
    _, moved, stuck = stuck_gpu()
    for elapsed in (0, 1, TIMEOUT - 0.5):
        action = decide(moved, stuck, T0 + dt.timedelta(seconds=elapsed), TIMEOUT)
        assert action.kind is ActionKind.NONE, elapsed
        assert "waiting" in action.why
    # The `updated` time counts, not the pod's age: a different timeout changes it.
    assert decide(moved, stuck, T0 + dt.timedelta(seconds=11), 10).kind is ActionKind.ROLLBACK


def test_image_pull_backoff_is_rolled_back_with_its_message():
    _, moved, _ = stuck_gpu()
    message = f'Back-off pulling image "{CUDA_IMAGE}"'
    stuck = pod(moved, waiting=("ImagePullBackOff", message))
    action = decide(moved, stuck, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert action.kind is ActionKind.ROLLBACK
    assert action.reason == f"container nb: ImagePullBackOff: {message}"
    assert action.reason_class == "image_pull"
    err = pod(moved, waiting=("ErrImagePull", "rpc error: not found"))
    assert "ErrImagePull: rpc error: not found" in stuck_reason(err, "nb-0", TIMEOUT)[0]


def test_a_container_merely_creating_is_not_a_reason():
    _, moved, _ = stuck_gpu()
    slow = pod(moved, waiting=("ContainerCreating", ""))
    reason, cls = stuck_reason(slow, "nb-0", TIMEOUT)
    assert (reason, cls) == ("pod nb-0 not Ready after 60 s (phase Pending)", "not_ready")


def test_volume_node_affinity_conflict_is_surfaced_with_what_it_means():
    _, moved, _ = stuck_gpu()
    message = "0/3 nodes are available: 1 node(s) had volume node affinity conflict, 2 node(s)"
    action = decide(moved, pod(moved, scheduled=message),
                    T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert action.kind is ActionKind.ROLLBACK
    assert action.reason.startswith(message) and "zone" in action.reason
    assert action.reason_class == "volume_node_affinity"


def test_no_pod_at_all_past_the_timeout_is_rolled_back_without_deleting():
    _, moved, _ = stuck_gpu()
    action = decide(moved, None, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert action.kind is ActionKind.ROLLBACK
    assert action.reason == "pod nb-0 not created after 60 s"
    assert action.delete_pod_uid is None


def test_the_old_ready_cpu_pod_is_not_the_new_pod_and_is_never_deleted():
    original, moved, _ = stuck_gpu()
    old = pod(original, ready=True)
    assert decide(moved, old, T0 + dt.timedelta(seconds=5), TIMEOUT).kind is ActionKind.NONE
    action = decide(moved, old, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert action.kind is ActionKind.ROLLBACK and action.delete_pod_uid is None
    terminating = pod(moved, scheduled=SCHEDULER)
    terminating["metadata"]["deletionTimestamp"] = "2025-03-01T12:00:30Z"
    action = decide(moved, terminating, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert action.kind is ActionKind.ROLLBACK and action.delete_pod_uid is None


@pytest.mark.parametrize("phase", ["requested", "checkpointing", "checkpointed", "restoring",
                                   "done", "rolled_back", "failed"])
def test_other_phases_need_nothing(phase):
    original = cpu_notebook()
    nb = moved_as_the_sidecar_does(original, phase=phase)
    if phase == "rolled_back":  # as after a rollback: the spec is the CPU one again
        nb["spec"] = copy.deepcopy(original["spec"])
    stuck = pod(nb, scheduled=SCHEDULER)
    action = decide(nb, stuck, T0 + dt.timedelta(hours=1), TIMEOUT)
    assert action.kind is ActionKind.NONE, action


def test_cpu_target_is_marked_failed_not_rolled_back():
    gpu = cpu_notebook()
    gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] = "1"
    moved = moved_as_the_sidecar_does(gpu, target="cpu")
    cpu_message = "0/3 nodes are available: 3 Insufficient cpu."
    action = decide(moved, pod(moved, scheduled=cpu_message),
                    T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert action.kind is ActionKind.FAIL
    assert action.reason == cpu_message and action.delete_pod_uid is None
    patch = rollback_patch(moved, action, T0, CONFIG)
    after = jsonpatch.apply_patch(moved, patch.operations)
    assert after["spec"] == moved["spec"]  # nothing to go back to
    written = json.loads(after["metadata"]["annotations"][MIGRATION_ANNOTATION])
    assert written["phase"] == "failed" and written["reason"] == cpu_message


def test_annotations_that_are_not_understood_need_nothing():
    _, moved, stuck = stuck_gpu()
    later = T0 + dt.timedelta(hours=1)
    for text in ("not json", "[]", '{"id":"x"}'):
        moved["metadata"]["annotations"][MIGRATION_ANNOTATION] = text
        assert decide(moved, stuck, later, TIMEOUT).kind is ActionKind.NONE
    moved["metadata"]["annotations"][MIGRATION_ANNOTATION] = json.dumps(
        {"id": "x", "phase": "recreating", "target": "gpu", "updated": "yesterday"})
    assert "updated" in decide(moved, stuck, later, TIMEOUT).why
    del moved["metadata"]["annotations"][MIGRATION_ANNOTATION]
    assert decide(moved, stuck, later, TIMEOUT).why == "no migration"


def test_after_a_rollback_a_pod_still_on_the_gpu_spec_is_deleted():
    _, moved, stuck = stuck_gpu()
    action = decide(moved, stuck, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    rolled = jsonpatch.apply_patch(moved, rollback_patch(moved, action, T0, CONFIG).operations)
    later = T0 + dt.timedelta(seconds=TIMEOUT + 5)
    again = decide(rolled, stuck, later, TIMEOUT)
    assert again.kind is ActionKind.DELETE_POD
    assert again.delete_pod_uid == stuck["metadata"]["uid"]
    # The CPU pod made from the restored spec, Ready or still starting: nothing.
    assert decide(rolled, pod(rolled), later, TIMEOUT).kind is ActionKind.NONE
    assert decide(rolled, pod(rolled, ready=True), later, TIMEOUT).kind is ActionKind.NONE
    assert decide(rolled, None, later, TIMEOUT).kind is ActionKind.NONE


# ----------------------------------------------------------------------------- the patch


def test_rollback_patch_restores_the_original_spec_in_one_patch():
    original, moved, stuck = stuck_gpu()
    action = decide(moved, stuck, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    now = T0 + dt.timedelta(seconds=TIMEOUT)
    patch = rollback_patch(moved, action, now, CONFIG)
    assert patch.kind is ActionKind.ROLLBACK
    assert patch.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                                   "value": "101"}
    assert sum(op["op"] == "test" for op in patch.operations) == 1
    after = jsonpatch.apply_patch(moved, patch.operations)
    assert after["spec"] == original["spec"]
    annotations = after["metadata"]["annotations"]
    assert PREVIOUS_PROFILE_ANNOTATION not in annotations
    written = json.loads(annotations[MIGRATION_ANNOTATION])
    assert written == {"id": MIGRATION_ID, "phase": "rolled_back", "target": "gpu",
                       "updated": "2025-03-01T12:01:00.000000Z", "reason": SCHEDULER}
    assert annotations["notebooks.kubeflow.org/server-type"] == "jupyter"
    assert "to CPU" in patch.summary
    # Against a Notebook that changed since it was read, the patch fails as a whole.
    changed = copy.deepcopy(moved)
    changed["metadata"]["resourceVersion"] = "102"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(changed, patch.operations)


def test_rollback_without_the_record_strips_the_gpu_profile():
    _, moved, stuck = stuck_gpu()
    del moved["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION]
    config = WebhookConfig(image_map=IMAGE_MAP, profiles=[PROFILE], default_profile="nvidia-2")
    action = decide(moved, stuck, T0 + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    after = jsonpatch.apply_patch(moved, rollback_patch(moved, action, T0, config).operations)
    spec = after["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert c["image"] == CPU_IMAGE and not spec.get("tolerations")
    assert not spec.get("nodeSelector")
    # A broken record: the same fallback.
    moved["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION] = '{"version": 99}'
    after = jsonpatch.apply_patch(moved, rollback_patch(moved, action, T0, config).operations)
    assert "nvidia.com/gpu" not in after["spec"]["template"]["spec"]["containers"][0][
        "resources"]["limits"]
    assert PREVIOUS_PROFILE_ANNOTATION not in after["metadata"]["annotations"]


def test_read_migration_round_trip():
    _, moved, _ = stuck_gpu()
    m = read_migration(moved)
    assert m is not None
    assert (m.id, m.phase, m.target, m.updated) == (MIGRATION_ID, "recreating", "gpu", T0)


# ------------------------------------------------------------- when the wait began again


def _stamped(p: dict, created: dt.datetime, deleting: dt.datetime | None = None) -> dict:
    p["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    if deleting is not None:
        p["metadata"]["deletionTimestamp"] = deleting.strftime("%Y-%m-%dT%H:%M:%SZ")
    return p


def test_an_arrived_pod_deleted_by_an_admin_is_waited_for_not_rolled_back():
    # The move arrived on a GPU pod without the sidecar (the webhook was down); long after
    # the timeout an admin deletes that pod so that the webhook injects its replacement.
    _, moved, _ = stuck_gpu()
    late = T0 + dt.timedelta(seconds=10 * TIMEOUT)
    deleting = _stamped(pod(moved, ready=True), T0 + dt.timedelta(seconds=5),
                        late + dt.timedelta(seconds=30))
    assert decide(moved, deleting, late, TIMEOUT).kind is ActionKind.NONE
    # The gap before the StatefulSet's replacement: the wait counts from the first pass
    # that found no pod.
    assert decide(moved, None, late, TIMEOUT, missing_since=late).kind is ActionKind.NONE
    gone_too_long = decide(moved, None, late + dt.timedelta(seconds=TIMEOUT), TIMEOUT,
                           missing_since=late)
    assert (gone_too_long.kind, gone_too_long.reason_class) == (ActionKind.ROLLBACK,
                                                                "pod_missing")
    # The replacement gets the whole timeout from its creation to become Ready.
    replacement = _stamped(pod(moved), late + dt.timedelta(seconds=2))
    waiting = decide(moved, replacement, late + dt.timedelta(seconds=TIMEOUT), TIMEOUT)
    assert waiting.kind is ActionKind.NONE and "waiting for the new pod" in waiting.why
    stuck = decide(moved, replacement, late + dt.timedelta(seconds=TIMEOUT + 2), TIMEOUT)
    assert stuck.kind is ActionKind.ROLLBACK and stuck.reason_class == "not_ready"


def test_only_a_pod_of_the_target_kind_restarts_the_wait():
    original, moved, _ = stuck_gpu()
    at = T0 + dt.timedelta(seconds=TIMEOUT)
    # The old CPU pod, however new or deleting, is not the move's pod: `updated` counts.
    old = _stamped(pod(original), at, at + dt.timedelta(seconds=30))
    assert decide(moved, old, at, TIMEOUT).kind is ActionKind.ROLLBACK
    # A missing_since earlier than `updated` (a previous move's gap) changes nothing.
    early = T0 - dt.timedelta(hours=1)
    assert decide(moved, None, at, TIMEOUT, missing_since=early).kind is ActionKind.ROLLBACK
