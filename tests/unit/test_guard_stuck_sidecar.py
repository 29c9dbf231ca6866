"""A sidecar that cannot start never keeps the notebook from starting: the guard's
decisions (pure) and one pass over the in-memory API (`guard_fake_api`, a stand-in of
the Kubernetes API only; the cluster test runs it against the real one)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import jsonpatch
import pytest
from guard_fake_api import FakeApi
from guard_objects import CONFIG, NS, T0, cpu_notebook, migration, pod

from gpushift_core.labels import KUBEFLOW_STOPPED_ANNOTATION, OPTIMIZER_OFF_ENV
from gpushift_webhook.guard import MigrationGuard
from gpushift_webhook.injection import Outcome as InjectionOutcome
from gpushift_webhook.injection import plan_injection
from gpushift_webhook.stuck_sidecar import (
    mark_operations,
    marker,
    stuck_reason,
    unmark_operations,
    worth_a_look,
)

SIDECAR = CONFIG.sidecar.name
GRACE = CONFIG.guard.sidecar_start_grace_seconds
PULL = ("ImagePullBackOff", 'Back-off pulling image "registry.invalid/gpushift/sidecar:0.1.0"')


def pod_with_sidecar_waiting(nb: dict[str, Any], reason: str, message: str,
                             age_s: float) -> dict[str, Any]:
    """Pod <name>-0 as the kubelet reports it while the native sidecar cannot start:
    Pending, the notebook container waiting in PodInitializing."""
    p = pod(nb, waiting=("PodInitializing", ""))
    created = T0 - dt.timedelta(seconds=age_s)
    p["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    p["status"]["initContainerStatuses"] = [{
        "name": SIDECAR, "ready": False, "started": False, "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}}}]
    return p


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff",
                                    "CreateContainerConfigError", "InvalidImageName"])
def test_a_sidecar_waiting_past_the_grace_is_stuck_with_the_kubelets_reason(reason):
    p = pod_with_sidecar_waiting(cpu_notebook(), reason, "it said why", GRACE + 1)
    said = stuck_reason(p, SIDECAR, T0, GRACE)
    assert said is not None and f"({reason}: it said why)" in said
    assert "stopped and started again" in said


def test_not_stuck_within_the_grace_while_pulling_ready_or_deleting():
    nb = cpu_notebook()
    young = pod_with_sidecar_waiting(nb, *PULL, age_s=GRACE - 1)
    assert stuck_reason(young, SIDECAR, T0, GRACE) is None
    pulling = pod_with_sidecar_waiting(nb, "ContainerCreating", "", age_s=GRACE * 10)
    assert stuck_reason(pulling, SIDECAR, T0, GRACE) is None
    ready = pod(nb, ready=True)
    ready["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    assert stuck_reason(ready, SIDECAR, T0, GRACE) is None
    going = pod_with_sidecar_waiting(nb, *PULL, age_s=GRACE * 10)
    going["metadata"]["deletionTimestamp"] = "2025-03-01T12:00:00Z"
    assert stuck_reason(going, SIDECAR, T0, GRACE) is None
    other = pod_with_sidecar_waiting(nb, *PULL, age_s=GRACE * 10)
    other["status"]["initContainerStatuses"][0]["name"] = "istio-init"
    assert stuck_reason(other, SIDECAR, T0, GRACE) is None
    assert stuck_reason(None, SIDECAR, T0, GRACE) is None


def test_a_long_kubelet_message_is_cut_to_one_readable_line():
    p = pod_with_sidecar_waiting(cpu_notebook(), "ErrImagePull", "x\n" * 1000, GRACE + 1)
    said = stuck_reason(p, SIDECAR, T0, GRACE)
    assert said is not None and "\n" not in said and len(said) < 600


def test_the_marker_is_put_once_on_the_notebook_container_and_removed_only_when_stopped():
    nb = cpu_notebook()
    nb["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    ops = mark_operations(nb, "why")
    marked = jsonpatch.apply_patch(nb, ops)
    assert marker(marked) == "why"
    assert marked["spec"]["template"]["spec"]["containers"][0]["env"][0] == {
        "name": "A", "value": "1"}
    assert mark_operations(marked, "again") == []
    assert not worth_a_look(marked)
    assert unmark_operations(marked) == []  # running: removing it would restart the pod
    marked["metadata"]["annotations"][KUBEFLOW_STOPPED_ANNOTATION] = "2025-03-01T12:00:00Z"
    cleared = jsonpatch.apply_patch(marked, unmark_operations(marked))
    assert marker(cleared) is None
    assert cleared["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"}]


def test_a_notebook_without_env_gets_one_and_its_first_container_is_the_notebook():
    nb = cpu_notebook()
    nb["spec"]["template"]["spec"]["containers"].append({"name": "proxy", "image": "x"})
    marked = jsonpatch.apply_patch(nb, mark_operations(nb, "why"))
    containers = marked["spec"]["template"]["spec"]["containers"]
    assert containers[0]["env"] == [{"name": OPTIMIZER_OFF_ENV, "value": "why"}]
    assert "env" not in containers[1]


def test_only_unready_running_notebooks_without_a_guarded_move_are_worth_a_look():
    nb = cpu_notebook()
    assert worth_a_look(nb)
    ready = copy.deepcopy(nb)
    ready["status"] = {"readyReplicas": 1}
    assert not worth_a_look(ready)
    moving = copy.deepcopy(nb)
    moving["metadata"]["annotations"]["gpushift.io/notebook-migration"] = migration()
    assert not worth_a_look(moving)  # the rollback owns a move in flight
    ended = copy.deepcopy(nb)
    ended["metadata"]["annotations"]["gpushift.io/notebook-migration"] = migration(
        "rolled_back", reason="no GPU")
    assert worth_a_look(ended)
    stopped = copy.deepcopy(nb)
    stopped["metadata"]["annotations"][KUBEFLOW_STOPPED_ANNOTATION] = "2025-03-01T12:00:00Z"
    assert not worth_a_look(stopped)


def test_the_webhook_leaves_a_marked_pod_alone_with_the_reason():
    nb = jsonpatch.apply_patch(cpu_notebook(), mark_operations(cpu_notebook(), "why"))
    decision = plan_injection(pod(nb), NS, CONFIG, "jupyter")
    assert decision.outcome is InjectionOutcome.SKIPPED and "why" in decision.reason
    assert decision.operations == []


async def test_one_pass_marks_the_notebook_deletes_the_stuck_pod_and_says_why():
    api = FakeApi()
    nb = cpu_notebook()
    api.add_notebook(nb)
    stuck = pod_with_sidecar_waiting(nb, *PULL, age_s=GRACE + 5)
    api.add_pod(stuck)
    guard = MigrationGuard(api, CONFIG, clock=lambda: T0)
    await guard.pass_once()
    now = api.notebooks[(NS, "nb")]
    assert marker(now) is not None and "ImagePullBackOff" in str(marker(now))
    assert (NS, "nb-0") not in api.pods
    assert [e["reason"] for e in api.events] == ["SidecarNotStarted"]
    assert api.events[0]["type"] == "Warning"
    await guard.pass_once()  # marked: nothing more, no second Event
    assert len(api.events) == 1 and len(api.patches) == 1
    # Stopped: the marker goes, so the next Start tries the sidecar again.
    api.notebooks[(NS, "nb")]["metadata"]["annotations"][KUBEFLOW_STOPPED_ANNOTATION] = "x"
    await guard.pass_once()
    assert marker(api.notebooks[(NS, "nb")]) is None
    assert [e["reason"] for e in api.events] == ["SidecarNotStarted", "SidecarRetryOnStart"]
