"""The migration guard: decide() (pure), the rollback patch, one pass against an in-memory
API (rollback, idempotence, pod preconditions, races), and the Lease's leader election."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import jsonpatch
import pytest

from gpushift_core.admin_settings import GpuProfile, ImagePair
from gpushift_core.kube import KubeError, PatchResult
from gpushift_core.labels import MIGRATION_ANNOTATION, PREVIOUS_PROFILE_ANNOTATION
from gpushift_core.move_plan import plan_move
from gpushift_webhook import cli
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.guard import MigrationGuard
from gpushift_webhook.guard_decision import (
    ActionKind,
    decide,
    read_migration,
    rollback_patch,
    stuck_reason,
)
from gpushift_webhook.lease import LeaderElector, LeaseSettings
from gpushift_webhook.metrics import WebhookMetrics

NS = "kubeflow-user-example-com"
CPU_IMAGE = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
IMAGE_MAP = [ImagePair(cpu=CPU_IMAGE, cuda=CUDA_IMAGE)]
PROFILE = GpuProfile(name="nvidia-2", resource="nvidia.com/gpu", count=2,
                     node_selector={"nvidia.com/gpu.present": "true"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}])
CONFIG = WebhookConfig(image_map=IMAGE_MAP)
T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
TIMEOUT = 60.0
SCHEDULER = ("0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match "
             "Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No "
             "preemption victims found for incoming pod, 2 Preemption is not helpful for "
             "scheduling.")
MIGRATION_ID = "5b7c0a52-3c1e-4f0e-9d0c-2f1f6e0b9a11"


# ----------------------------------------------------------------------------- objects


def cpu_notebook(name: str = "nb") -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()),
                     "resourceVersion": "100",
                     "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
        "spec": {"template": {"spec": {
            "serviceAccountName": "default-editor",
            "containers": [{
                "name": name, "image": CPU_IMAGE,
                "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi"},
                              "requests": {"cpu": "500m", "memory": "1Gi"}},
                "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}],
            }],
            "volumes": [{"name": "workspace",
                         "persistentVolumeClaim": {"claimName": f"{name}-workspace"}}],
        }}},
    }


def migration(phase: str = "recreating", target: str = "gpu",
              updated: dt.datetime = T0, **extra: Any) -> str:
    return json.dumps({"id": MIGRATION_ID, "phase": phase, "target": target,
                       "updated": updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **extra},
                      separators=(",", ":"))


def moved_as_the_sidecar_does(nb: dict[str, Any], target: str = "gpu",
                              phase: str = "recreating") -> dict[str, Any]:
    """The Notebook after the sidecar's one patch: the move plus the two annotations."""
    plan = plan_move(nb, target, PROFILE if target == "gpu" else None, IMAGE_MAP)
    ops = [op for op in plan.operations if op["op"] != "test"]
    ops.append({"op": "add", "path": "/metadata/annotations/gpushift.io~1notebook-migration",
                "value": migration(phase, target)})
    if target == "gpu":
        ops.append({"op": "add",
                    "path": "/metadata/annotations/gpushift.io~1notebook-previous-profile",
                    "value": json.dumps(plan.previous_profile)})
    out: dict[str, Any] = jsonpatch.apply_patch(nb, ops)
    out["metadata"]["resourceVersion"] = "101"
    return out


def pod(nb: Mapping[str, Any], *, ready: bool = False, scheduled: str | None = None,
        waiting: tuple[str, str] | None = None, phase: str = "Pending") -> dict[str, Any]:
    """Pod <name>-0 made from the Notebook's current spec."""
    name = nb["metadata"]["name"]
    conditions: list[dict[str, Any]] = []
    if scheduled is not None:
        conditions.append({"type": "PodScheduled", "status": "False",
                           "reason": "Unschedulable", "message": scheduled})
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status: dict[str, Any] = {"phase": "Running" if ready else phase,
                              "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [{"name": name, "ready": False, "state": {
            "waiting": {"reason": waiting[0], "message": waiting[1]}}}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-0", "namespace": NS, "uid": str(uuid.uuid4()),
                         "resourceVersion": "7", "labels": {"notebook-name": name}},
            "spec": copy.deepcopy(nb["spec"]["template"]["spec"]),
            "status": status}


def stuck_gpu() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    original = cpu_notebook()
    moved = moved_as_the_sidecar_does(original)
    return original, moved, pod(moved, scheduled=SCHEDULER)


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


# ----------------------------------------------------------------------------- one pass


class FakeApi:
    """Notebooks, pods, Events and Leases in memory, with the API's concurrency rules:
    JSON patches (with their `test`), delete preconditions, Lease resourceVersions."""

    def __init__(self) -> None:
        self.notebooks: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[list[dict[str, Any]]] = []
        self.deletes: list[tuple[str, str | None]] = []
        self.before_patch: Any = None
        self.after_get_pod: Any = None
        self._rv = 1000

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_notebook(self, nb: dict[str, Any]) -> None:
        self.notebooks[(nb["metadata"]["namespace"], nb["metadata"]["name"])] = nb

    def add_pod(self, p: dict[str, Any]) -> None:
        self.pods[(p["metadata"]["namespace"], p["metadata"]["name"])] = p

    async def list_notebooks(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.notebooks.values()))

    async def patch_notebook(self, namespace: str, name: str, build_ops: Any,
                             attempts: int = 5) -> PatchResult:
        for attempt in range(1, attempts + 1):
            nb = copy.deepcopy(self.notebooks[(namespace, name)])
            built = build_ops(nb)
            ops = list(await built) if hasattr(built, "__await__") else list(built)
            if not any(op["op"] != "test" for op in ops):
                return PatchResult(nb, [], attempt)
            if self.before_patch is not None:
                self.before_patch(attempt)
            try:
                patched = jsonpatch.apply_patch(self.notebooks[(namespace, name)], ops)
            except jsonpatch.JsonPatchTestFailed:
                continue
            patched["metadata"]["resourceVersion"] = self._next_rv()
            self.notebooks[(namespace, name)] = patched
            self.patches.append(ops)
            return PatchResult(copy.deepcopy(patched), ops, attempt)
        raise KubeError(422, "Invalid", "gave up")

    async def find_notebook(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.notebooks.get((namespace, name)))

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        got = copy.deepcopy(self.pods.get((namespace, name)))
        if self.after_get_pod is not None:
            self.after_get_pod()
        return got

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool:
        self.deletes.append((uid, resource_version))
        current = self.pods.get((namespace, name))
        if current is None or current["metadata"]["uid"] != uid:
            return False
        if resource_version and current["metadata"]["resourceVersion"] != resource_version:
            return False
        del self.pods[(namespace, name)]
        return True

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal") -> None:
        assert namespace == notebook["metadata"]["namespace"]
        self.events.append({"name": notebook["metadata"]["name"], "reason": reason,
                            "message": message, "type": type})

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.leases.get((namespace, name)))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise KubeError(409, "AlreadyExists", "exists")
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = self._next_rv()
        self.leases[key] = lease
        return copy.deepcopy(lease)

    async def update_lease(self, namespace: str, name: str,
                           body: Mapping[str, Any]) -> dict[str, Any]:
        current = self.leases[(namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = self._next_rv()
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)


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


# ----------------------------------------------------------------------------- the Lease


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(api: FakeApi, identity: str, clock: Clock, **kwargs: Any) -> LeaderElector:
    settings = LeaseSettings(namespace="gpushift-system", name="gpushift-guard",
                             identity=identity, duration_seconds=15, renew_seconds=5)
    return LeaderElector(api, settings, clock=clock,
                         wall=lambda: T0 + dt.timedelta(seconds=clock.t), **kwargs)


async def test_of_two_replicas_one_leads_and_the_other_takes_over_after_expiry():
    api, clock = FakeApi(), Clock()
    changes: list[tuple[str, bool]] = []
    a = elector(api, "a", clock, on_change=lambda v: changes.append(("a", v)))
    b = elector(api, "b", clock, on_change=lambda v: changes.append(("b", v)))
    assert await a.tick() is True
    assert await b.tick() is False and b.holder == "a"
    lease = api.leases[("gpushift-system", "gpushift-guard")]
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"].endswith("Z")
    # a renews; b keeps standing by.
    for _ in range(4):
        clock.t += 5
        assert await a.tick() is True
        assert await b.tick() is False
    # a stops (killed): b takes over once the Lease stood still for 15 s of b's clock.
    seen_at = clock.t
    while not await b.tick():
        clock.t += 1
        assert clock.t - seen_at <= 16
    assert clock.t - seen_at >= 15
    lease = api.leases[("gpushift-system", "gpushift-guard")]
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    # a, back with its old state: its renewal loses (b holds), and it stops acting.
    assert await a.tick() is False and a.holder == "b"
    assert changes == [("a", True), ("b", True), ("a", False)]


async def test_a_leader_that_cannot_renew_stops_acting_before_anyone_can_take_over():
    api, clock = FakeApi(), Clock()
    a = elector(api, "a", clock)
    assert await a.tick()

    async def broken(*args: Any) -> None:
        raise KubeError(503, "ServiceUnavailable", "etcd")

    api.get_lease = broken  # type: ignore[method-assign]
    clock.t += 9
    assert await a.tick() is True  # within the renew deadline (10 s)
    clock.t += 1.5
    assert await a.tick() is False and a.is_leader is False


async def test_released_lease_is_taken_over_at_once_and_create_races_lose_cleanly():
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    # Both saw no Lease; a created it first: b's create gets 409 and b stands by.
    assert await a.tick()
    original_get = api.get_lease

    async def none_then_real(ns: str, name: str) -> Any:
        api.get_lease = original_get  # type: ignore[method-assign]
        return None

    api.get_lease = none_then_real  # type: ignore[method-assign]
    assert await b.tick() is False
    assert await a.release() is True
    assert api.leases[("gpushift-system", "gpushift-guard")]["spec"]["holderIdentity"] == ""
    assert await b.tick() is True  # no waiting out the duration


def test_lease_settings_are_checked():
    with pytest.raises(ValueError):
        LeaseSettings(namespace="ns", name="l", identity="a", duration_seconds=5,
                      renew_seconds=5)
    with pytest.raises(ValueError):
        LeaseSettings(namespace="", name="l", identity="a")


# ----------------------------------------------------------------------------- CLI


def test_cli_guard_needs_a_namespace(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GPUSHIFT_NAMESPACE", raising=False)
    monkeypatch.setattr(cli.jsonlog, "setup", lambda level: None)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--cert-dir", str(tmp_path), "--guard"])
    assert "--guard needs --namespace" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--cert-dir", str(tmp_path), "--guard", "--namespace", "x",
                  "--guard-renew-interval", "20"])


def test_cli_guard_reads_the_timeout_from_the_config(tmp_path, monkeypatch):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("guard:\n  ready_timeout_seconds: 10\n")
    seen: dict[str, Any] = {}

    async def fake_serve_forever(config: Any, args: Any) -> None:
        seen["config"], seen["args"] = config, args

    monkeypatch.setattr(cli, "serve_forever", fake_serve_forever)
    monkeypatch.setattr(cli.jsonlog, "setup", lambda level: None)
    assert cli.main(["serve", "--cert-dir", str(tmp_path), "--config", str(config_file),
                     "--namespace", "gpushift-system", "--guard", "--guard-lease-name",
                     "team-guard", "--guard-interval", "1"]) == 0
    args = seen["args"]
    assert seen["config"].guard.ready_timeout_seconds == 10
    assert (args.guard_lease.name, args.guard_lease.namespace) == ("team-guard",
                                                                   "gpushift-system")
    assert args.guard_interval == 1 and args.guard_lease.duration_seconds == 15
