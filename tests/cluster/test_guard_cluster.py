"""The migration guard against the real control plane, as two `gpushift-webhook serve
--guard` processes under the chart's own RBAC for the webhook.

A Notebook with a PV/PVC workspace is moved to a profile of 2 GPUs (more than any kwok
node has) by patching it exactly as the sidecar does (its KubeApi, plan_move, the two
annotations, phase recreating); the new pod stays Pending (Insufficient nvidia.com/gpu).
The guard rolls it back after guard.ready_timeout_seconds (10 s, the minimum): Notebook
spec back to the original, the Pending pod deleted (the StatefulSet would not replace it
by itself), a CPU pod Running again, phase rolled_back with the scheduler's reason, a
Warning Event. Of the two processes exactly one holds the Lease and rolls back; when it
is killed, the other takes over within about a lease duration and rolls back the next one.
The guards run in the chart's default opt-in mode: they act only in namespaces labelled
gpushift.io/enabled=true, and leave a stuck move alone in any other.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary, wait_for
from gpushift_testing.workloads import (
    create_workspace,
    delete_volumes,
    node_kind,
    wait_pending,
    wait_running,
)
from guard_processes import Guards, running_guards

from gpushift_core.admin_settings import GpuProfile, ImagePair
from gpushift_core.kube import KubeApi as SidecarApi
from gpushift_core.labels import ENABLED_LABEL, MIGRATION_ANNOTATION, PREVIOUS_PROFILE_ANNOTATION
from gpushift_core.move_plan import plan_move

NB = ("kubeflow.org", "v1")
RELEASE = "guardtest"
FULLNAME = f"{RELEASE}-gpushift"
LEASE = f"{FULLNAME}-guard"
CPU_IMAGE = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA_IMAGE = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
IMAGE_MAP = [ImagePair(cpu=CPU_IMAGE, cuda=CUDA_IMAGE)]
TWO_GPUS = GpuProfile(
    name="nvidia-2", resource=GPU_RESOURCE, count=2,
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
)
READY_TIMEOUT = 10  # the least the config allows
LEASE_DURATION, RENEW = 6.0, 2.0  # shorter than the 15 s / 5 s defaults: a quick test
ROLLED_BACK_LINE = "guard: migration rolled back"


@pytest.fixture(scope="module")
def guards(control_plane: ControlPlane,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guards]:
    """Two guard processes (guard-a, guard-b) in their own namespace, with the chart's
    webhook RBAC only."""
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    with running_guards(control_plane, tmp_path_factory.mktemp("guards"),
                        ("guard-a", "guard-b"), release=RELEASE, lease=LEASE,
                        namespace_prefix="gpushift-guard", ready_timeout=READY_TIMEOUT,
                        image_map=[{"cpu": CPU_IMAGE, "cuda": CUDA_IMAGE}],
                        lease_duration=LEASE_DURATION, renew=RENEW) as started:
        yield started


@pytest.fixture
async def sidecar(control_plane: ControlPlane) -> Any:
    """The sidecar's own API module (admin credentials: its RBAC has its own tests)."""
    api = SidecarApi.connect(str(control_plane.kubeconfig), instance="nb-0")
    yield api
    api.close()


# ----------------------------------------------------------------------------- notebook


@pytest.fixture
def notebook(admin: Any, namespace: str, tmp_path: Path) -> Iterator[Any]:
    """make(name) -> (the CPU Notebook as created, its workspace folder on the host)."""
    volumes: list[str] = []

    def make(name: str) -> tuple[dict[str, Any], Path]:
        claim = f"{name}-workspace"
        host = tmp_path / claim
        volumes.append(create_workspace(admin.core, namespace, claim, host))
        body = {
            "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
            "metadata": {"name": name, "labels": {"app": name},
                         "annotations": {"notebooks.kubeflow.org/server-type": "jupyter"}},
            "spec": {"template": {"spec": {
                "containers": [{
                    "name": name, "image": CPU_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi"},
                                  "requests": {"cpu": "500m", "memory": "1Gi"}},
                    "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}],
                }],
                "volumes": [{"name": "workspace",
                             "persistentVolumeClaim": {"claimName": claim}}],
            }}},
        }
        created = admin.custom.create_namespaced_custom_object(*NB, namespace, "notebooks",
                                                               body)
        return created, host

    yield make
    delete_volumes(admin.core, volumes)


def running(core: Any, namespace: str, name: str, not_uid: str = "",
            timeout: float = 90) -> Any:
    return wait_running(core, namespace, name, not_uid=not_uid, timeout=timeout,
                        interval=0.1, not_deleting=True)


async def move_to_two_gpus(sidecar: Any, namespace: str, name: str,
                           profile: GpuProfile = TWO_GPUS) -> tuple[str, str]:
    """Patch the Notebook as the sidecar does for a move to GPU (by default to 2 GPUs,
    which no node has): the move and the two annotations in one JSON patch. Returns
    (migration id, updated)."""
    migration_id = str(uuid.uuid4())
    updated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def build(nb: dict[str, Any]) -> list[dict[str, Any]]:
        plan = plan_move(nb, "gpu", profile, IMAGE_MAP)
        annotations = (nb["metadata"].get("annotations") or {})
        assert annotations, "the Notebook has annotations: add below them"
        return [*plan.operations,
                {"op": "add", "path": "/metadata/annotations/gpushift.io~1notebook-migration",
                 "value": json.dumps({"id": migration_id, "phase": "recreating",
                                      "target": "gpu", "updated": updated},
                                     separators=(",", ":"))},
                {"op": "add",
                 "path": "/metadata/annotations/gpushift.io~1notebook-previous-profile",
                 "value": json.dumps(plan.previous_profile, separators=(",", ":"))}]

    result = await sidecar.patch_notebook(namespace, name, build)
    assert result.changed
    limits = result.notebook["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"]
    assert limits[GPU_RESOURCE] == str(profile.count)
    return migration_id, updated


def stuck_pending(core: Any, namespace: str, name: str, not_uid: str) -> Any:
    """The new pod, Pending because no node has 2 GPUs."""
    return wait_pending(core, namespace, name, "Insufficient nvidia.com/gpu", not_uid=not_uid,
                        timeout=60, interval=0.1)


def revision(pod: Any) -> str:
    """The StatefulSet revision the pod was made from."""
    return str((pod.metadata.labels or {}).get("controller-revision-hash", ""))


def migration_of(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    nb = custom.get_namespaced_custom_object(*NB, namespace, "notebooks", name)
    return dict(json.loads(nb["metadata"]["annotations"][MIGRATION_ANNOTATION]))


def rolled_back(custom: Any, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    return dict(wait_for(
        f"Notebook {namespace}/{name} rolled back",
        lambda: (m := migration_of(custom, namespace, name))["phase"] == "rolled_back" and m,
        timeout, interval=0.2))


def opt_in(core: Any, namespace: str) -> None:
    """Label the namespace gpushift.io/enabled=true: the guard acts there from its next
    pass."""
    core.patch_namespace(namespace, {"metadata": {"labels": {ENABLED_LABEL: "true"}}})


def notebook_events(core: Any, namespace: str, name: str, reason: str) -> list[Any]:
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Notebook")
    return [e for e in events.items if e.reason == reason]


# ----------------------------------------------------------------------------- tests


async def test_a_move_no_node_can_take_is_rolled_back_once_by_the_lease_holder(
        guards: Guards, admin: Any, sidecar: Any, namespace: str, notebook: Any) -> None:
    # One of the two holds the Lease, the other stands by.
    holder = wait_for("a guard holding the Lease", lambda: guards.holder(admin.coordination),
                      30, describe=guards.logs)
    assert holder in guards.procs
    standby = next(i for i in guards.procs if i != holder)
    wait_for(f"{standby} standing by", lambda: any(
        line["msg"].startswith("guard standby") and line.get("holder") == holder
        for line in guards.procs[standby].lines()), 20, describe=guards.logs)
    assert guards.procs[standby].count("guard leader: this replica acts") == 0

    opt_in(admin.core, namespace)
    created, host = notebook("nb")
    first = running(admin.core, namespace, "nb-0")
    assert node_kind(admin.core, first.spec.node_name) == "cpu"
    work = host / "analysis.ipynb"
    work.write_text('{"cells": ["precious"]}')

    t0 = time.monotonic()
    migration_id, updated = await move_to_two_gpus(sidecar, namespace, "nb")
    stuck = stuck_pending(admin.core, namespace, "nb-0", first.metadata.uid)
    pending_after = time.monotonic() - t0
    assert stuck.status.phase == "Pending"
    assert stuck.spec.containers[0].resources.limits[GPU_RESOURCE] == "2"
    assert migration_of(admin.custom, namespace, "nb")["phase"] == "recreating"

    after = rolled_back(admin.custom, namespace, "nb", READY_TIMEOUT + 20)
    rolled_back_after = time.monotonic() - t0
    assert rolled_back_after >= READY_TIMEOUT - 1, rolled_back_after
    assert after["id"] == migration_id and after["target"] == "gpu"
    assert after["updated"] > updated
    assert "Insufficient nvidia.com/gpu" in after["reason"], after

    nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb")
    assert nb["spec"] == created["spec"]
    assert PREVIOUS_PROFILE_ANNOTATION not in nb["metadata"]["annotations"]
    assert nb["metadata"]["annotations"]["notebooks.kubeflow.org/server-type"] == "jupyter"

    # The stuck pod was deleted; the StatefulSet made a CPU pod from the restored spec.
    back = running(admin.core, namespace, "nb-0", not_uid=stuck.metadata.uid, timeout=60)
    running_after = time.monotonic() - t0
    assert back.metadata.uid not in (first.metadata.uid, stuck.metadata.uid)
    assert node_kind(admin.core, back.spec.node_name) == "cpu", pod_summary(back)
    assert GPU_RESOURCE not in (back.spec.containers[0].resources.limits or {})
    assert back.spec.containers[0].image == CPU_IMAGE
    claims = [v.persistent_volume_claim.claim_name for v in back.spec.volumes
              if v.persistent_volume_claim]
    assert claims == ["nb-workspace"]
    assert admin.core.read_namespaced_persistent_volume_claim(
        "nb-workspace", namespace).status.phase == "Bound"
    assert work.read_text() == '{"cells": ["precious"]}'

    # The story on the Notebook, told once, by the Lease holder only.
    [event] = notebook_events(admin.core, namespace, "nb", "MigrationRolledBack")
    assert event.type == "Warning"
    assert "Insufficient nvidia.com/gpu" in event.message
    assert event.involved_object.uid == created["metadata"]["uid"]
    assert event.source.component == "gpushift-guard"
    assert guards.procs[holder].count(ROLLED_BACK_LINE) == 1
    assert guards.procs[standby].count(ROLLED_BACK_LINE) == 0
    [line] = [x for x in guards.procs[holder].lines() if x["msg"] == ROLLED_BACK_LINE]
    assert (line["notebook"], line["namespace"], line["migration_id"], line["phase"]) == (
        "nb", namespace, migration_id, "rolled_back")
    assert line["reason_class"] == "insufficient_resources" and line["pod_deleted"] is True

    # Idempotent: more passes change nothing.
    time.sleep(3)
    assert migration_of(admin.custom, namespace, "nb") == after
    assert len(notebook_events(admin.core, namespace, "nb", "MigrationRolledBack")) == 1
    assert admin.core.read_namespaced_pod("nb-0", namespace).metadata.uid == back.metadata.uid
    assert guards.holder(admin.coordination) == holder
    print(f"\nstuck pod Pending {pending_after:.1f}s after the patch; rolled back after "
          f"{rolled_back_after:.1f}s (ready timeout {READY_TIMEOUT}s); CPU pod Running "
          f"after {running_after:.1f}s; leader {holder}")


async def test_a_stuck_move_is_left_alone_until_its_namespace_opts_in(
        guards: Guards, admin: Any, sidecar: Any, namespace: str, notebook: Any) -> None:
    """Not labelled gpushift.io/enabled=true: past the timeout the move stays as it is
    (spec, phase, Pending pod; no Event, not even a decision logged). Labelled: the next
    pass rolls it back."""
    holder = wait_for("a guard holding the Lease", lambda: guards.holder(admin.coordination),
                      30, describe=guards.logs)
    assert ENABLED_LABEL not in (admin.core.read_namespace(namespace).metadata.labels or {})
    created, _ = notebook("nb3")
    first = running(admin.core, namespace, "nb3-0")
    migration_id, _ = await move_to_two_gpus(sidecar, namespace, "nb3")
    t0 = time.monotonic()
    stuck = stuck_pending(admin.core, namespace, "nb3-0", first.metadata.uid)

    # Well past the timeout, with a pass every second.
    time.sleep(max(0.0, READY_TIMEOUT + 5 - (time.monotonic() - t0)))
    assert migration_of(admin.custom, namespace, "nb3")["phase"] == "recreating"
    nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb3")
    assert nb["spec"] != created["spec"]
    assert PREVIOUS_PROFILE_ANNOTATION in nb["metadata"]["annotations"]
    pod = admin.core.read_namespaced_pod("nb3-0", namespace)
    assert pod.status.phase == "Pending"
    # The same pod, unless the StatefulSet itself replaced it: the notebook controller may
    # write the StatefulSet again after the patch (CI saw three writes), and a new template
    # revision replaces a Pending pod. A pod of the same revision replaced would be a
    # deletion by someone else: the guard.
    assert pod.metadata.uid == stuck.metadata.uid or revision(pod) != revision(stuck), (
        pod_summary(pod))
    assert not notebook_events(admin.core, namespace, "nb3", "MigrationRolledBack")
    for proc in guards.procs.values():
        assert not [x for x in proc.lines() if x.get("namespace") == namespace], proc.identity
    assert guards.holder(admin.coordination) == holder, "the guard was not looking"

    opt_in(admin.core, namespace)
    opted_in = time.monotonic()
    after = rolled_back(admin.custom, namespace, "nb3", 15)
    acted_after = time.monotonic() - opted_in
    assert after["id"] == migration_id
    assert "Insufficient nvidia.com/gpu" in after["reason"]
    running(admin.core, namespace, "nb3-0", not_uid=stuck.metadata.uid, timeout=60)
    nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb3")
    assert nb["spec"] == created["spec"]
    print(f"\nleft alone for {opted_in - t0:.1f}s unlabelled; rolled back "
          f"{acted_after:.1f}s after the namespace opted in")


async def test_the_standby_takes_over_when_the_leader_is_killed(
        guards: Guards, admin: Any, sidecar: Any, namespace: str, notebook: Any) -> None:
    holder = wait_for("a guard holding the Lease", lambda: guards.holder(admin.coordination),
                      30, describe=guards.logs)
    survivor = next(i for i in guards.procs if i != holder and guards.procs[i].alive())
    before = guards.procs[survivor].count(ROLLED_BACK_LINE)
    opt_in(admin.core, namespace)
    created, _ = notebook("nb2")
    first = running(admin.core, namespace, "nb2-0")

    guards.procs[holder].kill()
    killed = time.monotonic()
    await move_to_two_gpus(sidecar, namespace, "nb2")
    wait_for(f"{survivor} holding the Lease", lambda: guards.holder(
        admin.coordination) == survivor, LEASE_DURATION + 3 * RENEW + 5,
        interval=0.1, describe=guards.logs)
    takeover = time.monotonic() - killed
    assert takeover <= LEASE_DURATION + 1.2 * RENEW + 2, takeover
    lease = admin.coordination.read_namespaced_lease(LEASE, guards.namespace)
    assert lease.spec.lease_transitions >= 1

    stuck = stuck_pending(admin.core, namespace, "nb2-0", first.metadata.uid)
    after = rolled_back(admin.custom, namespace, "nb2", READY_TIMEOUT + 20)
    assert "Insufficient nvidia.com/gpu" in after["reason"]
    running(admin.core, namespace, "nb2-0", not_uid=stuck.metadata.uid, timeout=60)
    nb = admin.custom.get_namespaced_custom_object(*NB, namespace, "notebooks", "nb2")
    assert nb["spec"] == created["spec"]
    assert guards.procs[survivor].count(ROLLED_BACK_LINE) == before + 1
    assert len(notebook_events(admin.core, namespace, "nb2", "MigrationRolledBack")) == 1
    # A clean stop (SIGTERM, as in a rollout) releases the Lease at once.
    guards.procs[survivor].stop()
    assert guards.procs[survivor].process is None or \
        guards.procs[survivor].process.returncode == 0
    assert guards.holder(admin.coordination) == ""
    assert guards.procs[survivor].count("guard lease released") == 1
    print(f"\n{survivor} took the Lease over {takeover:.1f}s after {holder} was killed "
          f"(lease duration {LEASE_DURATION}s, renew every {RENEW}s)")
