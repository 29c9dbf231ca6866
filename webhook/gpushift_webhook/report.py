"""`gpushift-report` from Prometheus: GPU-hours held, busy and given back per namespace,
the top idle holders, and what other idle timeouts would have given back (pure: the
series in, the report out; `report_prometheus` fetches them).

The input is the webhook's counters sampled at every step of a range query (the last
sample at or before each step's time, Prometheus' lookback), every replica's series on
its own:

* `gpushift_gpu_held_seconds_total{namespace, notebook, profile}`
* `gpushift_gpu_busy_seconds_total{namespace, notebook, profile}` (GPU-seconds with GPU
  work; absent from webhooks older than it)
* `gpushift_gpu_reclaimed_seconds_total{namespace, notebook}` (after idle moves)

Each series becomes its increase per step (`step_increases`): the difference to its
previous sample, its whole value after a reset (a replica restarted, its totals start
at 0) or where it first appears within the window (a replica started following, or a
notebook took its first GPU). Differences of samples, not Prometheus' `increase()`: its
extrapolation to the window's edges would make the steps' sum differ from the counters.
Every replica counts the same notebooks from its own start, so the replicas' increases
are combined with `max`, never summed; then the profiles of one notebook are added
(a move between GPU profiles changes the label).

Idle gaps (`idle_gaps`): runs of consecutive steps in which a notebook held a GPU and
did no GPU work, continued by the steps after an idle move in which it was off its GPU
(the reclaimed counter grows: without that move it would still hold its GPU). A timeout
T would have given back, of each gap, everything after its first T seconds:
max(0, gap - T) x GPUs, per step when the GPUs change within the gap (`given_back`).

Approximation: everything is at step resolution. A step with any GPU work is busy, so a
gap starts and ends at step boundaries: a gap is known to within one step at each end,
and work shorter than a step inside a long idle run splits it. Samples are as fresh as
Prometheus' scrapes (a step's value is the last scrape before its end). A timeout longer
than the one in force is judged on gaps the idle move cut short, continued by the time
off the GPU until the notebook took a GPU again or was stopped: the user may have come
back sooner on a GPU pod, so it is an upper bound of what that timeout gives back.

Busy data: a notebook with no busy series in the whole window (a webhook older than the
busy metric, a sidecar that does not report GPU work) has busy, idle and the what-if
"n/a", and the report says how many GPU-seconds that leaves out. Within a notebook that
has one, a step without a busy sample counts as no GPU work (the series may only start
with the first GPU work).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BUSY_METRIC", "HELD_METRIC", "MAX_STEPS", "RECLAIMED_METRIC", "IdleGap", "NamespaceTotals",
    "NotebookTotals", "Recorded", "Report", "Series", "TimeoutOutcome", "Window",
    "build_report", "duration_text", "given_back", "hours", "idle_gaps", "parse_span",
    "step_increases",
]

HELD_METRIC = "gpushift_gpu_held_seconds_total"
BUSY_METRIC = "gpushift_gpu_busy_seconds_total"
RECLAIMED_METRIC = "gpushift_gpu_reclaimed_seconds_total"

# Below this many GPU-seconds in a step, a step is taken as holding nothing / doing no
# GPU work: the counters are floats computed from clocks, so "nothing" can be 1e-9.
EPSILON = 1e-6

_SPAN = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_MAX_DIGITS = 9
MAX_STEPS = 100_000
"""Most steps one report covers (about 70 days at 60 s): every step of every series is
held in memory."""

Key = tuple[str, str]
"""(namespace, notebook)."""


def parse_span(text: str) -> int | None:
    """Seconds of "3600", "90s", "30m", "24h", "7d" or "1d12h"; None for anything else,
    zero included (no window, step or timeout is zero seconds long)."""
    value = text.strip().lower()
    if not value:
        return None
    if value.isdigit():
        return int(value) if len(value) <= _MAX_DIGITS and int(value) > 0 else None
    match = _SPAN.match(value)
    if match is None:
        return None
    parts = {k: v for k, v in match.groupdict().items() if v is not None}
    if not parts or any(len(v) > _MAX_DIGITS for v in parts.values()):
        return None
    seconds = sum(int(v) * _UNIT[k] for k, v in parts.items())
    return seconds or None


@dataclass(frozen=True)
class Window:
    """The steps of the report: step k (0-based) covers (start + k*step, start + (k+1)*step]."""

    start: float
    """Epoch seconds where the window begins (a multiple of `step`: runs agree)."""
    step: int
    """Seconds per step: the resolution of idle gaps."""
    steps: int
    """How many steps; the window ends at start + steps*step."""

    @property
    def end(self) -> float:
        return self.start + self.steps * self.step

    @classmethod
    def ending(cls, now: float, length: int, step: int) -> Window:
        """The window of `length` seconds (rounded up to whole steps) ending at the
        last multiple of `step` at or before `now`."""
        end = math.floor(now / step) * step
        steps = max(1, math.ceil(length / step))
        return cls(float(end - steps * step), step, steps)


@dataclass(frozen=True)
class Series:
    """One series of one counter as sampled by the range query."""

    labels: Mapping[str, str]
    """All its labels (namespace, notebook, profile and the replica's: pod, instance...)."""
    samples: Mapping[int, float]
    """Value at each sample index (0 = the window's start, k = the end of step k-1);
    indexes without a sample are missing."""


@dataclass(frozen=True)
class Recorded:
    """What Prometheus holds for the window."""

    window: Window
    held: Sequence[Series]
    busy: Sequence[Series]
    """Empty when the webhooks serve no busy metric."""
    reclaimed: Sequence[Series]


def step_increases(samples: Mapping[int, float]) -> dict[int, float]:
    """Increase of one counter series in each step (keyed by step index) where it has a
    sample at the step's end: the difference to its last earlier sample, or its whole
    value after a reset or where it first appears after the window's start (a sample at
    index 0 is only the baseline)."""
    out: dict[int, float] = {}
    last: float | None = None
    for index in sorted(samples):
        value = samples[index]
        if index > 0:
            out[index - 1] = value if last is None or value < last else value - last
        last = value
    return out


def _per_notebook(series: Iterable[Series]) -> dict[Key, dict[int, float]]:
    """The GPU-seconds of each notebook in each step: the replicas' max per profile, the
    profiles added."""
    by_profile: dict[tuple[str, str, str], dict[int, float]] = {}
    for s in series:
        key = (s.labels.get("namespace", ""), s.labels.get("notebook", ""),
               s.labels.get("profile", ""))
        steps = by_profile.setdefault(key, {})
        for index, inc in step_increases(s.samples).items():
            steps[index] = max(steps.get(index, 0.0), inc)
    out: dict[Key, dict[int, float]] = {}
    for (namespace, notebook, _), steps in by_profile.items():
        total = out.setdefault((namespace, notebook), {})
        for index, inc in steps.items():
            total[index] = total.get(index, 0.0) + inc
    return out


@dataclass(frozen=True)
class IdleGap:
    """A run of steps with a GPU held (or given back by an idle move) and no GPU work."""

    first_step: int
    gpu_seconds: Sequence[float]
    """GPU-seconds of each step of the run (held or reclaimed)."""


def idle_gaps(held: Mapping[int, float], busy: Mapping[int, float],
              reclaimed: Mapping[int, float], steps: int) -> list[IdleGap]:
    """The idle gaps of one notebook (see the module's doc), from its per-step
    GPU-seconds held, busy and reclaimed."""
    gaps: list[IdleGap] = []
    run: list[float] = []
    for index in range(steps + 1):
        h, r = held.get(index, 0.0), reclaimed.get(index, 0.0)
        idle = index < steps and busy.get(index, 0.0) <= EPSILON and h + r > EPSILON
        if idle:
            run.append(h + r)
        elif run:
            gaps.append(IdleGap(index - len(run), tuple(run)))
            run = []
    return gaps


def given_back(gap: IdleGap, step: int, timeout: int) -> float:
    """GPU-seconds a timeout of `timeout` seconds would have given back of `gap`: the
    part of each step after the gap's first `timeout` seconds."""
    total = 0.0
    for k, gpu_seconds in enumerate(gap.gpu_seconds):
        after = min(1.0, max(0.0, ((k + 1) * step - timeout) / step))
        total += gpu_seconds * after
    return total


@dataclass(frozen=True)
class NotebookTotals:
    namespace: str
    notebook: str
    held: float
    """GPU-seconds held in the window."""
    busy: float | None
    """GPU-seconds with GPU work; None: no busy series for this notebook."""
    idle: float | None
    """GPU-seconds held without GPU work (held - busy per step); None like `busy`."""
    reclaimed: float
    """GPU-seconds given back by idle moves (the timeout in force)."""
    gaps: Sequence[IdleGap] = ()


@dataclass(frozen=True)
class NamespaceTotals:
    namespace: str
    held: float
    busy: float | None
    """Of the notebooks with busy data (None: none has any)."""
    idle: float | None
    reclaimed: float
    held_without_busy: float
    """GPU-seconds held by notebooks without busy data (left out of busy and idle)."""


@dataclass(frozen=True)
class TimeoutOutcome:
    timeout: int
    """Seconds."""
    given_back: float
    """GPU-seconds, all namespaces (notebooks with busy data only)."""
    by_namespace: Mapping[str, float]


@dataclass(frozen=True)
class Report:
    window: Window
    namespaces: Sequence[NamespaceTotals]
    top_idle: Sequence[NotebookTotals]
    """Notebooks with the most idle GPU-seconds, most first (busy data only)."""
    what_if: Sequence[TimeoutOutcome]
    recorded_reclaimed: float
    """GPU-seconds the timeouts in force gave back (the reclaimed counter)."""
    busy_available: bool
    """Whether any notebook has busy data."""
    notes: Sequence[str] = field(default_factory=tuple)
    """What the numbers cannot say, in words for the reader."""


def build_report(recorded: Recorded, timeouts: Sequence[int], top: int = 10) -> Report:
    window = recorded.window
    held = _per_notebook(recorded.held)
    busy = _per_notebook(recorded.busy)
    reclaimed = _per_notebook(recorded.reclaimed)
    notebooks: list[NotebookTotals] = []
    for key in sorted(set(held) | set(reclaimed)):
        h, r = held.get(key, {}), reclaimed.get(key, {})
        b = busy.get(key)
        in_window = [i for i in h if i < window.steps]
        held_total = sum(h[i] for i in in_window)
        if b is None:
            busy_total = idle_total = None
            gaps: list[IdleGap] = []
        else:
            busy_total = sum(min(b.get(i, 0.0), h[i]) for i in in_window)
            idle_total = sum(max(0.0, h[i] - b.get(i, 0.0)) for i in in_window)
            gaps = idle_gaps(h, b, r, window.steps)
        notebooks.append(NotebookTotals(
            key[0], key[1], held_total, busy_total, idle_total,
            sum(v for i, v in r.items() if i < window.steps), tuple(gaps)))
    namespaces = [_namespace_totals(ns, [n for n in notebooks if n.namespace == ns])
                  for ns in sorted({n.namespace for n in notebooks})]
    with_busy = [n for n in notebooks if n.idle is not None]
    top_idle = sorted((n for n in with_busy if (n.idle or 0.0) > EPSILON),
                      key=lambda n: (-(n.idle or 0.0), n.namespace, n.notebook))[:top]
    what_if = [_outcome(t, with_busy, window.step) for t in sorted(set(timeouts))]
    return Report(window, namespaces, top_idle, what_if,
                  sum(n.reclaimed for n in notebooks), bool(busy),
                  tuple(_notes(window, notebooks, busy_available=bool(busy))))


def _namespace_totals(namespace: str, notebooks: Sequence[NotebookTotals]) -> NamespaceTotals:
    known = [n for n in notebooks if n.busy is not None]
    return NamespaceTotals(
        namespace, sum(n.held for n in notebooks),
        sum(n.busy or 0.0 for n in known) if known else None,
        sum(n.idle or 0.0 for n in known) if known else None,
        sum(n.reclaimed for n in notebooks),
        sum(n.held for n in notebooks if n.busy is None))


def _outcome(timeout: int, notebooks: Sequence[NotebookTotals], step: int) -> TimeoutOutcome:
    by_namespace: dict[str, float] = {}
    for n in notebooks:
        back = sum(given_back(g, step, timeout) for g in n.gaps)
        by_namespace[n.namespace] = by_namespace.get(n.namespace, 0.0) + back
    return TimeoutOutcome(timeout, sum(by_namespace.values()), by_namespace)


def _notes(window: Window, notebooks: Sequence[NotebookTotals], *,
           busy_available: bool) -> list[str]:
    notes = [f"Idle gaps are measured in steps of {window.step}s: each end of a gap is "
             f"known to within {window.step}s, and a step with any GPU work is busy."]
    if not busy_available:
        notes.append(f"No {BUSY_METRIC} in the window (webhooks older than the busy "
                     "metric): busy, idle holders and the what-if are n/a.")
        return notes
    missing = [n for n in notebooks if n.busy is None and n.held > EPSILON]
    if missing:
        hours = sum(n.held for n in missing) / 3600
        notes.append(f"{len(missing)} notebook(s) holding {hours:.2f} GPU-hours have no "
                     f"{BUSY_METRIC} (their sidecar does not report GPU work): left out "
                     "of busy, idle and the what-if.")
    return notes


def hours(seconds: float | None) -> float | None:
    """GPU-hours, rounded for display and JSON (None stays None)."""
    return None if seconds is None else round(seconds / 3600, 4)


def duration_text(seconds: float) -> str:
    """"1h30m", "45s", "7d": the shortest exact form, for timeouts and windows."""
    if seconds <= 0 or not math.isfinite(seconds):
        return "0s"
    left, parts = int(seconds), []
    for unit, size in _UNIT.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)
