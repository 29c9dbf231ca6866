"""The idle timer, on a fake timeline (every call says what time it is), and the GPU
utilisation samples that feed it."""

from __future__ import annotations

import pytest

from gpushift_core.admin_settings import IdleSettings
from gpushift_core.idle_timeout import (
    IDLE_TIMEOUT_ANNOTATION,
    PIN_ANNOTATION,
    parse_duration,
    resolve_timeout,
)
from gpushift_sidecar import gpu_utilization
from gpushift_sidecar.gpu_utilization import GpuUtilization
from gpushift_sidecar.idle import IdleState, IdleTimer

T0 = 1_700_000_000.0
SETTINGS = IdleSettings(timeout_seconds=180, min_seconds=60, max_seconds=3600,
                        warning_seconds=30, allow_pin=False, utilization_threshold_percent=5)


def timer(settings: IdleSettings = SETTINGS, on_gpu: bool = True,
          **annotations: str) -> IdleTimer:
    return IdleTimer(settings, on_gpu=on_gpu, now=T0, annotations=annotations)


def ticks(t: IdleTimer, start: float, end: float, step: float = 1.0) -> list[tuple[float, str]]:
    """Tick every `step` seconds in [start, end]; the transitions it handed out."""
    out = []
    now = start
    while now <= end:
        transition = t.tick(T0 + now)
        if transition is not None:
            out.append((now, transition.action))
        now += step
    return out


def test_warns_before_moving_and_moves_once_after_the_timeout() -> None:
    t = timer()
    assert ticks(t, 0, 400) == [(150, "warn"), (180, "move")]
    assert t.state(T0 + 400) is IdleState.MOVE


def test_warning_exposes_when_the_move_is_due() -> None:
    t = timer()
    t.tick(T0 + 149)
    snap = t.snapshot(T0 + 149)
    assert snap["state"] == "active" and snap["warning_until"] is None
    t.tick(T0 + 160)
    snap = t.snapshot(T0 + 160)
    assert snap["state"] == "idle-warning"
    assert snap["warning_until"] == T0 + 180
    assert snap["idle_for"] == 160
    assert snap["timeout"] == 180 and snap["pinned"] is False


def test_activity_resets_the_timer() -> None:
    t = timer()
    assert ticks(t, 0, 100) == []
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 100,
                      now=T0 + 100)
    assert ticks(t, 101, 400) == [(250, "warn"), (280, "move")]


def test_activity_during_the_warning_cancels_it() -> None:
    t = timer()
    assert ticks(t, 0, 160) == [(150, "warn")]
    t.report_activity("k1", gpu_cell_running=True, gpu_cell_finished_at=None, now=T0 + 161)
    assert t.snapshot(T0 + 161)["state"] == "active"
    assert t.snapshot(T0 + 161)["warning_until"] is None
    # a running GPU cell keeps it active however long it runs
    assert ticks(t, 162, 2000) == []
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 2000,
                      now=T0 + 2000)
    assert ticks(t, 2001, 2300) == [(2150, "warn"), (2180, "move")]


def test_an_old_report_does_not_rewind_the_timer() -> None:
    t = timer()
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 100,
                      now=T0 + 100)
    # the same (or an older) finish time again later changes nothing
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 50,
                      now=T0 + 200)
    assert ticks(t, 0, 400) == [(250, "warn"), (280, "move")]


def test_a_finish_time_in_the_future_counts_as_now() -> None:
    t = timer()
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 10_000,
                      now=T0 + 100)
    assert ticks(t, 100, 400) == [(250, "warn"), (280, "move")]


def test_stay_resets_the_timer_and_a_new_warning_follows() -> None:
    t = timer()
    assert ticks(t, 0, 170) == [(150, "warn")]
    t.stay(T0 + 170)
    snap = t.snapshot(T0 + 171)
    assert snap["state"] == "active" and "stay" in snap["reason"]
    assert ticks(t, 171, 400) == [(320, "warn"), (350, "move")]


def test_stay_after_the_move_decision_starts_over() -> None:
    t = timer()
    assert ticks(t, 0, 200) == [(150, "warn"), (180, "move")]
    # activity after the decision does not take it back...
    t.observe_utilization(90.0, T0 + 201)
    assert t.state(T0 + 201) is IdleState.MOVE
    # ...stay() does
    t.stay(T0 + 202)
    assert t.state(T0 + 202) is IdleState.ACTIVE
    assert ticks(t, 203, 400) == [(352, "warn"), (382, "move")]


@pytest.mark.parametrize(("percent", "busy"), [
    (4.9, False), (5.0, True), (80.0, True), (0.0, False), (None, False)])
def test_utilisation_at_or_over_the_threshold_counts_as_activity(
        percent: float | None, busy: bool) -> None:
    t = timer()
    t.observe_utilization(percent, T0 + 100)
    expected = [(250, "warn"), (280, "move")] if busy else [(150, "warn"), (180, "move")]
    assert ticks(t, 0, 400) == expected


def test_none_utilisation_is_ignored_even_during_a_warning() -> None:
    t = timer()
    assert ticks(t, 0, 155) == [(150, "warn")]
    for s in range(156, 180):
        t.observe_utilization(None, T0 + s)
    assert ticks(t, 156, 200) == [(180, "move")]


def test_a_timeout_raised_during_the_warning_warns_again_later() -> None:
    t = timer()
    assert ticks(t, 0, 155) == [(150, "warn")]
    t.configure({IDLE_TIMEOUT_ANNOTATION: "10m"})
    assert ticks(t, 156, 700) == [(570, "warn"), (600, "move")]


@pytest.mark.parametrize(("text", "seconds"), [
    ("300", 300), (" 300 ", 300), ("5m", 300), ("90s", 90), ("1h", 3600), ("1h30m", 5400),
    ("2m30s", 150), ("1H", 3600), ("0", 0)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-5", "5.5", "m", "1m1h", "1e3",
                                  "9" * 40, "5 m"])
def test_parse_duration_refuses(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(("annotation", "seconds", "clamped"), [
    ("600", 600, False), ("5m", 300, False), ("10s", 60, True), ("0", 60, True),
    ("2h", 3600, True), ("60", 60, False), ("1h", 3600, False)])
def test_override_is_clamped_into_the_admin_bounds(annotation: str, seconds: int,
                                                   clamped: bool) -> None:
    timeout = resolve_timeout(SETTINGS, annotation)
    assert timeout.seconds == seconds
    assert timeout.source == "annotation"
    assert (timeout.reason is not None) == clamped
    if clamped:
        assert "[60s, 3600s]" in timeout.reason


def test_an_invalid_override_falls_back_to_the_default_with_a_reason() -> None:
    t = timer(**{IDLE_TIMEOUT_ANNOTATION: "soon"})
    snap = t.snapshot(T0)
    assert snap["timeout"] == 180 and snap["timeout_source"] == "default"
    assert "'soon'" in snap["reason"]
    assert ticks(t, 0, 200) == [(150, "warn"), (180, "move")]


def test_override_drives_the_timeline() -> None:
    t = timer(**{IDLE_TIMEOUT_ANNOTATION: "90s"})
    assert ticks(t, 0, 200) == [(60, "warn"), (90, "move")]
    t = timer(**{IDLE_TIMEOUT_ANNOTATION: "1"})  # clamped to 60
    assert ticks(t, 0, 200) == [(30, "warn"), (60, "move")]


def test_pin_is_honoured_only_when_the_admin_allows_it() -> None:
    refused = timer(**{PIN_ANNOTATION: "true"})
    assert refused.pinned is False
    assert "does not allow" in refused.snapshot(T0)["reason"]
    assert ticks(refused, 0, 200) == [(150, "warn"), (180, "move")]

    allowing = IdleSettings(allow_pin=True)
    pinned = timer(allowing, **{PIN_ANNOTATION: "True"})
    assert pinned.pinned is True
    assert ticks(pinned, 0, 5000, step=10) == []
    snap = pinned.snapshot(T0 + 5000)
    assert snap["state"] == "pinned" and snap["pinned"] is True
    assert snap["warning_until"] is None

    not_pinned = timer(allowing, **{PIN_ANNOTATION: "yes-please"})
    assert not_pinned.pinned is False


def test_unpinning_at_runtime_starts_the_timer_again() -> None:
    t = timer(IdleSettings(allow_pin=True), **{PIN_ANNOTATION: "true"})
    assert ticks(t, 0, 1000, step=10) == []
    t.configure({})
    t.reset(T0 + 1000, "unpinned")
    assert ticks(t, 1000, 1200) == [(1150, "warn"), (1180, "move")]


def test_inert_on_a_cpu_pod() -> None:
    t = timer(on_gpu=False)
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0, now=T0 + 1)
    assert ticks(t, 0, 5000, step=10) == []
    snap = t.snapshot(T0 + 5000)
    assert snap["state"] == "inert" and snap["warning_until"] is None
    assert snap["idle_for"] == 0.0 and "not a GPU pod" in snap["reason"]
    assert t.next_deadline(T0 + 5000) is None


def test_a_kernel_that_goes_away_stops_counting_as_running() -> None:
    t = timer()
    t.report_activity("k1", gpu_cell_running=True, gpu_cell_finished_at=None, now=T0 + 10)
    t.report_activity("k2", gpu_cell_running=True, gpu_cell_finished_at=None, now=T0 + 10)
    t.report_activity("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 20,
                      now=T0 + 20)
    assert ticks(t, 0, 1000, step=5) == []  # k2 is still running
    t.forget_kernel("k2", T0 + 1000)
    assert ticks(t, 1000, 1200) == [(1150, "warn"), (1180, "move")]


def test_next_deadline_says_when_to_tick() -> None:
    t = timer()
    assert t.next_deadline(T0) == T0 + 150
    t.tick(T0 + 150)
    assert t.next_deadline(T0 + 150) == T0 + 180
    t.tick(T0 + 180)
    assert t.next_deadline(T0 + 180) is None


def test_snapshot_keys() -> None:
    snap = timer().snapshot(T0 + 5)
    assert {"state", "idle_for", "timeout", "warning_until", "pinned", "reason"} <= set(snap)
    assert snap["idle_for"] == 5


# -- the utilisation samples that feed it (gpu_utilization) --------------------------------


class FakeNvml:
    """pynvml's surface as gpu_utilization uses it."""

    class NVMLError(Exception):
        pass

    def __init__(self, percents: list[int | Exception], init_error: Exception | None = None):
        self.percents = percents
        self.init_error = init_error
        self.inits = 0

    def nvmlInit(self) -> None:  # pynvml's names
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.percents)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> object:
        value = self.percents[handle]
        if isinstance(value, Exception):
            raise value

        class Rates:
            gpu = value
            memory = 0

        return Rates()


def test_sample_is_the_busiest_visible_gpu() -> None:
    nvml = FakeNvml([3, 71, 12])
    sampler = GpuUtilization(loader=lambda: nvml)
    assert sampler.sample() == 71.0
    assert sampler.sample() == 71.0
    assert nvml.inits == 1  # initialised once, lazily
    assert sampler.unavailable_reason is None


def test_gpus_that_cannot_report_are_skipped() -> None:
    nvml = FakeNvml([FakeNvml.NVMLError("Not Supported"), 40])
    assert GpuUtilization(loader=lambda: nvml).sample() == 40.0
    none = GpuUtilization(loader=lambda: FakeNvml([FakeNvml.NVMLError("Not Supported")]))
    assert none.sample() is None
    assert "Not Supported" in (none.unavailable_reason or "")


def test_no_library_means_none_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> object:
        raise ImportError("No module named 'pynvml'")

    sampler = GpuUtilization(loader=missing, retry_seconds=0)
    assert [sampler.sample() for _ in range(5)] == [None] * 5
    assert "not installed" in (sampler.unavailable_reason or "")
    assert caplog.text.count("GPU utilisation unavailable") == 1


def test_no_driver_means_none_and_a_later_retry() -> None:
    clock = [0.0]
    nvml = FakeNvml([50], init_error=FakeNvml.NVMLError("NVML Shared Library Not Found"))
    sampler = GpuUtilization(loader=lambda: nvml, retry_seconds=300, clock=lambda: clock[0])
    assert sampler.sample() is None
    assert "Shared Library Not Found" in (sampler.unavailable_reason or "")
    clock[0] = 100
    assert sampler.sample() is None and nvml.inits == 1  # not retried yet
    nvml.init_error = None
    clock[0] = 301
    assert sampler.sample() == 50.0 and nvml.inits == 2


def test_a_failing_library_never_raises() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise OSError("segfault-ish")

    sampler = GpuUtilization(loader=lambda: Broken([1]))
    assert sampler.sample() is None
    assert "OSError" in (sampler.unavailable_reason or "")
    assert GpuUtilization(loader=lambda: FakeNvml([])).sample() is None  # no GPU


def test_module_sample_without_nvidia_driver_is_none_or_a_number() -> None:
    value = gpu_utilization.sample()
    assert value is None or 0.0 <= value <= 100.0


# -- idle means idle: busy kernels, expiring reports ----------------------------------


def observe(t: IdleTimer, at: float, busy: tuple[str, ...] = (),
            gpu: tuple[str, ...] = ()) -> None:
    t.observe_kernels(busy=frozenset(busy), gpu_cells_running=frozenset(gpu), now=T0 + at)


def test_no_idle_move_while_a_kernel_is_busy_then_a_full_timeout_after_it() -> None:
    """A long non-GPU cell (pandas) runs from 100 s to 500 s: no warning, no move while
    it runs, and the full timeout counts from when it ended."""
    t = IdleTimer(SETTINGS, on_gpu=True, now=T0, report_ttl=30)
    out = []
    for second in range(0, 800):
        if second % 5 == 0:
            observe(t, second, busy=("k1",) if 100 <= second < 500 else ())
        transition = t.tick(T0 + second)
        if transition is not None:
            out.append((second, transition.action))
    assert out == [(650, "warn"), (680, "move")]


def test_busy_shows_in_the_snapshot_with_the_reason() -> None:
    t = IdleTimer(SETTINGS, on_gpu=True, now=T0, report_ttl=30)
    observe(t, 200, busy=("k1", "k2"))
    snap = t.snapshot(T0 + 201)
    assert snap["state"] == "active" and snap["kernels_busy"] == 2
    assert snap["idle_for"] == 0.0 and snap["gpu_cells_running"] == 0
    assert snap["reason"].startswith("a cell is running in 2 kernel(s): no idle move")


def test_a_busy_view_no_report_confirms_expires_and_the_timer_runs_from_it() -> None:
    """The notebook side went silent while a kernel was busy (its server died with its
    kernels): 30 s after the last view, the timer runs, from that view."""
    t = IdleTimer(SETTINGS, on_gpu=True, now=T0, report_ttl=30)
    observe(t, 100, busy=("k1",))
    assert t.state(T0 + 129) is IdleState.ACTIVE
    assert t.next_deadline(T0 + 129) == T0 + 130
    assert ticks(t, 131, 400) == [(250, "warn"), (280, "move")]


def test_a_closed_tabs_gpu_cell_expires_without_the_servers_view() -> None:
    """A tab reported its GPU cell running and closed: no report ever ends the cell."""
    t = IdleTimer(SETTINGS, on_gpu=True, now=T0, report_ttl=30)
    t.report_activity("k1", gpu_cell_running=True, gpu_cell_finished_at=None, now=T0 + 10)
    assert t.snapshot(T0 + 39)["gpu_cells_running"] == 1
    assert t.snapshot(T0 + 41)["gpu_cells_running"] == 0
    assert ticks(t, 0, 400) == [(160, "warn"), (190, "move")]


def test_the_servers_view_confirms_a_long_gpu_cell_and_ends_it() -> None:
    t = IdleTimer(SETTINGS, on_gpu=True, now=T0, report_ttl=30)
    t.report_activity("k1", gpu_cell_running=True, gpu_cell_finished_at=None, now=T0 + 10)
    for second in range(15, 1000, 5):  # an hour-long GPU cell, confirmed every 5 s
        observe(t, second, busy=("k1",), gpu=("k1",))
    assert t.state(T0 + 1000) is IdleState.ACTIVE
    observe(t, 1000)  # the kernel went idle: the view ends the cell
    snap = t.snapshot(T0 + 1001)
    assert snap["gpu_cells_running"] == 0 and snap["kernels_busy"] == 0
    assert ticks(t, 1001, 1300) == [(1150, "warn"), (1180, "move")]


def test_busy_after_the_move_decision_does_not_take_it_back() -> None:
    """The move was decided while nothing ran; its checkpoint waits for a cell started
    since (the kernel runs them in order), so nothing is killed mid-cell."""
    t = IdleTimer(SETTINGS, on_gpu=True, now=T0, report_ttl=30)
    assert ticks(t, 0, 180) == [(150, "warn"), (180, "move")]
    observe(t, 181, busy=("k1",))
    assert t.state(T0 + 182) is IdleState.MOVE
