"""`gpushift-report --prometheus` against a real Prometheus (built by
hack/build-controlplane.sh, like promtool) serving two hours of the webhook's counters
from two replicas, one of which restarts, backfilled with promtool. The report's numbers
are checked exactly against what the series say; the console script end to end, and
its one-line errors (an unreachable Prometheus, a bad --since, a bad query)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpushift_testing.prometheus import CounterSeries, backfilled_prometheus

from gpushift_webhook.report_cli import (
    PrometheusReportSettings,
    report_from_prometheus,
)
from gpushift_webhook.report_prometheus import PrometheusSettings

SCRAPE = 15
MIN = 60
SCRIPT = Path(sys.executable).with_name("gpushift-report")

# GPUs per second of each notebook and counter, as functions of the minute since the
# window's start (every change on a minute: the steps see it exactly).
Rate = Callable[[float], float]


def alice_held(m: float) -> float:  # 1 GPU; idle-moved at 50, back on a GPU at 80
    return 1.0 if m < 50 or m >= 80 else 0.0


def alice_busy(m: float) -> float:
    return 1.0 if m < 10 or 80 <= m < 100 else 0.0


def alice_reclaimed(m: float) -> float:
    return 1.0 if 50 <= m < 80 else 0.0


def bob_held(m: float) -> float:  # 2 GPUs all along, idle from 60 to 100
    return 2.0


def bob_busy(m: float) -> float:
    return 0.0 if 60 <= m < 100 else 2.0


def carol_held(m: float) -> float:  # an older sidecar: no busy series
    return 1.0 if 30 <= m < 90 else 0.0


def series(t0: float, rate: Rate, labels: dict[str, str], name: str, *,
           appears: float = -5, replica: str, base: float = 0.0) -> CounterSeries:
    """A counter of one replica sampled every SCRAPE s from minute `appears` to 120.
    Replica "webhook-b" is down from minute 70 to 72 and then counts from 0 again."""
    samples: list[tuple[float, float]] = []
    value = base
    m = appears
    while m <= 120:
        if replica == "webhook-b" and 70 <= m < 72:
            pass  # down: no scrape
        else:
            if replica == "webhook-b" and m == 72:
                value = 0.0  # restarted: its totals start over
            samples.append((t0 + m * MIN, value))
        value += rate(m) * SCRAPE
        m += SCRAPE / MIN
    return (name, {**labels, "pod": replica, "job": "gpushift-webhook"}, samples)


# (counter, rate, namespace, notebook, has a profile label, minute it first appears)
COUNTERS: list[tuple[str, Rate, str, str, bool, float]] = [
    ("gpushift_gpu_held_seconds_total", alice_held, "team-a", "alice", True, -5),
    ("gpushift_gpu_busy_seconds_total", alice_busy, "team-a", "alice", True, -5),
    ("gpushift_gpu_reclaimed_seconds_total", alice_reclaimed, "team-a", "alice", False, 50),
    ("gpushift_gpu_held_seconds_total", bob_held, "team-a", "bob", True, -5),
    ("gpushift_gpu_busy_seconds_total", bob_busy, "team-a", "bob", True, -5),
    ("gpushift_gpu_held_seconds_total", carol_held, "team-b", "carol", True, 30),
]


def all_series(t0: float) -> list[CounterSeries]:
    out: list[CounterSeries] = []
    # replica b started following earlier: its totals are higher (a sum would show it)
    for replica, base in (("webhook-a", 0.0), ("webhook-b", 7000.0)):
        for name, rate, ns, nb, profile, appears in COUNTERS:
            labels = {"namespace": ns, "notebook": nb}
            if profile:
                labels["profile"] = "nvidia-1"
            out.append(series(t0, rate, labels, name, appears=appears, replica=replica,
                              base=0.0 if appears >= 0 else base))
    return out


T0 = 1_790_000_000 - 1_790_000_000 % MIN  # the window's start: a fixed time, on a step


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with backfilled_prometheus(all_series(T0), tmp_path_factory.mktemp("prom")) as url:
        yield url


def fixed_report(url: str, *timeouts: int, points_per_query: int = 10_000) -> dict[str, Any]:
    prometheus = PrometheusSettings(url, points_per_query=points_per_query)
    settings = PrometheusReportSettings(prometheus, since_seconds=120 * MIN,
                                        step_seconds=MIN, idle_timeouts=list(timeouts),
                                        top=10)
    return dict(json.loads(report_from_prometheus(settings, as_json=True,
                                                  now=T0 + 120 * MIN + 30)))


def test_held_busy_idle_reclaimed_per_namespace(prometheus: str) -> None:
    data = fixed_report(prometheus)
    assert data["window"] == {"start": T0, "end": T0 + 7200, "stepSeconds": 60}
    by_ns = {n["namespace"]: n for n in data["namespaces"]}
    h = 3600
    # alice: 90 min held, 30 busy, 30 off after the idle move; bob: 2 GPUs x 120 min, 80
    # busy; replica b's restart changes nothing (max, not sum), carol has no busy data
    assert by_ns["team-a"] == {
        "namespace": "team-a", "heldGpuHours": round((5400 + 14400) / h, 4),
        "busyGpuHours": round((1800 + 9600) / h, 4), "idleGpuHours": round(8400 / h, 4),
        "reclaimedGpuHours": 0.5, "heldWithoutBusyDataGpuHours": 0.0}
    assert by_ns["team-b"] == {
        "namespace": "team-b", "heldGpuHours": 1.0, "busyGpuHours": None,
        "idleGpuHours": None, "reclaimedGpuHours": 0.0, "heldWithoutBusyDataGpuHours": 1.0}
    assert [(n["notebook"], n["idleGpuHours"]) for n in data["topIdle"]] == [
        ("bob", round(4800 / h, 4)), ("alice", 1.0)]
    assert data["recordedReclaimedGpuHours"] == 0.5
    assert any("1 notebook(s) holding 1.00 GPU-hours" in n for n in data["notes"])


def test_what_other_timeouts_would_have_given_back(prometheus: str) -> None:
    data = fixed_report(prometheus, 600, 1800, 3600)
    got = {w["idleTimeoutSeconds"]: w["givenBackGpuHours"] for w in data["whatIf"]}
    # alice's gaps: 10..80 (40 min idle on the GPU, then 30 off it) and 100..120; bob's:
    # 60..100 with 2 GPUs
    assert got == {600: round((3600 + 600 + 3600) / 3600, 4),
                   1800: round((2400 + 1200) / 3600, 4),
                   3600: round(600 / 3600, 4)}


def test_a_window_asked_for_in_chunks_gives_the_same_numbers(prometheus: str) -> None:
    # 121 samples per series in chunks of 7: chunk edges fall inside gaps and resets
    whole = fixed_report(prometheus, 600, 1800)
    assert fixed_report(prometheus, 600, 1800, points_per_query=7) == whole


def test_console_script_prints_the_table(prometheus: str, tmp_path: Path) -> None:
    # The same shape of data, two hours up to now, through the installed script.
    now = time.time()
    start = (now // MIN) * MIN - 120 * MIN
    with backfilled_prometheus(all_series(start), tmp_path) as url:
        proc = subprocess.run([str(SCRIPT), "--prometheus", url, "--since", "2h",
                               "--idle-timeout", "10m", "--idle-timeout", "30m"],
                              capture_output=True, text=True, timeout=120, check=False)
        as_json = subprocess.run([str(SCRIPT), "--prometheus", url, "--since", "2h",
                                  "--json"], capture_output=True, text=True, timeout=120,
                                 check=False)
    assert as_json.returncode == 0, as_json.stderr
    namespaces = {n["namespace"]: n for n in json.loads(as_json.stdout)["namespaces"]}
    assert namespaces["team-b"]["busyGpuHours"] is None
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    print(out)  # the README's example is this output
    lines = out.splitlines()
    assert lines[lines.index("") + 1].split() == [
        "NAMESPACE", "HELD", "BUSY", "IDLE", "RECLAIMED"]
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("team-")}
    # the window ends on the last whole minute; the data end on it or a minute before
    assert rows["team-b"] == ["1.00", "n/a", "n/a", "0.00"]
    assert rows["team-a"][0] in ("5.50", "5.45")
    assert "idle timeout 10m" in out and "idle timeout 30m" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "7x"], "--since '7x': not a duration"),
    (["--step", "0"], "--step '0': not a duration"),
    (["--since", "1000d", "--step", "1s"], "use a longer --step"),
    (["--idle-timeout", "soon"], "--idle-timeout 'soon'"),
    (["--selector", 'job=~"('], "refused the query: bad_data"),
])
def test_bad_input_is_one_line_and_exit_2(prometheus: str, args: list[str],
                                          message: str) -> None:
    proc = subprocess.run([str(SCRIPT), "--prometheus", prometheus, *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_unreachable_prometheus_is_one_line_and_exit_2() -> None:
    from gpushift_testing.common import free_port
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([str(SCRIPT), "--prometheus", url, "--since", "1h"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"gpushift-report: cannot reach Prometheus at {url}")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
