"""Busy GPU-seconds and the moves' phase times (pure): the sidecar's meter of GPU work
(gpushift_sidecar.gpu_busy), its Notebook annotation (gpushift_core.gpu_activity), the
webhook's account of it (gpushift_webhook.gpu_hours) and the metrics served from it;
the migration mirror's `phases` (gpushift_sidecar.state)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from test_gpu_hours import A100, A100_PAIR, KEY, T4, move, notebook

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES
from gpushift_core.gpu_activity import GpuActivity, read_gpu_activity
from gpushift_core.labels import GPU_ACTIVITY_ANNOTATION
from gpushift_core.patches import apply
from gpushift_sidecar.gpu_busy import GpuBusyMeter, activity_ops, gpu_work_now
from gpushift_sidecar.state import ENDED, Phase, PhaseChange, phase_seconds
from gpushift_webhook.gpu_hours import GpuHours
from gpushift_webhook.gpu_hours_metrics import GpuHoursCollector


def account() -> GpuHours:
    return GpuHours(DEFAULT_GPU_RESOURCES, [A100, A100_PAIR, T4], retain_deleted_seconds=600)


def reported(nb: dict[str, Any], pod: str, busy: float, at: float = 0.0) -> dict[str, Any]:
    nb["metadata"]["annotations"][GPU_ACTIVITY_ANNOTATION] = GpuActivity(
        pod, busy, at if busy else None, at).to_annotation()
    return nb


def test_the_meter_counts_only_the_time_gpu_work_was_seen():
    meter = GpuBusyMeter()
    meter.observe(False, 0)
    meter.observe(True, 10)          # a GPU cell starts
    assert meter.busy(12.5) == 2.5 and meter.last_work(12.5) == 12.5
    meter.observe(True, 13)
    meter.observe(False, 15)         # it ended: 10..15
    meter.observe(False, 100)
    assert meter.busy(100) == 5 and meter.last_work(100) == 15
    meter.observe(True, 200)
    meter.observe(False, 201)
    assert meter.busy(500) == 6 and meter.last_work(500) == 201


@pytest.mark.parametrize(("cells", "utilization", "now", "works"), [
    (1, None, 0, True),                                  # a GPU cell runs
    (0, None, 0, False),
    (0, {"percent": 40.0, "at": 0.0}, 10, True),         # busy GPU, fresh sample
    (0, {"percent": 40.0, "at": 0.0}, 31, False),        # a stale sample says nothing
    (0, {"percent": 4.0, "at": 0.0}, 1, False),          # under the 5 % threshold
    (0, {"percent": 0.0, "at": 0.0}, 1, False),
])
def test_gpu_work_is_a_gpu_cell_or_a_fresh_sample_over_the_threshold(
        cells: int, utilization: dict[str, float] | None, now: float, works: bool):
    assert gpu_work_now(cells, utilization, 5, 30, now) is works
    assert gpu_work_now(cells, utilization, 0, 30, now) is (works or (
        utilization is not None and utilization["percent"] > 0 and now <= 30))


def test_the_annotation_round_trips_and_a_late_write_never_goes_back():
    activity = GpuActivity("uid-1", 12.3456, 99.5, 100.0)
    assert GpuActivity.parse(activity.to_annotation()) == dataclasses.replace(
        activity, busy=12.346)
    for damaged in ("", "[]", '{"pod": 1, "busy": 1, "at": 1}', '{"pod": "p", "at": 1}',
                    '{"pod": "p", "busy": -1, "at": 1}', '{"pod": "p", "busy": true, "at": 1}',
                    '{"pod": "p", "busy": NaN, "at": 1}', None, 7):
        assert GpuActivity.parse(damaged) is None, damaged
    nb = notebook(gpu=True)
    ops = activity_ops(nb, activity)
    nb = apply(nb, ops)
    assert read_gpu_activity(nb) == GpuActivity.parse(activity.to_annotation())
    assert activity_ops(nb, activity) == []                               # shows it already
    older = GpuActivity("uid-1", 10.0, 90.0, 95.0)
    assert activity_ops(nb, older) == []                                  # a late write
    newer_pod = GpuActivity("uid-2", 1.0, 150.0, 50.0)                     # a new pod: its own
    assert read_gpu_activity(apply(nb, activity_ops(nb, newer_pod))) == newer_pod


def test_busy_counts_each_increase_of_a_pod_and_a_new_pods_whole_count_times_its_gpus():
    hours = account()
    hours.observe(KEY, notebook(), 0)                                    # seen on CPU first
    hours.observe(KEY, reported(notebook(gpu=True, gpus=2), "p1", 0.0), 10)
    hours.observe(KEY, reported(notebook(gpu=True, gpus=2), "p1", 4.0), 20)
    hours.observe(KEY, reported(notebook(gpu=True, gpus=2), "p1", 4.0), 25)  # unchanged
    hours.observe(KEY, reported(notebook(gpu=True, gpus=2), "p1", 3.0), 26)  # out of order
    hours.observe(KEY, reported(notebook(gpu=True, gpus=2), "p1", 6.5), 30)
    assert hours.busy_seconds() == {("team", "nb", "a100x2"): 13.0}      # 6.5 s x 2 GPUs
    # The move to CPU: the GPU pod's last report comes after the spec lost its GPU; it
    # counts for the GPUs the notebook last held.
    hours.observe(KEY, reported(notebook(), "p1", 7.0), 40)
    # A new GPU pod counts from 0, all of it.
    hours.observe(KEY, reported(notebook(gpu=True, pool="t4"), "p2", 2.0), 60)
    assert hours.busy_seconds() == {("team", "nb", "a100x2"): 14.0, ("team", "nb", "t4"): 2.0}
    held = hours.held_seconds(60)
    assert held[("team", "nb", "a100x2")] == 60.0                        # 30 s x 2 GPUs
    registry = CollectorRegistry()
    registry.register(GpuHoursCollector(hours, clock=lambda: 60))
    text = generate_latest(registry).decode()
    assert ('gpushift_gpu_busy_seconds_total{namespace="team",notebook="nb",profile="t4"} '
            '2.0') in text


def test_what_a_pod_reported_before_the_replica_looked_is_not_counted():
    hours = account()
    hours.observe(KEY, reported(notebook(gpu=True), "p1", 500.0), 0)   # first sight
    hours.observe(KEY, reported(notebook(gpu=True), "p1", 503.0), 10)
    assert hours.busy_seconds() == {("team", "nb", "a100"): 3.0}
    hours.observe(KEY, None, 20)
    hours.prune(20 + 601)
    assert hours.busy_seconds() == {}


def at(second: float) -> str:
    return (dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=second)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def test_an_ended_moves_mirror_carries_its_phase_times_and_the_histogram_counts_them():
    history = tuple(PhaseChange(p, at(t)) for p, t in [
        (Phase.REQUESTED, 0), (Phase.CHECKPOINTING, 0.1), (Phase.CHECKPOINTED, 1.6),
        (Phase.PATCHING, 1.7), (Phase.RECREATING, 2.0), (Phase.RESTORING, 9.5),
        (Phase.DONE, 12.0)])
    phases = phase_seconds(history)
    assert phases == {"requested": 0.1, "checkpointing": 1.5, "checkpointed": 0.1,
                      "patching": 0.3, "recreating": 7.5, "restoring": 2.5}
    assert phase_seconds((*history[:2], PhaseChange(Phase.FAILED, "garbage", "x"))) == {
        "requested": 0.1}
    assert Phase.DONE in ENDED

    hours = account()
    hours.observe(KEY, notebook(), 0)
    hours.observe(KEY, notebook(mirror={**move("m1", "restoring", "cpu", "idle"),
                                        "phases": {"requested": 1}}), 1)  # not ended yet
    ended = {**move("m1", "done", "cpu", "idle"), "phases": phases}
    hours.observe(KEY, notebook(mirror=ended), 2)
    hours.observe(KEY, notebook(mirror=ended), 3)                         # counted once
    hours.observe(KEY, notebook(mirror={**move("m2", "failed", "cpu", "idle"),
                                        "phases": {"checkpointing": 700, "bad": "x"}}), 4)
    durations = hours.phase_durations()
    assert durations[("cpu", "recreating")].count == 1
    assert durations[("cpu", "checkpointing")].count == 2
    assert ("cpu", "bad") not in durations
    registry = CollectorRegistry()
    registry.register(GpuHoursCollector(hours, clock=lambda: 5))
    text = generate_latest(registry).decode()
    bucket = 'gpushift_move_phase_duration_seconds_bucket{le="%s",phase="recreating",target="cpu"}'
    assert f"{bucket % '5.0'} 0.0" in text and f"{bucket % '10.0'} 1.0" in text
    assert ('gpushift_move_phase_duration_seconds_bucket{le="+Inf",phase="checkpointing",'
            'target="cpu"} 2.0') in text
    assert ('gpushift_move_phase_duration_seconds_sum{phase="checkpointing",target="cpu"} '
            '701.5') in text
    assert json.loads(notebook(mirror=ended)["metadata"]["annotations"][
        "gpushift.io/notebook-migration"])["phases"] == phases
