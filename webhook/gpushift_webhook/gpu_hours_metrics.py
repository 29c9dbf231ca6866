"""The GPU-hours (`gpu_hours.GpuHours`) as Prometheus metrics of the webhook.

A collector, not counters incremented as things happen: a notebook holding its GPU now
adds the seconds since it took it at every scrape, so the totals move smoothly between
watch events. Names in Prometheus' conventions (base units, `_total` on counters):

* `gpushift_gpu_held_seconds_total{namespace, notebook, profile}`
* `gpushift_gpu_busy_seconds_total{namespace, notebook, profile}` (GPU work reported)
* `gpushift_gpu_reclaimed_seconds_total{namespace, notebook}` (after idle moves)
* `gpushift_gpu_notebooks_holding{namespace, profile}` (a gauge: holding a GPU now)
* `gpushift_moves_total{namespace, target, trigger, outcome}` (each ended move once)
* `gpushift_move_phase_duration_seconds{target, phase}` (a histogram: each ended move's
  seconds in each phase, as its sidecar recorded them)

Every replica serves its own totals from its own start: aggregate with `max` across
replicas, never `sum` (see `gpu_hours`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gpushift_webhook.gpu_hours import DURATION_BUCKETS, Durations, GpuHours

__all__ = ["GpuHoursCollector"]


class GpuHoursCollector(Collector):
    def __init__(self, account: GpuHours,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.account = account
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        self.account.prune(now)
        held = CounterMetricFamily(
            "gpushift_gpu_held_seconds",
            "GPU-seconds held by notebooks (GPUs in the spec, not stopped, a ready pod; "
            "2 GPUs for a second are 2), by namespace, notebook and the profile their spec "
            "shows, since this replica started following the Notebooks.",
            labels=["namespace", "notebook", "profile"])
        for (namespace, notebook, profile), value in sorted(
                self.account.held_seconds(now).items()):
            held.add_metric([namespace, notebook, profile], value)
        yield held
        busy = CounterMetricFamily(
            "gpushift_gpu_busy_seconds",
            "GPU-seconds of GPU work (a GPU cell running, or utilisation at or above the "
            "admin's threshold) reported by the notebooks' GPU pods, by namespace, "
            "notebook and profile; held minus busy is the GPU time held idle.",
            labels=["namespace", "notebook", "profile"])
        for (namespace, notebook, profile), value in sorted(
                self.account.busy_seconds().items()):
            busy.add_metric([namespace, notebook, profile], value)
        yield busy
        reclaimed = CounterMetricFamily(
            "gpushift_gpu_reclaimed_seconds",
            "GPU-seconds given back by idle moves: the time notebooks spent off the GPU "
            "after an idle move to CPU (until they held one again or were stopped or "
            "deleted) times the GPUs they had held.",
            labels=["namespace", "notebook"])
        for (namespace, notebook), value in sorted(
                self.account.reclaimed_seconds(now).items()):
            reclaimed.add_metric([namespace, notebook], value)
        yield reclaimed
        holding = GaugeMetricFamily(
            "gpushift_gpu_notebooks_holding",
            "Notebooks holding a GPU now, by namespace and profile.",
            labels=["namespace", "profile"])
        for (namespace, profile), count in sorted(self.account.holding().items()):
            holding.add_metric([namespace, profile], count)
        yield holding
        moves = CounterMetricFamily(
            "gpushift_moves",
            "Moves seen ending, by namespace, target (gpu, cpu), trigger (auto, manual, "
            "idle) and outcome (done, failed, rolled_back, cancelled).",
            labels=["namespace", "target", "trigger", "outcome"])
        for key, count in sorted(self.account.moves().items()):
            moves.add_metric(list(key), count)
        yield moves
        phases = HistogramMetricFamily(
            "gpushift_move_phase_duration_seconds",
            "Seconds ended moves spent in each phase (requested, checkpointing, "
            "checkpointed, patching, recreating, restoring), by target.",
            labels=["target", "phase"])
        for (target, phase), durations in sorted(self.account.phase_durations().items()):
            phases.add_metric([target, phase], _cumulative(durations),
                              sum_value=durations.total)
        yield phases


def _cumulative(durations: Durations) -> list[tuple[str, float]]:
    out, seen = [], 0
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), durations.buckets,
                            strict=True):
        seen += count
        # "5.0", "+Inf": as prometheus_client writes its own histograms' bounds
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(seen)))
    return out
