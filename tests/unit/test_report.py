"""`gpushift-report`'s computation (`gpushift_webhook.report`) and its text/JSON output,
on counter series built step by step: per-step increases, replicas combined with max,
idle gaps, what other timeouts would have given back, several GPUs, missing busy data."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gpushift_webhook.report import (
    IdleGap,
    Recorded,
    Series,
    Window,
    build_report,
    given_back,
    idle_gaps,
    parse_span,
    step_increases,
)
from gpushift_webhook.report_text import report_data, report_table

STEP = 60
START = 1_700_000_000 - 1_700_000_000 % STEP


def counter(per_step: Sequence[float], *, base: float = 0.0, first: int = 0,
            **labels: str) -> Series:
    """A counter series whose increase in step k is per_step[k - first] (samples from
    index `first`, the baseline `base`)."""
    samples = {first: base}
    value = base
    for k, inc in enumerate(per_step):
        value += inc
        samples[first + k + 1] = value
    return Series(labels, samples)


def nb(name: str = "nb", ns: str = "team-a", pod: str = "webhook-0",
       profile: str = "nvidia-1") -> dict[str, str]:
    return {"namespace": ns, "notebook": name, "profile": profile, "pod": pod}


# -- per-step increases ---------------------------------------------------------------------


def test_step_increases_count_from_the_baseline_and_through_resets() -> None:
    # index 0 is the baseline; a drop is a restart (its totals start at 0 again)
    assert step_increases({0: 100.0, 1: 160.0, 2: 220.0, 3: 30.0, 4: 90.0}) == {
        0: 60.0, 1: 60.0, 2: 30.0, 3: 60.0}


def test_a_series_appearing_in_the_window_counts_its_whole_value() -> None:
    # a replica that started following (or a notebook that took its first GPU) at step 2
    assert step_increases({3: 45.0, 4: 105.0}) == {2: 45.0, 3: 60.0}


def test_a_gap_in_the_samples_is_bridged_from_the_last_value() -> None:
    # scrapes missing for two steps: not a reset, the increase shows when it comes back
    assert step_increases({0: 0.0, 1: 60.0, 4: 240.0}) == {0: 60.0, 3: 180.0}


# -- replicas -------------------------------------------------------------------------------


def test_replicas_are_combined_with_max_not_summed() -> None:
    busy = [0.0] * 10
    a = counter([60.0] * 10, base=5000.0, **nb(pod="webhook-a"))
    # the other replica restarted at step 4: it counts from 0 again, and step 4 shows
    # only the 20 s since its start
    b_values = {0: 3000.0, 1: 3060.0, 2: 3120.0, 3: 3180.0, 4: 3240.0, 5: 20.0}
    for k in range(6, 11):
        b_values[k] = b_values[k - 1] + 60.0
    b = Series(nb(pod="webhook-b"), b_values)
    report = build_report(Recorded(Window(START, STEP, 10), [a, b],
                                   [counter(busy, **nb(pod="webhook-a"))], []), [])
    assert report.namespaces[0].held == 600.0  # 10 steps of one GPU, not 1200 or 1180


def test_profiles_of_one_notebook_add_up() -> None:
    held = [counter([60.0] * 3 + [0.0] * 3, **nb(profile="nvidia-1")),
            counter([0.0] * 3 + [120.0] * 3, **nb(profile="nvidia-2"))]
    report = build_report(Recorded(Window(START, STEP, 6), held, [], []), [])
    assert report.namespaces[0].held == 3 * 60 + 3 * 120


# -- idle gaps and timeouts -----------------------------------------------------------------


def test_idle_gap_and_what_timeouts_would_have_given_back() -> None:
    # busy 5 steps, idle 20 (1200 s), busy 3
    held = [60.0] * 28
    busy = [60.0] * 5 + [0.0] * 20 + [30.0] * 3
    report = build_report(Recorded(Window(START, STEP, 28), [counter(held, **nb())],
                                   [counter(busy, **nb())], []),
                          [600, 1800, 90], top=5)
    ns = report.namespaces[0]
    assert (ns.held, ns.busy, ns.idle) == (1680.0, 390.0, 1290.0)
    got = {o.timeout: o.given_back for o in report.what_if}
    # 10 min: 1200 - 600; 30 min: longer than the gap; 90 s: 1.5 steps into the gap
    assert got == {90: 1110.0, 600: 600.0, 1800: 0.0}
    assert [n.notebook for n in report.top_idle] == ["nb"]


def test_busy_steps_split_gaps_and_each_gap_waits_for_the_timeout() -> None:
    held = {i: 60.0 for i in range(12)}
    busy = {0: 60.0, 5: 1.0, 11: 60.0}
    gaps = idle_gaps(held, busy, {}, 12)
    assert [(g.first_step, len(g.gpu_seconds)) for g in gaps] == [(1, 4), (6, 5)]
    assert sum(given_back(g, STEP, 180) for g in gaps) == 60.0 + 120.0


def test_several_gpus_give_back_that_many_gpu_seconds() -> None:
    held = [120.0] * 10  # 2 GPUs
    busy = [0.0] * 10
    report = build_report(Recorded(Window(START, STEP, 10), [counter(held, **nb())],
                                   [counter(busy, **nb())], []), [300])
    assert report.what_if[0].given_back == 2 * (600 - 300)


def test_gpus_changing_within_a_gap_count_per_step() -> None:
    gap = IdleGap(0, (60.0, 60.0, 240.0, 240.0))  # 1 GPU, then 4
    assert given_back(gap, STEP, 90) == 30.0 + 240.0 + 240.0


def test_time_off_the_gpu_after_an_idle_move_continues_the_gap() -> None:
    # idle 3 steps on the GPU, moved (half a step), then 10 steps given back
    held = [60.0] * 2 + [60.0, 30.0] + [0.0] * 10
    busy = [60.0] * 2 + [0.0] * 12
    reclaimed = [0.0] * 3 + [30.0] + [60.0] * 10
    report = build_report(Recorded(Window(START, STEP, 14), [counter(held, **nb())],
                                   [counter(busy, **nb())],
                                   [counter(reclaimed, **nb())]), [180, 1200])
    got = {o.timeout: o.given_back for o in report.what_if}
    # the gap: 12 steps of one GPU (720 s); 3 min gives back 540, 20 min nothing
    assert got == {180: 540.0, 1200: 0.0}
    assert report.recorded_reclaimed == 630.0


# -- missing busy data -----------------------------------------------------------------------


def test_without_any_busy_series_busy_and_what_if_are_na() -> None:
    report = build_report(Recorded(Window(START, STEP, 5), [counter([60.0] * 5, **nb())],
                                   [], []), [600])
    ns = report.namespaces[0]
    assert (ns.held, ns.busy, ns.idle, ns.held_without_busy) == (300.0, None, None, 300.0)
    assert not report.busy_available and report.top_idle == []
    text = report_table(report)
    assert "n/a" in text and "gpushift_gpu_busy_seconds_total" in text
    data = report_data(report)
    assert data["namespaces"][0]["busyGpuHours"] is None
    assert data["whatIf"][0]["givenBackGpuHours"] is None


def test_a_notebook_without_busy_series_is_left_out_and_said() -> None:
    held = [counter([60.0] * 10, **nb("old")), counter([60.0] * 10, **nb("new"))]
    busy = [counter([0.0] * 10, **nb("new"))]
    report = build_report(Recorded(Window(START, STEP, 10), held, busy, []), [300])
    ns = report.namespaces[0]
    assert (ns.held, ns.busy, ns.idle, ns.held_without_busy) == (1200.0, 0.0, 600.0, 600.0)
    assert report.what_if[0].given_back == 300.0  # "new" only
    assert any("1 notebook(s)" in n for n in report.notes)


# -- input and output ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 604800), ("24h", 86400), ("30m", 1800), ("90s", 90), ("3600", 3600),
    ("1d12h", 129600), ("0", None), ("7x", None), ("", None), ("-5m", None), ("m", None),
])
def test_parse_span(text: str, seconds: int | None) -> None:
    assert parse_span(text) == seconds


def test_the_window_ends_on_a_step_and_covers_whole_steps() -> None:
    w = Window.ending(START + 125.0, 601, STEP)
    assert (w.end, w.steps, w.end - w.start) == (START + 120, 11, 660)


def test_table_is_aligned() -> None:
    held = [counter([3600.0] * 4, **nb("a", "ns-1")), counter([60.0] * 4, **nb("b", "ns-22"))]
    busy = [counter([3600.0, 0, 0, 0], **nb("a", "ns-1")), counter([0.0] * 4, **nb("b", "ns-22"))]
    text = report_table(build_report(Recorded(Window(START, STEP, 4), held, busy, []), [60]))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAMESPACE"))
    assert lines[header].split() == ["NAMESPACE", "HELD", "BUSY", "IDLE", "RECLAIMED"]
    assert lines[header + 1].split() == ["ns-1", "4.00", "1.00", "3.00", "0.00"]
    assert len({len(x) for x in lines[header:header + 4]}) == 1  # columns line up
