"""GPU-hours from the Notebooks as the watch sees them (gpushift_webhook.gpu_hours, pure;
times are plain seconds), the store telling the account of every change
(notebook_watch.NotebookStore), and the metrics the webhook serves from it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES, GpuProfile
from gpushift_core.patches import PatchBuilder
from gpushift_webhook.gpu_hours import GpuHours, notebook_gpu
from gpushift_webhook.gpu_hours_metrics import GpuHoursCollector
from gpushift_webhook.guard_decision import read_migration, set_mirror
from gpushift_webhook.notebook_watch import NotebookStore

A100 = GpuProfile(name="a100", node_selector={"pool": "a100"})
A100_PAIR = GpuProfile(name="a100x2", count=2, node_selector={"pool": "a100"})
T4 = GpuProfile(name="t4", node_selector={"pool": "t4"})
KEY = ("team", "nb")


def notebook(*, gpu: bool = False, pool: str = "a100", ready: bool = True,
             stopped: bool = False, mirror: dict[str, Any] | None = None,
             name: str = "nb", gpus: int = 1) -> dict[str, Any]:
    limits = {"cpu": "1", **({"nvidia.com/gpu": str(gpus)} if gpu else {})}
    annotations: dict[str, str] = {}
    if stopped:
        annotations["kubeflow-resource-stopped"] = "2025-03-01T12:00:00Z"
    if mirror is not None:
        annotations["gpushift.io/notebook-migration"] = json.dumps(mirror)
    spec: dict[str, Any] = {"containers": [{"name": name, "resources": {"limits": limits}}]}
    if gpu:
        spec["nodeSelector"] = {"pool": pool}
    return {"metadata": {"namespace": "team", "name": name, "annotations": annotations},
            "spec": {"template": {"spec": spec}},
            "status": {"readyReplicas": 1 if ready else 0}}


def move(mid: str, phase: str, target: str, trigger: str) -> dict[str, Any]:
    return {"id": mid, "phase": phase, "target": target, "trigger": trigger,
            "updated": "2025-03-01T12:00:00Z"}


def account() -> GpuHours:
    return GpuHours(DEFAULT_GPU_RESOURCES, [A100, T4], retain_deleted_seconds=600)


def test_a_day_of_moves_adds_up_held_reclaimed_and_moves():
    hours = account()
    hours.observe(KEY, notebook(), 0)                         # created on CPU
    up = move("m1", "recreating", "gpu", "auto")
    hours.observe(KEY, notebook(gpu=True, ready=False, mirror=up), 10)  # patched, pending
    hours.observe(KEY, notebook(gpu=True, mirror=up), 14)     # GPU pod ready: held
    done = move("m1", "done", "gpu", "auto")
    hours.observe(KEY, notebook(gpu=True, mirror=done), 20)
    hours.observe(KEY, notebook(gpu=True, mirror=done), 30)   # the same end seen again
    idle = move("m2", "recreating", "cpu", "idle")
    hours.observe(KEY, notebook(mirror=idle), 114)            # the idle move's patch
    hours.observe(KEY, notebook(mirror=move("m2", "done", "cpu", "idle")), 120)
    assert hours.held_seconds(200) == {("team", "nb", "a100"): 100.0}
    assert hours.reclaimed_seconds(200) == {KEY: 86.0}
    assert hours.holding() == {}
    back = move("m3", "recreating", "gpu", "manual")
    hours.observe(KEY, notebook(gpu=True, pool="t4", mirror=back), 414)  # on the T4 now
    assert hours.reclaimed_seconds(1000) == {KEY: 300.0}       # ended when it held again
    assert hours.held_seconds(1000) == {("team", "nb", "a100"): 100.0,
                                        ("team", "nb", "t4"): 586.0}
    assert hours.holding() == {("team", "t4"): 1}
    assert hours.moves() == {("team", "gpu", "auto", "done"): 1,
                             ("team", "cpu", "idle", "done"): 1}


def test_a_manual_move_to_cpu_reclaims_nothing_and_stop_or_delete_end_everything():
    hours = account()
    hours.observe(KEY, notebook(gpu=True), 0)
    hours.observe(KEY, notebook(mirror=move("m", "recreating", "cpu", "manual")), 50)
    assert hours.reclaimed_seconds(100) == {} and hours.held_seconds(100) == {
        ("team", "nb", "a100"): 50.0}
    other = ("team", "other")
    hours.observe(other, notebook(name="other", gpu=True), 0)
    idle = move("i", "done", "cpu", "idle")
    hours.observe(other, notebook(name="other", mirror=idle), 10)
    hours.observe(other, notebook(name="other", mirror=idle, stopped=True), 40)  # Stop
    hours.observe(other, notebook(name="other", gpu=True, stopped=True), 50)  # not held
    assert hours.reclaimed_seconds(100)[other] == 30.0
    assert hours.held_seconds(100)[("team", "other", "a100")] == 10.0
    hours.observe(KEY, None, 200)  # deleted: its totals stay for the last scrapes...
    assert hours.held_seconds(300)[("team", "nb", "a100")] == 50.0
    hours.prune(700)
    assert ("team", "nb", "a100") in hours.held_seconds(700)
    hours.prune(801)  # ...then go
    assert ("team", "nb", "a100") not in hours.held_seconds(801)


def test_seconds_count_every_gpu_held_and_given_back():
    hours = GpuHours(DEFAULT_GPU_RESOURCES, [A100, A100_PAIR, T4])
    hours.observe(KEY, notebook(gpu=True, gpus=2), 0)          # two GPUs
    assert hours.held_seconds(10) == {("team", "nb", "a100x2"): 20.0}
    hours.observe(KEY, notebook(gpu=True), 10)                 # a move down to one
    idle = move("m", "done", "cpu", "idle")
    hours.observe(KEY, notebook(mirror=idle), 40)              # an idle move: gives one back
    assert hours.held_seconds(100) == {("team", "nb", "a100x2"): 20.0,
                                       ("team", "nb", "a100"): 30.0}
    assert hours.reclaimed_seconds(100) == {KEY: 60.0}
    # Moved off the GPU before this replica saw it hold one: at least one GPU given back.
    late = GpuHours(DEFAULT_GPU_RESOURCES, [A100])
    late.observe(KEY, notebook(mirror=idle), 0)
    assert late.reclaimed_seconds(5) == {KEY: 5.0}


def test_an_end_seen_at_first_sight_happened_before_and_is_not_counted():
    hours = account()
    hours.replace({KEY: notebook(mirror=move("old", "done", "gpu", "manual"))}, 0)
    assert hours.moves() == {}
    hours.observe(KEY, notebook(mirror=move("new", "rolled_back", "gpu", "auto")), 5)
    assert hours.moves() == {("team", "gpu", "auto", "rolled_back"): 1}
    hours.replace({}, 9)  # a fresh list without it: deleted
    assert hours.held_seconds(10) == {}


def test_what_a_notebook_says_about_its_gpu():
    state = notebook_gpu(notebook(gpu=True, pool="t4"), DEFAULT_GPU_RESOURCES, [A100, T4])
    assert (state.held, state.profile, state.migration) == (True, "t4", None)
    assert not notebook_gpu(notebook(gpu=True, ready=False), DEFAULT_GPU_RESOURCES, []).held
    broken = notebook()
    broken["metadata"]["annotations"]["gpushift.io/notebook-migration"] = "{not json"
    assert notebook_gpu(broken, DEFAULT_GPU_RESOURCES, []).migration is None


def test_the_store_tells_the_account_and_the_metrics_follow():
    hours = account()
    clock = [0.0]
    store = NotebookStore(observer=hours, clock=lambda: clock[0])
    store.replace([notebook(gpu=True)], "1")
    clock[0] = 30.0
    moved = notebook(mirror=move("m", "done", "cpu", "idle"))
    moved["metadata"]["resourceVersion"] = "2"
    store.apply({"type": "MODIFIED", "object": moved})
    clock[0] = 45.0
    registry = CollectorRegistry()
    registry.register(GpuHoursCollector(hours, clock=lambda: clock[0]))
    text = generate_latest(registry).decode()
    assert 'gpushift_gpu_held_seconds_total{namespace="team",notebook="nb",profile="a100"} ' \
           '30.0' in text
    assert 'gpushift_gpu_reclaimed_seconds_total{namespace="team",notebook="nb"} 15.0' in text
    assert 'gpushift_moves_total{namespace="team",outcome="done",target="cpu",' \
           'trigger="idle"} 1.0' in text
    assert "# TYPE gpushift_gpu_notebooks_holding gauge" in text
    store.apply({"type": "DELETED", "object": notebook()})
    assert hours.reclaimed_seconds(100) == {KEY: 15.0}


def test_the_guards_rewrite_of_the_annotation_keeps_the_trigger():
    nb = notebook(gpu=True, mirror=move("m", "recreating", "gpu", "idle"))
    read = read_migration(nb)
    assert read is not None
    pb = PatchBuilder(nb)
    written = set_mirror(pb, read, "rolled_back", dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
                         "no GPU node")
    assert (written["phase"], written["trigger"]) == ("rolled_back", "idle")
